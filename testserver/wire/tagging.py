"""Add a subunit tag to an encoded packet without decoding it: the ``worker-K`` tag.

With ``--jobs N`` every packet of a test carries the tag of the worker that ran it, as in
testr's own parallel runs, so testr, stestr and ``subunit2*`` can say who ran what. The
pool tags the packets its workers write, on their way to the client: :func:`add_tag`
copies the fields, inserts the tag (first, before the packet's own tags) and writes the
length and CRC32 again. Pure: no I/O.
"""

from __future__ import annotations

import zlib

from testserver.wire.packetformat import (
    FLAG_TAGS,
    FLAG_TEST_ID,
    FLAG_TIMESTAMP,
    LENGTH_OFFSET,
    MAX_PACKET_SIZE,
    TIMESTAMP_SECONDS_SIZE,
    varint,
)
from testserver.wire.packets import _header, _utf8_field, _varint

CRC_SIZE = 4
"""Bytes of the CRC32 that ends every packet."""

FIXED_SIZE = 3 + CRC_SIZE
"""Bytes of every packet besides its fields and length: signature, flags and CRC32."""

MAX_LENGTH_SIZE = 3
"""Bytes of the length field of the largest packets."""


def tag_field(tag: str) -> bytes:
    """``tag`` encoded once, for :func:`add_tag` to insert into many packets."""
    return _utf8_field(tag, "tag")


def add_tag(raw: bytes, field: bytes) -> bytes:
    """``raw`` (one well-formed packet) with the tag ``field`` (from :func:`tag_field`)
    added, when it is a test's packet (it has a test id); any other packet, and one that
    would outgrow the format's size limit, is returned unchanged."""
    flags = int.from_bytes(raw[1:3], "big")
    if not flags & FLAG_TEST_ID:
        return raw
    _, start = varint(raw, LENGTH_OFFSET)
    pos = start
    if flags & FLAG_TIMESTAMP:
        _, pos = varint(raw, pos + TIMESTAMP_SECONDS_SIZE)
    size, pos = varint(raw, pos)
    pos += size
    if flags & FLAG_TAGS:
        count, rest = varint(raw, pos)
    else:
        count, rest = 0, pos
    body = b"".join((raw[start:pos], _varint(count + 1), field, raw[rest:-CRC_SIZE]))
    size_without_length = len(body) + FIXED_SIZE
    if size_without_length + MAX_LENGTH_SIZE > MAX_PACKET_SIZE:
        return raw
    packet = _header(flags | FLAG_TAGS, size_without_length) + body
    return packet + zlib.crc32(packet).to_bytes(CRC_SIZE, "big")
