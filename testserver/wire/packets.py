"""The subunit 2.1 packet codec: :class:`~testserver.wire.events.Packet` <-> bytes, without I/O.

Encoding is a function call (:func:`encode_packet`, the hot-path :func:`encode_status`, and
:func:`file_packets` for attachments of any size). Decoding is h11 style: feed bytes to a
:class:`PacketDecoder` with ``receive_data()`` (``b""`` = end of input) and pull
:class:`Packet` events, ``NEED_DATA`` or ``END_OF_INPUT`` from ``next_event()``. Malformed
input raises :class:`PacketError` *after* the decoder has skipped the bad bytes, so the caller
reports it and calls ``next_event()`` again.

Wire format (python-subunit v2 plus the 2.1 extension, see ``spec/``)::

    PACKET := 0xB3 FLAGS(u16 BE) LENGTH(varint, 1-3 bytes, whole packet) TIMESTAMP? TESTID?
              TAGS? MIME? FILECONTENT? ROUTE_CODE? PARENT_TEST_ID? CRC32(BE)

With ``subunit_version="2.0"`` the encoder leaves out PARENT_TEST_ID and its flag ``0x0008``,
giving packets that strict v2 readers accept. The decoder always understands both.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from collections.abc import Callable, Iterable

from testserver.wire.errors import LocalProtocolError, PacketError
from testserver.wire.events import NANOSECONDS, STATUSES, Packet
from testserver.wire.sentinels import END_OF_INPUT, NEED_DATA, Sentinel

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

SIGNATURE = 0xB3
"""First byte of every packet; a UTF-8 continuation byte, so never the start of text."""

MAX_PACKET_SIZE = 4_194_303
"""The packet length is a varint limited to 3 bytes, so a packet is at most 2**22 - 1 bytes."""

MIN_PACKET_SIZE = 8
"""Signature, flags, a 1-byte length and the CRC32: a packet with no fields at all."""

MAX_STRING_LENGTH = 2**30 - 1
"""A string's byte length is a varint of at most 4 bytes (in practice the packet limit binds)."""

SUBUNIT_VERSIONS = ("2.0", "2.1")
"""Encoder dialects: "2.1" may carry PARENT_TEST_ID (flag 0x0008), "2.0" never does."""

MAX_DISCARD_CHUNK = 65_536
"""Non-packet bytes are reported in pieces of at most 64 KiB, so garbage cannot grow the buffer."""

STRING_CACHE_SIZE = 4096
"""Encoded strings (test ids, tags, MIME types) are cached; the cache is cleared when this full."""

MAX_CACHED_STRING = 512
"""Only strings up to this many characters are cached, bounding the cache to a few MiB."""

PACKET_ERROR_CODES = (
    "no-signature",
    "bad-length",
    "bad-crc",
    "bad-version",
    "bad-string",
    "field-overrun",
    "trailing-bytes",
    "bad-timestamp",
    "truncated",
)
"""Every ``PacketError.code`` the decoder raises; only ``truncated`` is not recoverable."""

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
_UNPACK_U32 = struct.Struct(">I").unpack_from
_UNPACK_TS4 = struct.Struct(">II").unpack_from
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
    if not MIN_PACKET_SIZE <= max_packet_size <= MAX_PACKET_SIZE:
        raise LocalProtocolError(
            f"max_packet_size {max_packet_size} is outside {MIN_PACKET_SIZE}..{MAX_PACKET_SIZE}"
        )
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


# --------------------------------------------------------------------------- decoding

_PACKET_FIELDS = (
    "test_id", "status", "timestamp_ns", "tags", "mime_type", "file_name",
    "file_bytes", "route_code", "runnable", "eof", "parent_test_id",
)  # fmt: skip


