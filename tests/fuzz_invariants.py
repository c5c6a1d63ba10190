"""The fuzz invariants of the two stream decoders, checked on one input at a time.

Used by ``tests/test_fuzz_decoders.py`` (a few seconds of hypothesis on every test run) and by
``bench/fuzz_decoders.py`` (atheris or hypothesis for a fixed time). Each check raises
``AssertionError`` when an invariant breaks; any other exception escaping a decoder is a
finding too. The invariants, in words:

Frames (:class:`~testserver.wire.framing.FrameDecoder`, client -> server):

- F1 *Only our outcomes.* Any bytes give commands or :class:`FrameError` (a code from
  ``ERROR_CODES``, ``recoverable`` unless ``truncated``, at most ``MAX_ERROR_DATA`` bytes of
  data, echoed name and id that are a known command and a valid id), nothing else.
- F2 *Bounded.* ``next_event()`` never loops: each call returns a sentinel or consumes input
  (at most one result per byte); after draining, the decoder holds at most one header line
  plus ``max_payload`` plus the last chunk.
- F3 *Split-proof.* Whole, one byte at a time, or split anywhere: the same outcome.
- F4 *Round trip.* ``decode(encode(c)) == c`` for every command decoded, one at a time and
  as a stream.
- F5 *Resynchronises.* After any single line and LF, well-formed frames decode as sent,
  unless that line ends with a ``LENGTH`` from 1 to ``max_payload`` (whose bytes are then
  skipped or read as a payload, by design).

Packets (:class:`~testserver.wire.packets.PacketDecoder`, server -> client):

- P1 *Only our outcomes.* Packets or :class:`PacketError` (a code from
  ``PACKET_ERROR_CODES``, ``recoverable`` unless ``truncated``, non-empty discarded data).
- P2 *Bounded*, P3 *split-proof*, as F2 and F3 (the bound: ``max_packet_size``, or the
  64 KiB of non-packet bytes reported at once, plus the last chunk).
- P4 *Round trip.* Every decoded packet, encoded again (2.1, and 2.0 without a parent),
  decodes to itself.
- P5 *Agrees with python-subunit.* A stream we decode without any error,
  ``subunit.ByteStreamToStreamResult`` reads as the same events (python-subunit has no
  parent id and keeps microseconds; see ``subunit_reader.subunit_view``).
- P6 *Resynchronises.* Bytes without a ``0xB3`` signature, then valid packets: the packets
  decode as sent, after ``no-signature`` errors for the garbage.

``crc_fixed`` turns arbitrary bytes into packets with a correct length and CRC, written by
hand, so that a fuzzer reaches the field parser instead of stopping at ``bad-crc``.
"""

from __future__ import annotations

import functools
import json
import pathlib
import re
import zlib
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st
from subunit_reader import read_with_subunit, subunit_view

from testserver.wire.commands import COMMAND_TYPES, ID_PATTERN, ListTests, Quit, RunTests, Stdin
from testserver.wire.decoding import MAX_DISCARD_CHUNK
from testserver.wire.errors import FrameError, PacketError
from testserver.wire.events import Packet
from testserver.wire.framing import (
    ERROR_CODES,
    MAX_ERROR_DATA,
    MAX_HEADER_LENGTH,
    FrameDecoder,
    encode_command,
)
from testserver.wire.packets import PACKET_ERROR_CODES, PacketDecoder, encode_packet
from testserver.wire.sentinels import END_OF_INPUT, NEED_DATA

VECTORS = pathlib.Path(__file__).resolve().parent.parent / "spec" / "vectors"

FUZZ_MAX_PAYLOAD = 64
"""The frame decoder's limit under fuzzing: small, so ``payload-too-large`` is reachable."""

FUZZ_MAX_PACKET = 4096
"""The packet decoder's limit under fuzzing: small, so over-long lengths are reachable."""

GOOD_FRAMES = (ListTests("fz.1"), RunTests("fz.2", ("a.b", "c")), Stdin("fz.3", b"\n"), Quit("z"))
"""Well-formed commands appended after fuzz input to check resynchronisation (F5)."""

GOOD_PACKETS = (
    Packet(test_id="fuzz.T.test", status="inprogress", timestamp_ns=1_700_000_000_123_456_000),
    Packet(test_id="fuzz.T.test", file_name="stdout", file_bytes=b"\xb3 out", eof=True),
    Packet(test_id="fuzz.T.test", status="success", tags=("w",), parent_test_id="fuzz.T"),
)
"""Valid packets appended after signature-free garbage to check resynchronisation (P6)."""

_COUNTED_LENGTH = re.compile(rb".* ([0-9]{1,20})\r?", re.DOTALL)

Outcome = list[Any]


