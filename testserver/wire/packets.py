"""The subunit 2.1 packet codec: :class:`~testserver.wire.events.Packet` <-> bytes, without I/O.

Encoding is a function call (:func:`encode_packet`, the hot-path :func:`encode_status`, and
:func:`file_packets` for attachments of any size), written here. Decoding is h11 style: feed
bytes to a :class:`PacketDecoder` with ``receive_data()`` (``b""`` = end of input) and pull
:class:`Packet` events, ``NEED_DATA`` or ``END_OF_INPUT`` from ``next_event()``. Malformed
input raises :class:`PacketError` *after* the decoder has skipped the bad bytes, so the caller
reports it and calls ``next_event()`` again.

This module is the codec's one import: the decoder is written in
:mod:`testserver.wire.decoding` and the wire layout both halves follow (python-subunit v2 plus
the 2.1 PARENT_TEST_ID field, see ``spec/``) in :mod:`testserver.wire.packetformat`, and their
public names are re-exported here (``from testserver.wire.packets import PacketDecoder``).

With ``subunit_version="2.0"`` the encoder leaves out PARENT_TEST_ID and its flag ``0x0008``,
giving packets that strict v2 readers accept. The decoder always understands both.
"""

from __future__ import annotations

import struct
import zlib

from testserver.wire.decoding import MAX_DISCARD_CHUNK as MAX_DISCARD_CHUNK  # re-exported
from testserver.wire.decoding import PACKET_ERROR_CODES, PacketDecoder, decode_packets
from testserver.wire.errors import LocalProtocolError
from testserver.wire.events import NANOSECONDS, STATUSES, Packet
from testserver.wire.packetformat import (
    FLAG_EOF,
    FLAG_FILE_CONTENT,
    FLAG_MIME_TYPE,
    FLAG_PARENT_TEST_ID,
    FLAG_ROUTE_CODE,
    FLAG_RUNNABLE,
    FLAG_TAGS,
    FLAG_TEST_ID,
    FLAG_TIMESTAMP,
    MAX_PACKET_SIZE,
    MAX_STRING_LENGTH,
    MIN_PACKET_SIZE,
    SIGNATURE,
    VERSION_2,
    check_max_packet_size,
)
from testserver.wire.packetformat import STATUS_MASK as STATUS_MASK  # re-exported
from testserver.wire.packetformat import VERSION_MASK as VERSION_MASK  # re-exported

__all__ = [
    "MAX_PACKET_SIZE",
    "MAX_STRING_LENGTH",
    "MIN_PACKET_SIZE",
    "PACKET_ERROR_CODES",
    "SUBUNIT_VERSIONS",
    "PacketDecoder",
    "decode_packets",
    "encode_packet",
    "encode_status",
    "file_packets",
]

SUBUNIT_VERSIONS = ("2.0", "2.1")

TEXT_MIME = "text/plain; charset=utf8"
"""MIME type of plain text attachments: captured output, reasons, tracebacks we write."""
"""Encoder dialects: "2.1" may carry PARENT_TEST_ID (flag 0x0008), "2.0" never does."""

STRING_CACHE_SIZE = 4096
"""Encoded strings (test ids, tags, MIME types) are cached; the cache is cleared when this full."""

MAX_CACHED_STRING = 512
"""Only strings up to this many characters are cached, bounding the cache to a few MiB."""

_STATUS_CODES: dict[str | None, int] = {status: code for code, status in enumerate(STATUSES)}
_STATUS_FLAGS: dict[str | None, int] = {
    status: VERSION_2 | FLAG_TEST_ID | code for status, code in _STATUS_CODES.items()
}

_PACK_HEAD1 = struct.Struct(">BHB").pack
_PACK_HEAD2 = struct.Struct(">BHH").pack
_PACK_HEAD3 = struct.Struct(">BHBH").pack
_PACK_HEAD1_TS4 = struct.Struct(">BHBII").pack
_PACK_U16 = struct.Struct(">H").pack
_PACK_U24 = struct.Struct(">BH").pack
_PACK_U32 = struct.Struct(">I").pack
_PACK_TS4 = struct.Struct(">II").pack
_SMALL_VARINTS = tuple(bytes((n,)) for n in range(64))
_crc32 = zlib.crc32