def _packet_builder() -> Callable[..., Packet]:
    """Return ``build(*values)`` making a Packet from values in ``_PACKET_FIELDS`` order.

    A frozen dataclass's ``__init__`` costs ~2.5 us (one ``object.__setattr__`` per field),
    more than decoding the packet. The decoder has already checked everything
    ``Packet.__post_init__`` checks, so it fills the slots directly. If Packet's fields ever
    differ from ``_PACKET_FIELDS``, fall back to the (validating) constructor.
    """
    if tuple(field.name for field in dataclasses.fields(Packet)) != _PACKET_FIELDS:
        return lambda *values: Packet(**dict(zip(_PACKET_FIELDS, values, strict=True)))
    s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10 = (
        vars(Packet)[name].__set__ for name in _PACKET_FIELDS
    )
    new = object.__new__

    def build(v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10):  # type: ignore[no-untyped-def]
        packet = new(Packet)
        s0(packet, v0), s1(packet, v1), s2(packet, v2), s3(packet, v3), s4(packet, v4)
        s5(packet, v5), s6(packet, v6), s7(packet, v7), s8(packet, v8), s9(packet, v9)
        s10(packet, v10)
        return packet

    return build


_build_packet = _packet_builder()


class _Malformed(Exception):
    """Internal: a field-level problem in a packet whose CRC was fine."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _read_varint(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """Read a varint at ``pos``; return (value, position after it)."""
    if pos >= end:
        raise _Malformed("field-overrun", f"{what} at offset {pos} is past the last field")
    size = (data[pos] >> 6) + 1
    stop = pos + size
    if stop > end:
        raise _Malformed("field-overrun", f"{size}-byte {what} at offset {pos} is cut off")
    return int.from_bytes(data[pos:stop], "big") & _VARINT_MASKS[size], stop


_VARINT_MASKS = (0, 0x3F, 0x3FFF, 0x3FFFFF, 0x3FFFFFFF)


def _read_string(data: bytes, pos: int, end: int, what: str) -> tuple[str, int]:
    """Read a utf8 string field at ``pos``; return (text, position after it)."""
    if pos < end and data[pos] < 0x40:  # the usual 1-byte length, inlined
        length = data[pos]
        pos += 1
    else:
        length, pos = _read_varint(data, pos, end, what + " length")
    stop = pos + length
    if stop > end:
        raise _Malformed(
            "field-overrun", f"{what} at offset {pos} claims {length} bytes, {end - pos} remain"
        )
    raw = data[pos:stop]
    if b"\0" in raw:
        raise _Malformed("bad-string", f"{what} at offset {pos} contains a NUL byte")
    try:
        return raw.decode("utf-8"), stop
    except UnicodeDecodeError as error:
        raise _Malformed("bad-string", f"{what} at offset {pos} is not UTF-8: {error}") from None


def _read_timestamp(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Read TIMESTAMP at ``pos``; return (nanoseconds since the epoch, position after it)."""
    if pos + 5 > end:
        raise _Malformed("field-overrun", f"timestamp at offset {pos} is cut off")
    if data[pos + 4] >= 0xC0 and pos + 8 <= end:  # the usual 4-byte nanoseconds, inlined
        seconds, ns = _UNPACK_TS4(data, pos)
        ns &= 0x3FFFFFFF
        pos += 8
    else:
        seconds = _UNPACK_U32(data, pos)[0]
        ns, pos = _read_varint(data, pos + 4, end, "timestamp nanoseconds")
    if ns >= NANOSECONDS:
        raise _Malformed("bad-timestamp", f"timestamp has {ns} nanoseconds (must be < 10**9)")
    return seconds * NANOSECONDS + ns, pos


