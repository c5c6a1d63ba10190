"""Split a stream of subunit packets we wrote ourselves, and read what a tracker needs.

The one packet splitter of the package, for streams our own encoder wrote. Unchecked, it
reads only the header (signature, flags, length): a bad signature is a bug, not input.
Checked (``checked=True``, for a worker's events pipe, which a test can write into), it also
bounds the length and verifies the CRC32, and the first bad packet raises
:class:`CorruptStream` carrying the good packets before it. Untrusted bytes from elsewhere go
through :class:`~testserver.wire.packets.PacketDecoder`. :func:`classify` names what a packet means
for the batch from its flags alone, and :func:`packet_test_id` reads the test id without
decoding the rest. Layout and flags: :mod:`testserver.wire.packetformat`. No I/O here.
"""

from __future__ import annotations

import zlib
from enum import IntEnum

from testserver.wire.events import FINAL_STATUSES, STATUSES
from testserver.wire.packetformat import (  # TEST_SCOPED_FLAGS, varint: re-exported
    FLAG_FILE_CONTENT,
    FLAG_RUNNABLE,
    FLAG_TEST_ID,
    FLAG_TIMESTAMP,
    LENGTH_OFFSET,
    SIGNATURE,
    STATUS_MASK,
    TEST_SCOPED_FLAGS,  # noqa: F401
    TIMESTAMP_SECONDS_SIZE,
    varint,
)

STATUS_CODES: dict[str, int] = {name: code for code, name in enumerate(STATUSES) if name}
"""Status name -> the 3-bit status code of the flags."""

FINAL_CODES = frozenset(STATUS_CODES[name] for name in FINAL_STATUSES)
"""Status codes that end a test."""

INPROGRESS_CODE = STATUS_CODES["inprogress"]


class StreamOutOfSync(RuntimeError):
    """Our own packet stream does not start with a packet signature: a bug in its writer."""


MAX_PACKET = 4 * 1024 * 1024
"""A subunit v2 packet is at most 4 MiB; a longer length field is garbage."""


class CorruptStream(StreamOutOfSync):
    """A checked stream carried bytes that are not a packet we wrote (a test wrote into it).

    ``packets`` are the good packets before the bad bytes (already removed from the buffer);
    nothing after them is trusted. ``sample`` is the first bytes of the bad data.
    """

    def __init__(self, packets: list[bytes], sample: bytes, reason: str) -> None:
        super().__init__(reason)
        self.packets = packets
        self.sample = sample
        self.reason = reason


class Kind(IntEnum):
    """What one packet means to a batch tracker, read from its flags."""

    OTHER = 0
    """Anything else: attachments, subtests, ``exists``, non-runnable pseudo-tests."""
    GLOBAL_FILE = 1
    """A file with no test id: global output or a control event."""
    TEST_STARTED = 2
    """A runnable test's ``inprogress``."""
    TEST_FINISHED = 3
    """A runnable test's final status."""


def split_packets(buffer: bytearray, *, checked: bool = False) -> list[bytes]:
    """Remove and return the complete packets at the start of ``buffer``; keep the rest.

    Unchecked, a bad signature raises :class:`StreamOutOfSync`. ``checked`` also verifies
    each packet's length bounds and CRC32; the first bad packet raises :class:`CorruptStream`
    (whose ``packets`` are the good ones before it, removed from ``buffer`` like them).
    """
    packets = []
    pos = 0
    size = len(buffer)
    try:
        while size - pos > LENGTH_OFFSET:
            if buffer[pos] != SIGNATURE:
                if checked:
                    raise _corrupt(buffer, pos, "a byte that does not start a packet")
                raise StreamOutOfSync(
                    f"packet stream out of sync at byte {pos}: {bytes(buffer[pos : pos + 16])!r}"
                )
            first = buffer[pos + LENGTH_OFFSET]  # the length varint, inlined: this is hot
            width = (first >> 6) + 1
            if size - pos < LENGTH_OFFSET + width:
                break
            length = first & 0x3F
            for i in range(LENGTH_OFFSET + 1, LENGTH_OFFSET + width):
                length = (length << 8) | buffer[pos + i]
            if checked and not LENGTH_OFFSET + width + 4 <= length <= MAX_PACKET:
                raise _corrupt(buffer, pos, f"a packet length of {length} bytes")
            if size - pos < length:
                break
            end = pos + length
            if checked and zlib.crc32(buffer[pos : end - 4]) != int.from_bytes(
                buffer[end - 4 : end], "big"
            ):
                raise _corrupt(buffer, pos, "a packet whose CRC does not match")
            packets.append(bytes(buffer[pos:end]))
            pos = end
    except CorruptStream as error:
        error.packets = packets
        raise
    finally:
        del buffer[:pos]
    return packets


def _corrupt(buffer: bytearray, pos: int, what: str) -> CorruptStream:
    return CorruptStream([], bytes(buffer[pos : pos + 64]), what)


def flags_of(raw: bytes) -> int:
    """The 16-bit flags of a packet."""
    return (raw[1] << 8) | raw[2]


def classify(raw: bytes) -> Kind:
    """What ``raw`` means for a batch (see :class:`Kind`), from its flags alone."""
    flags = (raw[1] << 8) | raw[2]
    if not flags & FLAG_TEST_ID:
        return Kind.GLOBAL_FILE if flags & FLAG_FILE_CONTENT else Kind.OTHER
    if not flags & FLAG_RUNNABLE:
        return Kind.OTHER
    code = flags & STATUS_MASK
    if code == INPROGRESS_CODE:
        return Kind.TEST_STARTED
    if code in FINAL_CODES:
        return Kind.TEST_FINISHED
    return Kind.OTHER


def packet_status(raw: bytes) -> str | None:
    """The status name a packet carries, or ``None``."""
    return STATUSES[raw[2] & STATUS_MASK]


def packet_test_id(raw: bytes) -> str | None:
    """The test id of a packet, read without decoding the other fields."""
    flags = (raw[1] << 8) | raw[2]
    if not flags & FLAG_TEST_ID:
        return None
    pos = varint(raw, LENGTH_OFFSET)[1]
    if flags & FLAG_TIMESTAMP:
        pos = varint(raw, pos + TIMESTAMP_SECONDS_SIZE)[1]
    length, pos = varint(raw, pos)
    return raw[pos : pos + length].decode("utf-8")