# --------------------------------------------------------------------------- encoding


def _varint(value: int) -> bytes:
    """Encode ``value`` as a minimal subunit varint (1 to 4 bytes, big-endian)."""
    if value < 0x40:
        if value < 0:
            raise LocalProtocolError(f"cannot encode negative number {value}")
        return _SMALL_VARINTS[value]
    if value < 0x4000:
        return _PACK_U16(value | 0x4000)
    if value < 0x400000:
        return _PACK_U24(0x80 | (value >> 16), value & 0xFFFF)
    if value <= MAX_STRING_LENGTH:
        return _PACK_U32(value | 0xC0000000)
    raise LocalProtocolError(f"number {value} is too large for a subunit varint (max 2**30-1)")


_string_cache: dict[str, bytes] = {}


def _utf8_field(value: str, what: str) -> bytes:
    """Encode a utf8 string field (varint byte length + bytes), using a bounded cache."""
    if not isinstance(value, str):
        raise LocalProtocolError(f"{what} must be a str, not {type(value).__name__}")
    field = _string_cache.get(value)
    if field is not None:
        return field
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise LocalProtocolError(
            f"{what} {value[:80]!r} is not encodable as UTF-8: {error}"
        ) from None
    if b"\0" in raw:
        raise LocalProtocolError(f"{what} {value[:80]!r} contains NUL, which subunit forbids")
    if len(raw) > MAX_STRING_LENGTH:
        raise LocalProtocolError(f"{what} is {len(raw)} bytes long; the limit is 2**30-1")
    field = _varint(len(raw)) + raw
    if len(value) <= MAX_CACHED_STRING:
        if len(_string_cache) >= STRING_CACHE_SIZE:
            _string_cache.clear()
        _string_cache[value] = field
    return field


def _timestamp_field(timestamp_ns: int) -> bytes:
    """Encode TIMESTAMP: uint32 seconds then a minimal varint of nanoseconds."""
    try:
        seconds, ns = divmod(timestamp_ns, NANOSECONDS)
        return _PACK_U32(seconds) + _varint(ns)
    except (struct.error, TypeError):
        raise LocalProtocolError(
            f"timestamp_ns {timestamp_ns!r} is not an int in 0 .. 2**32 seconds"
        ) from None


def _header(flags: int, size_without_length: int) -> bytes:
    """Signature, flags and the minimal LENGTH for a packet of this size (length field excluded)."""
    if size_without_length <= 62:
        return _PACK_HEAD1(SIGNATURE, flags, size_without_length + 1)
    if size_without_length <= 16381:
        return _PACK_HEAD2(SIGNATURE, flags, (size_without_length + 2) | 0x4000)
    if size_without_length <= MAX_PACKET_SIZE - 3:
        total = size_without_length + 3
        return _PACK_HEAD3(SIGNATURE, flags, 0x80 | (total >> 16), total & 0xFFFF)
    raise LocalProtocolError(
        f"packet would be {size_without_length + 3} bytes; subunit packets are at most "
        f"{MAX_PACKET_SIZE} bytes (split attachments with file_packets())"
    )


def _packet_size(content_size: int) -> int:
    """Total size of a packet whose fields take ``content_size`` bytes (inverse of _header)."""
    base = content_size + 7  # signature, flags and CRC32
    return base + (1 if base <= 62 else 2 if base <= 16381 else 3)


def _frame(flags: int, parts: list[bytes | memoryview]) -> bytes:
    """Join header, fields and CRC32 into one packet."""
    head = _header(flags, sum(map(len, parts)) + 7)
    if len(parts) == 1 and len(parts[0]) < 4096:  # small packets: concatenation is cheaper
        packet = head + parts[0]
        return packet + _PACK_U32(_crc32(packet))
    crc = _crc32(head)
    for part in parts:
        crc = _crc32(part, crc)
    parts.insert(0, head)
    parts.append(_PACK_U32(crc))
    return b"".join(parts)