def _parse_fields(data: bytes, flags: int, pos: int) -> Packet:
    """Decode the fields of a CRC-checked packet; ``pos`` is where they start."""
    end = len(data) - 4
    timestamp_ns = test_id = tags = mime_type = file_name = route_code = parent = None
    file_bytes = b""
    if flags & FLAG_TIMESTAMP:
        timestamp_ns, pos = _read_timestamp(data, pos, end)
    if flags & FLAG_TEST_ID:
        test_id, pos = _read_string(data, pos, end, "test id")
    if flags & FLAG_TAGS:
        count, pos = _read_varint(data, pos, end, "tag count")
        tag_list = []
        for _ in range(count):
            tag, pos = _read_string(data, pos, end, "tag")
            tag_list.append(tag)
        tags = tuple(tag_list)
    if flags & FLAG_MIME_TYPE:
        mime_type, pos = _read_string(data, pos, end, "MIME type")
    if flags & FLAG_FILE_CONTENT:
        file_name, pos = _read_string(data, pos, end, "file name")
        size, pos = _read_varint(data, pos, end, "file content length")
        if pos + size > end:
            raise _Malformed(
                "field-overrun", f"file content at offset {pos} claims {size} bytes, "
                f"{end - pos} remain"
            )  # fmt: skip
        file_bytes = data[pos : pos + size]
        pos += size
    if flags & FLAG_ROUTE_CODE:
        route_code, pos = _read_string(data, pos, end, "route code")
    if flags & FLAG_PARENT_TEST_ID:
        parent, pos = _read_string(data, pos, end, "parent test id")
    if pos != end:
        raise _Malformed(
            "trailing-bytes", f"{end - pos} unexpected bytes after the last field, before the CRC"
        )
    status = STATUSES[flags & STATUS_MASK]
    runnable, eof = bool(flags & FLAG_RUNNABLE), bool(flags & FLAG_EOF)
    return _build_packet(
        test_id, status, timestamp_ns, tags, mime_type, file_name, file_bytes, route_code,
        runnable, eof, parent,
    )  # fmt: skip


def _check_packet(data: bytes, head: int) -> Packet:
    """CRC, version and fields of one whole packet (``head`` = signature+flags+length size)."""
    length = len(data)
    crc = _crc32(data[:-4] if length < 4096 else memoryview(data)[:-4])
    stored = _UNPACK_U32(data, length - 4)[0]
    if crc != stored:
        raise PacketError(
            f"bad CRC32 (computed 0x{crc:08x}, stored 0x{stored:08x}); "
            f"skipped the {length}-byte packet",
            code="bad-crc",
            data=data,
        )
    flags = data[1] << 8 | data[2]
    if flags & VERSION_MASK != VERSION_2:
        raise PacketError(
            f"packet version is 0x{flags >> 12:x}, expected 0x2; skipped the {length}-byte packet",
            code="bad-version",
            data=data,
        )
    try:
        return _parse_fields(data, flags, head)
    except _Malformed as error:
        raise PacketError(
            f"{error.message}; skipped the {length}-byte packet", code=error.code, data=data
        ) from None


