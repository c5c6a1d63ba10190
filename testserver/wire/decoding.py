"""The subunit 2.1 packet decoder: bytes -> :class:`~testserver.wire.events.Packet`, without I/O.

Decoding is h11 style: feed bytes to a :class:`PacketDecoder` with ``receive_data()`` (``b""``
= end of input) and pull :class:`Packet` events, ``NEED_DATA`` or ``END_OF_INPUT`` from
``next_event()``. Malformed input raises :class:`PacketError` *after* the decoder has skipped
the bad bytes, so the caller reports it and calls ``next_event()`` again.
:func:`decode_packets` decodes a complete stream at once (for tests and tools).

The decoder always understands both 2.0 and 2.1 packets (the layout is in
:mod:`testserver.wire.packetformat`). Everything public here is also importable from
:mod:`testserver.wire.packets`, the codec's public face.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from collections.abc import Callable, Iterable

from testserver.wire.errors import LocalProtocolError, PacketError
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
    SIGNATURE,
    STATUS_MASK,
    VERSION_2,
    VERSION_MASK,
    check_max_packet_size,
)
from testserver.wire.sentinels import END_OF_INPUT, NEED_DATA, Sentinel

__all__ = ["MAX_DISCARD_CHUNK", "PACKET_ERROR_CODES", "PacketDecoder", "decode_packets"]

MAX_DISCARD_CHUNK = 65_536
"""Non-packet bytes are reported in pieces of at most 64 KiB, so garbage cannot grow the buffer."""

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

_UNPACK_U32 = struct.Struct(">I").unpack_from
_UNPACK_TS4 = struct.Struct(">II").unpack_from
_crc32 = zlib.crc32


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
        check_max_packet_size(max_packet_size)
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
