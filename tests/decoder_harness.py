"""Feed a sans-I/O decoder every way and check that it decodes the same each time.

This is h11's ``tr()`` idea (``h11/tests/test_io.py``) for our stream decoders: the bytes are
fed whole, one byte at a time, split in two at every offset and (optionally) followed by
trailing bytes; every way must give the same events and errors.

It works for any decoder with the testserver sans-I/O shape:

- ``receive_data(data: bytes)``, where ``b""`` means end of input;
- ``next_event()``, returning an event, ``NEED_DATA`` or ``END_OF_INPUT``, or raising a
  :class:`~testserver.wire.errors.RemoteProtocolError` (with ``code`` and ``recoverable``)
  after skipping the bad bytes. Any other exception is a bug and propagates.

An outcome is a list whose items are events or ``("error", code)`` tuples. After an error with
``recoverable=False`` the harness stops asking for events. Used by ``tests/test_packets.py``
and ``tests/test_packet_vectors.py``; the command-framing tests use it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from testserver.wire.errors import RemoteProtocolError
from testserver.wire.sentinels import END_OF_INPUT, NEED_DATA

DecoderFactory = Callable[[], Any]
Outcome = list[Any]

MAX_SPLIT_OFFSETS = 2048
"""Split at every offset up to this many; longer inputs get this many offsets spread evenly."""


def _drain(decoder: Any, outcome: Outcome, budget: int) -> tuple[bool, int]:
    """Call ``next_event()`` until it needs data; return (finished, remaining call budget)."""
    while True:
        if budget <= 0:
            raise AssertionError("decoder keeps returning events without consuming input")
        budget -= 1
        try:
            event = decoder.next_event()
        except RemoteProtocolError as error:
            outcome.append(("error", error.code))
            if not error.recoverable:
                return True, budget
            continue
        if event is NEED_DATA:
            return False, budget
        if event is END_OF_INPUT:
            again = decoder.next_event()
            assert again is END_OF_INPUT, f"next_event() after END_OF_INPUT gave {again!r}"
            return True, budget
        outcome.append(event)


def feed(factory: DecoderFactory, chunks: Iterable[bytes], *, end: bool = True) -> Outcome:
    """Feed ``chunks`` one by one, draining after each; then end the input if ``end``."""
    decoder = factory()
    outcome: Outcome = []
    chunks = [bytes(chunk) for chunk in chunks if chunk]
    budget = 4 * sum(map(len, chunks)) + 16  # every event or error consumes at least 1 byte
    for chunk in chunks:
        decoder.receive_data(chunk)
        finished, budget = _drain(decoder, outcome, budget)
        if finished:
            if outcome and is_error(outcome[-1]):
                return outcome  # an unrecoverable error: the decoder is done
            raise AssertionError("decoder returned END_OF_INPUT before the input ended")
    if end:
        decoder.receive_data(b"")
        finished, budget = _drain(decoder, outcome, budget)
        assert finished, "decoder returned NEED_DATA after the end of input"
    return outcome


def split_offsets(length: int, limit: int = MAX_SPLIT_OFFSETS) -> Iterator[int]:
    """Every offset 1..length-1, or ``limit`` of them spread evenly for long inputs."""
    if length - 1 <= limit:
        yield from range(1, length)
    else:
        step = (length - 1) / limit
        yield from sorted({1 + int(i * step) for i in range(limit)} | {length - 1})


def _check_same(expected: Outcome, got: Outcome, how: str) -> None:
    if got != expected:
        raise AssertionError(f"decoding {how} differs:\n  whole: {expected!r}\n  {how}: {got!r}")


def decode_every_way(
    factory: DecoderFactory,
    data: bytes,
    *,
    end: bool = True,
    trailing: bytes | None = None,
    split_limit: int = MAX_SPLIT_OFFSETS,
) -> Outcome:
    """Decode ``data`` whole, byte by byte and split at every offset; return the outcome.

    All ways must agree (else ``AssertionError``). With ``trailing``, also check that bytes
    after ``data`` do not change what ``data`` decodes to before the input ends (a decoder
    must not read past a packet or frame boundary); pass the start of a valid next
    packet or frame.
    """
    whole = feed(factory, [data], end=end)
    _check_same(
        whole, feed(factory, [data[i : i + 1] for i in range(len(data))], end=end), "bytewise"
    )
    for offset in split_offsets(len(data), split_limit):
        _check_same(
            whole, feed(factory, [data[:offset], data[offset:]], end=end), f"split@{offset}"
        )
    if trailing is not None:
        open_ended = feed(factory, [data], end=False)
        _check_same(open_ended, feed(factory, [data, trailing], end=False), "with trailing bytes")
    return whole


def is_error(item: Any) -> bool:
    """True for an ``("error", code)`` item of an outcome."""
    return type(item) is tuple and len(item) == 2 and item[0] == "error"


def errors(outcome: Outcome) -> list[str]:
    """The error codes in an outcome, in order."""
    return [item[1] for item in outcome if is_error(item)]


def events(outcome: Outcome) -> list[Any]:
    """The events (not errors) in an outcome, in order."""
    return [item for item in outcome if not is_error(item)]