class PacketDecoder:
    """Incremental, sans-I/O decoder of a subunit 2.0/2.1 byte stream.

    ``receive_data(data)`` buffers bytes (``b""`` marks the end of input); ``next_event()``
    returns the next :class:`Packet`, ``NEED_DATA`` or ``END_OF_INPUT``, or raises
    :class:`PacketError` after discarding the offending bytes (``error.data``). Every call
    either returns or consumes at least one byte, so a loop over ``next_event()`` ends.
    """

    def __init__(self, *, max_packet_size: int = MAX_PACKET_SIZE) -> None:
        if not MIN_PACKET_SIZE <= max_packet_size <= MAX_PACKET_SIZE:
            raise LocalProtocolError(
                f"max_packet_size {max_packet_size} is outside {MIN_PACKET_SIZE}..{MAX_PACKET_SIZE}"
            )
        self.max_packet_size = max_packet_size
        self._buffer = bytearray()
        self._pos = 0
        self._ended = False
        self._clean = 0  # bytes after _pos already searched for a signature in vain

    @property
    def buffered(self) -> int:
        """How many received bytes are not yet decoded."""
        return len(self._buffer) - self._pos

    def receive_data(self, data: bytes) -> None:
        """Add bytes to decode; ``b""`` means the peer will send nothing more."""
        if not data:
            self._ended = True
            return
        if self._ended:
            raise LocalProtocolError("receive_data() called with bytes after end of input (b'')")
        if self._pos:
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += data

    def next_event(self) -> Packet | Sentinel:
        """Return the next packet, ``NEED_DATA`` or ``END_OF_INPUT``; see the class docstring."""
        buffer, pos = self._buffer, self._pos
        # Fast path: a whole packet with a 1-byte length is buffered.
        if len(buffer) - pos >= 8 and buffer[pos] == SIGNATURE:
            length = buffer[pos + 3]
            if (
                8 <= length < 0x40
                and length <= len(buffer) - pos
                and length <= self.max_packet_size
            ):
                self._pos = pos + length
                return _check_packet(bytes(buffer[pos : pos + length]), 4)
        return self._next_event_slow()

    def _next_event_slow(self) -> Packet | Sentinel:
        buffer, pos = self._buffer, self._pos
        available = len(buffer) - pos
        if not available:
            return END_OF_INPUT if self._ended else NEED_DATA
        if buffer[pos] != SIGNATURE:
            return self._skip_garbage(available)
        if available < 4:
            return self._incomplete(available)
        first = buffer[pos + 3]
        kind = first >> 6
        if kind == 3:
            raise self._error("bad-length", "packet length uses 4 bytes; at most 3 allowed", 1)
        if available < kind + 4:
            return self._incomplete(available)
        head = kind + 4
        length = int.from_bytes(buffer[pos + 3 : pos + head], "big") & _VARINT_MASKS[kind + 1]
        if length < head + 4 or length > self.max_packet_size:
            raise self._error(
                "bad-length",
                f"declared packet length {length} is outside {head + 4}..{self.max_packet_size}",
                1,
            )
        if available < length:
            return self._incomplete(available)
        return _check_packet(self._take(length), head)

    def _take(self, size: int) -> bytes:
        """Remove and return the next ``size`` buffered bytes."""
        start = self._pos
        self._pos = start + size
        self._clean = 0
        return bytes(self._buffer[start : start + size])

    def _error(self, code: str, message: str, size: int, recoverable: bool = True) -> PacketError:
        return PacketError(message, code=code, data=self._take(size), recoverable=recoverable)

    def _incomplete(self, available: int) -> Sentinel:
        """NEED_DATA, or after end of input a (final) ``truncated`` error."""
        if not self._ended:
            return NEED_DATA
        raise self._error(
            "truncated",
            f"input ended inside a packet ({available} bytes of it received); it is lost",
            available,
            recoverable=False,
        )

    def _skip_garbage(self, available: int) -> Sentinel:
        """Report bytes before the next signature (in pieces of at most MAX_DISCARD_CHUNK)."""
        pos = self._pos
        found = self._buffer.find(b"\xb3", pos + self._clean, pos + MAX_DISCARD_CHUNK)
        if found >= 0:
            size = found - pos
        elif available >= MAX_DISCARD_CHUNK:
            size = MAX_DISCARD_CHUNK
        elif self._ended:
            size = available
        else:
            self._clean = available
            return NEED_DATA  # wait: the next signature may be in the next read
        raise self._error(
            "no-signature", f"{size} bytes that are not a subunit packet (no 0xB3 signature)", size
        )


def decode_packets(data: bytes | Iterable[bytes]) -> list[Packet]:
    """Decode a complete stream; raise the first :class:`PacketError` (for tests and tools)."""
    decoder = PacketDecoder()
    for chunk in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
        if chunk:
            decoder.receive_data(chunk)
    decoder.receive_data(b"")
    packets = []
    while (event := decoder.next_event()) is not END_OF_INPUT:
        packets.append(event)  # type: ignore[arg-type]
    return packets