def _drain(decoder: Any, outcome: Outcome, budget: list[int], check_error: Callable) -> bool:
    """Pull events until the decoder needs data; True when it finished."""
    while True:
        budget[0] -= 1
        assert budget[0] >= 0, "next_event() keeps returning without consuming input"
        try:
            event = decoder.next_event()
        except (FrameError, PacketError) as error:
            check_error(error)
            outcome.append(("error", error.code))
            if not error.recoverable:
                assert decoder.next_event() is END_OF_INPUT, "events after an unrecoverable error"
                return True
            continue
        if event is NEED_DATA:
            return False
        if event is END_OF_INPUT:
            return True
        outcome.append(event)


def _feed(factory: Callable[[], Any], chunks: list[bytes], check_error, bound) -> Outcome:
    decoder = factory()
    outcome: Outcome = []
    budget = [2 * sum(map(len, chunks)) + 8]  # results per byte, at most: F2
    for chunk in chunks:
        if not chunk:
            continue
        decoder.receive_data(chunk)
        if _drain(decoder, outcome, budget, check_error):
            assert outcome and outcome[-1] == ("error", "truncated"), "ended before the input"
            return outcome
        held = bound(decoder)
        assert held <= decoder_limit(decoder) + len(chunk), f"decoder holds {held} bytes"
    decoder.receive_data(b"")
    assert _drain(decoder, outcome, budget, check_error), "NEED_DATA after end of input"
    return outcome


def decoder_limit(decoder: Any) -> int:
    """The most a drained decoder may hold besides the last chunk (F2, P2)."""
    if isinstance(decoder, FrameDecoder):
        return MAX_HEADER_LENGTH + decoder.max_payload
    return max(decoder.max_packet_size, MAX_DISCARD_CHUNK)  # garbage waits for a signature