def _check_version(subunit_version: str) -> bool:
    """Return True for "2.1" and False for "2.0"; anything else is an API misuse."""
    if subunit_version == "2.1":
        return True
    if subunit_version == "2.0":
        return False
    raise LocalProtocolError(
        f"unknown subunit_version {subunit_version!r}; expected one of {SUBUNIT_VERSIONS}"
    )


def encode_status(
    test_id: str,
    status: str | None,
    timestamp_ns: int | None = None,
    *,
    route_code: str | None = None,
    parent_test_id: str | None = None,
    runnable: bool = True,
    subunit_version: str = "2.1",
) -> bytes:
    """Encode a test status event; the same bytes as ``encode_packet(Packet(...))``, faster.

    This is the server's hot path: no :class:`Packet` is built and the test id's encoding is
    cached, so reporting ``inprogress`` then ``success`` encodes the id once.
    """
    try:
        flags = _STATUS_FLAGS[status]
    except (KeyError, TypeError):
        raise LocalProtocolError(
            f"unknown test status {status!r}; expected one of {STATUSES[1:]} or None"
        ) from None
    try:
        body = _string_cache.get(test_id)
    except TypeError:  # unhashable: not a str
        body = None
    if body is None:
        body = _utf8_field(test_id, "test_id")
    if runnable:
        flags |= 0x0100  # FLAG_RUNNABLE (literals: this is the hot path)
    if timestamp_ns is not None:
        flags |= 0x0200  # FLAG_TIMESTAMP
        try:  # inline the usual case of _timestamp_field(): nanoseconds in a 4-byte varint
            seconds, ns = divmod(timestamp_ns, NANOSECONDS)
            if ns < 0x400000:
                body = _timestamp_field(timestamp_ns) + body
            elif route_code is None and parent_test_id is None and len(body) <= 47:
                # The usual event: one pack() for signature, flags, 1-byte LENGTH, timestamp.
                if subunit_version != "2.1":
                    _check_version(subunit_version)  # without a parent id 2.0 == 2.1
                size = len(body) + 16
                packet = _PACK_HEAD1_TS4(SIGNATURE, flags, size, seconds, ns | 0xC0000000) + body
                return packet + _PACK_U32(_crc32(packet))
            else:
                body = _PACK_TS4(seconds, ns | 0xC0000000) + body
        except (struct.error, TypeError):
            body = _timestamp_field(timestamp_ns)  # raises the LocalProtocolError
    if route_code is not None:
        flags |= FLAG_ROUTE_CODE
        body += _utf8_field(route_code, "route_code")
    if subunit_version != "2.1" and not _check_version(subunit_version):
        parent_test_id = None  # "2.0": the same event without the 2.1 field
    if parent_test_id is not None:
        flags |= FLAG_PARENT_TEST_ID
        body += _utf8_field(parent_test_id, "parent_test_id")
    size = len(body) + 7
    if size <= 62:
        packet = _PACK_HEAD1(SIGNATURE, flags, size + 1) + body
    elif size <= 16381:
        packet = _PACK_HEAD2(SIGNATURE, flags, (size + 2) | 0x4000) + body
    else:
        return _frame(flags, [body])
    return packet + _PACK_U32(_crc32(packet))


def _file_bytes(data: object) -> bytes:
    """Accept any bytes-like object as file content."""
    if type(data) is bytes:
        return data
    try:
        return bytes(memoryview(data))  # type: ignore[arg-type]
    except TypeError:
        raise LocalProtocolError(
            f"file_bytes must be bytes-like, not {type(data).__name__}"
        ) from None


