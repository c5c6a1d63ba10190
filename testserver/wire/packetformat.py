"""The subunit 2.1 packet format: the layout, flags and limits the codec's two halves share.

Both the encoder (:mod:`testserver.wire.packets`) and the decoder
(:mod:`testserver.wire.decoding`) follow this layout (python-subunit v2 plus the 2.1
extension, see ``spec/``)::

    PACKET := 0xB3 FLAGS(u16 BE) LENGTH(varint, 1-3 bytes, whole packet) TIMESTAMP? TESTID?
              TAGS? MIME? FILECONTENT? ROUTE_CODE? PARENT_TEST_ID? CRC32(BE)

FLAGS holds the version nibble, one bit per optional field, ``runnable``, ``eof`` and the
3-bit status code (the index in :data:`~testserver.wire.events.STATUSES`). No I/O here.
"""

from __future__ import annotations

from testserver.wire.errors import LocalProtocolError

SIGNATURE = 0xB3
"""First byte of every packet; a UTF-8 continuation byte, so never the start of text."""

MAX_PACKET_SIZE = 4_194_303
"""The packet length is a varint limited to 3 bytes, so a packet is at most 2**22 - 1 bytes."""

MIN_PACKET_SIZE = 8
"""Signature, flags, a 1-byte length and the CRC32: a packet with no fields at all."""

MAX_STRING_LENGTH = 2**30 - 1
"""A string's byte length is a varint of at most 4 bytes (in practice the packet limit binds)."""

VERSION_2 = 0x2000
VERSION_MASK = 0xF000
FLAG_TEST_ID = 0x0800
FLAG_ROUTE_CODE = 0x0400
FLAG_TIMESTAMP = 0x0200
FLAG_RUNNABLE = 0x0100
FLAG_TAGS = 0x0080
FLAG_FILE_CONTENT = 0x0040
FLAG_MIME_TYPE = 0x0020
FLAG_EOF = 0x0010
FLAG_PARENT_TEST_ID = 0x0008
STATUS_MASK = 0x0007

LENGTH_OFFSET = 3
"""The signature (1 byte) and the flags (2 bytes) come before the length varint."""

TEST_SCOPED_FLAGS = FLAG_TEST_ID | FLAG_ROUTE_CODE | FLAG_TAGS | FLAG_PARENT_TEST_ID
"""Flags a global control event never has (``testserver.complete`` carries none of them)."""

TIMESTAMP_SECONDS_SIZE = 4
"""A timestamp starts with 4 bytes of seconds, then a varint of nanoseconds."""


def varint(data: bytes | bytearray, pos: int) -> tuple[int, int]:
    """The subunit varint at ``pos`` (its top 2 bits say 1 to 4 bytes) and the end position."""
    first = data[pos]
    width = (first >> 6) + 1
    value = first & 0x3F
    for i in range(1, width):
        value = (value << 8) | data[pos + i]
    return value, pos + width


def check_max_packet_size(max_packet_size: int) -> None:
    """Raise :class:`LocalProtocolError` unless a packet size limit is within the format's."""
    if not MIN_PACKET_SIZE <= max_packet_size <= MAX_PACKET_SIZE:
        raise LocalProtocolError(
            f"max_packet_size {max_packet_size} is outside {MIN_PACKET_SIZE}..{MAX_PACKET_SIZE}"
        )