def split_ways(data: bytes) -> list[list[bytes]]:
    """Whole, one byte at a time, and split at two offsets that depend on the data."""
    ways = [[data], [data[i : i + 1] for i in range(len(data))]]
    if len(data) > 1:
        cut = 1 + data[0] % (len(data) - 1)
        ways.append([data[:cut], data[cut:]])
        ways.append([data[: len(data) // 2], data[len(data) // 2 :]])
    return ways


# -- frames -------------------------------------------------------------------------------


def _check_frame_error(error: FrameError) -> None:
    assert error.code in ERROR_CODES, error.code
    assert error.recoverable == (error.code != "truncated"), error
    assert len(error.data) <= MAX_ERROR_DATA
    assert error.command_name is None or error.command_name in COMMAND_TYPES
    assert error.command_id is None or ID_PATTERN.match(error.command_id.encode())
    assert error.message


def decode_frames(chunks: list[bytes], max_payload: int = FUZZ_MAX_PAYLOAD) -> Outcome:
    """Commands and ``("error", code)`` for ``chunks`` then end of input, checking F1 and F2."""
    factory = lambda: FrameDecoder(max_payload=max_payload)  # noqa: E731
    outcome = _feed(factory, chunks, _check_frame_error, lambda d: d.buffered_bytes)
    for event in outcome:
        assert isinstance(event, tuple) or type(event) in COMMAND_TYPES.values(), event
    return outcome


def check_frames(data: bytes, max_payload: int = FUZZ_MAX_PAYLOAD) -> Outcome:
    """Check F1 to F5 for ``data``; return its outcome."""
    outcome = decode_frames([data], max_payload)
    for chunks in split_ways(data)[1:]:
        assert decode_frames(chunks, max_payload) == outcome, f"split {len(chunks)} ways"
    commands = [event for event in outcome if not isinstance(event, tuple)]
    for command in commands:
        assert decode_frames([encode_command(command)], max_payload) == [command]
    stream = b"".join(encode_command(command) for command in commands)
    if len(stream) < 1 << 16:
        assert decode_frames([stream], max_payload) == commands
    line = data.split(b"\n", 1)[0]
    counted = _COUNTED_LENGTH.fullmatch(line)
    if not counted or not 0 < int(counted.group(1)) <= max_payload:
        tail = b"".join(encode_command(command) for command in GOOD_FRAMES)
        resumed = decode_frames([line + b"\n" + tail], max_payload)
        assert resumed[-len(GOOD_FRAMES) :] == list(GOOD_FRAMES), f"no resync after {line!r}"
    return outcome


# -- packets ------------------------------------------------------------------------------


def _check_packet_error(error: PacketError) -> None:
    assert error.code in PACKET_ERROR_CODES, error.code
    assert error.recoverable == (error.code != "truncated"), error
    assert error.data, "an error that discards nothing"
    assert error.message


def decode_packet_stream(chunks: list[bytes], max_packet: int = FUZZ_MAX_PACKET) -> Outcome:
    """Packets and ``("error", code)`` for ``chunks`` then end of input, checking P1 and P2."""
    factory = lambda: PacketDecoder(max_packet_size=max_packet)  # noqa: E731
    outcome = _feed(factory, chunks, _check_packet_error, lambda d: d.buffered)
    for event in outcome:
        assert isinstance(event, (tuple, Packet)), event
    return outcome


def check_packets(data: bytes, max_packet: int = FUZZ_MAX_PACKET) -> Outcome:
    """Check P1 to P6 for ``data``; return its outcome."""
    outcome = decode_packet_stream([data], max_packet)
    for chunks in split_ways(data)[1:]:
        assert decode_packet_stream(chunks, max_packet) == outcome, f"split {len(chunks)} ways"
    packets = [event for event in outcome if isinstance(event, Packet)]
    for packet in packets:
        versions = ("2.1",) if packet.parent_test_id is not None else ("2.1", "2.0")
        for version in versions:
            again = encode_packet(packet, subunit_version=version)
            assert decode_packet_stream([again], max(max_packet, len(again))) == [packet]
    if len(packets) == len(outcome):
        assert read_with_subunit(data) == [subunit_view(p) for p in packets], "python-subunit"
    garbage = data.replace(b"\xb3", b"")
    tail = b"".join(encode_packet(packet) for packet in GOOD_PACKETS)
    resumed = decode_packet_stream([garbage + tail], max_packet)
    assert resumed[-len(GOOD_PACKETS) :] == list(GOOD_PACKETS), "no resync after garbage"
    assert all(event == ("error", "no-signature") for event in resumed[: -len(GOOD_PACKETS)])
    return outcome


def _hand_varint(value: int) -> bytes:
    """A subunit number written by hand (not by our encoder): 1 to 3 bytes here."""
    if value < 0x40:
        return bytes([value])
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    return (value | 0x800000).to_bytes(3, "big")


def crc_fixed(data: bytes) -> bytes:
    """Read ``data`` as ``(flag byte, flag byte, n, n body bytes)*`` and write each as a packet
    with a correct length and CRC; the version nibble is forced to 2 unless ``n`` is odd and
    above 127, so version errors stay reachable."""
    out = bytearray()
    pos = 0
    while pos + 3 <= len(data):
        high, low, size = data[pos], data[pos + 1], data[pos + 2]
        body = data[pos + 3 : pos + 3 + size]
        pos += 3 + size
        if size < 128 or size % 2 == 0:
            high = 0x20 | (high & 0x0F)
        total = 1 + 2 + 1 + len(body) + 4
        if total >= 0x40:
            total += 1
        head = b"\xb3" + bytes([high, low]) + _hand_varint(total) + body
        out += head + zlib.crc32(head).to_bytes(4, "big")
    return bytes(out)


def field_seed(packet: bytes) -> bytes:
    """A valid packet in the input form of :func:`crc_fixed` (flags, body size, body)."""
    head = 4 + (packet[3] >> 6)
    body = packet[head:-4][:255]
    return packet[1:3] + bytes([len(body)]) + body


@functools.cache
def seeds(target: str) -> list[bytes]:
    """The corpus seeds of a fuzz target, from the golden vectors in ``spec/vectors/``."""
    name = "frames.json" if target == "frames" else "subunit.json"
    vectors = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    corpus = [bytes.fromhex(vector["hex"]) for vector in vectors]
    if target == "fields":
        return [field_seed(data) for data in corpus if data[:1] == b"\xb3" and len(data) >= 8]
    return corpus


def _edit(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    buffer = bytearray(data)
    for kind, position, chunk in edits:
        at = position % (len(buffer) + 1)
        if kind == 0:
            buffer[at:at] = chunk
        elif kind == 1:
            del buffer[at : at + len(chunk)]
        else:
            buffer[at : at + len(chunk)] = chunk
    return bytes(buffer)


def mutated(corpus: list[bytes]) -> st.SearchStrategy[bytes]:
    """A seed with a few byte edits, two seeds joined, or random bytes (for hypothesis)."""
    changes = st.lists(
        st.tuples(st.integers(0, 2), st.integers(0), st.binary(min_size=1, max_size=4)),
        max_size=5,
    )
    seed = st.sampled_from(corpus)
    return st.one_of(
        st.builds(_edit, seed, changes),
        st.builds(lambda a, b: a + b, seed, seed),
        st.binary(max_size=200),
    )


CHECKS: dict[str, Callable[[bytes], object]] = {
    "frames": check_frames,
    "packets": check_packets,
    "fields": lambda data: check_packets(crc_fixed(data)),
}
"""The fuzz targets: what one input is checked with."""