def _fields(packet: Packet, v21: bool) -> tuple[int, list[bytes], list[bytes]]:
    """Flags (but EOF), the fields before the file content (ending with the file name) and
    the fields after it, in wire order."""
    flags = VERSION_2 | _STATUS_CODES[packet.status]
    before: list[bytes] = []
    after: list[bytes] = []
    if packet.timestamp_ns is not None:
        flags |= FLAG_TIMESTAMP
        before.append(_timestamp_field(packet.timestamp_ns))
    if packet.test_id is not None:
        flags |= FLAG_TEST_ID
        before.append(_utf8_field(packet.test_id, "test_id"))
    if packet.tags is not None:
        flags |= FLAG_TAGS
        before.append(_varint(len(packet.tags)))
        before.extend([_utf8_field(tag, "tag") for tag in packet.tags])
    if packet.runnable:
        flags |= FLAG_RUNNABLE
    if packet.mime_type is not None:
        flags |= FLAG_MIME_TYPE
        before.append(_utf8_field(packet.mime_type, "mime_type"))
    if packet.file_name is not None:
        flags |= FLAG_FILE_CONTENT
        before.append(_utf8_field(packet.file_name, "file_name"))
    if packet.route_code is not None:
        flags |= FLAG_ROUTE_CODE
        after.append(_utf8_field(packet.route_code, "route_code"))
    if packet.parent_test_id is not None and v21:
        flags |= FLAG_PARENT_TEST_ID
        after.append(_utf8_field(packet.parent_test_id, "parent_test_id"))
    return flags, before, after


def encode_packet(packet: Packet, *, subunit_version: str = "2.1") -> bytes:
    """Encode ``packet`` as one subunit packet.

    Raises :class:`LocalProtocolError` for anything the wire cannot carry: a packet over
    :data:`MAX_PACKET_SIZE`, a NUL or lone surrogate in a string, a timestamp out of range.
    With ``subunit_version="2.0"`` ``parent_test_id`` is dropped.
    """
    if not isinstance(packet, Packet):
        raise LocalProtocolError(f"encode_packet() needs a Packet, not {type(packet).__name__}")
    flags, parts, after = _fields(packet, _check_version(subunit_version))
    if packet.eof:
        flags |= FLAG_EOF
    if packet.file_name is not None:
        content = _file_bytes(packet.file_bytes)
        parts += (_varint(len(content)), content)
    parts += after
    if len(parts) > 1 and sum(map(len, parts)) < 4096:
        parts = [b"".join(parts)]
    return _frame(flags, parts)


def _max_chunk(fixed_size: int, max_packet_size: int) -> int:
    """The largest file chunk whose packet fits ``max_packet_size`` given ``fixed_size`` bytes
    of other fields (the chunk's own length varint is accounted for here)."""
    low, high = 0, max_packet_size
    while low < high:  # binary search: the packet size grows with the chunk size
        mid = (low + high + 1) // 2
        if _packet_size(fixed_size + len(_varint(mid)) + mid) <= max_packet_size:
            low = mid
        else:
            high = mid - 1
    return low


def file_packets(
    file_name: str,
    data: bytes,
    *,
    test_id: str | None = None,
    mime_type: str | None = None,
    eof: bool = True,
    route_code: str | None = None,
    timestamp_ns: int | None = None,
    parent_test_id: str | None = None,
    subunit_version: str = "2.1",
    max_packet_size: int = MAX_PACKET_SIZE,
) -> list[bytes]:
    """Split an attachment of any size into packets of at most ``max_packet_size`` bytes.

    Every packet repeats the test id, MIME type, timestamp, route code and parent id (readers
    such as python-subunit treat each packet on its own); only the last carries ``eof`` (if
    ``eof``). Empty ``data`` gives one packet. Concatenating the chunks gives ``data`` back.
    """
    check_max_packet_size(max_packet_size)
    template = Packet(
        test_id=test_id,
        timestamp_ns=timestamp_ns,
        mime_type=mime_type,
        file_name=file_name,
        route_code=route_code,
        parent_test_id=parent_test_id,
    )
    flags, before, after = _fields(template, _check_version(subunit_version))
    view = memoryview(_file_bytes(data))
    fixed = sum(map(len, before)) + sum(map(len, after))
    chunk = _max_chunk(fixed, max_packet_size)
    if chunk < 1 and (len(view) or _packet_size(fixed + 1) > max_packet_size):
        raise LocalProtocolError(
            f"the fields besides the file content leave no room in a {max_packet_size}-byte packet"
        )
    starts = range(0, len(view), chunk) if len(view) else range(1)
    last = starts[-1]
    packets = []
    for start in starts:
        piece = view[start : start + chunk]
        piece_flags = flags | FLAG_EOF if eof and start == last else flags
        packets.append(_frame(piece_flags, [*before, _varint(len(piece)), piece, *after]))
    return packets
