"""Subunit encode/decode throughput: testserver's codec vs python-subunit, in one run.

Usage::

    python bench/bench_encode.py [--events N] [--repeats R] [--chunk BYTES]

Encodes the same N status events (N/2 tests, each ``inprogress`` then ``success``, with
timestamps and ~35-character ids) with python-subunit's ``StreamResultToBytes.status()``
and with testserver's ``encode_status()`` and ``encode_packet(Packet(...))``, each writing
every event to a ``BytesIO`` (as a server writes each event to its stdout). It checks that
all three produce the same bytes, then decodes that stream with ``PacketDecoder`` (fed in
``--chunk``-byte reads, as from a pipe) and with ``subunit.ByteStreamToStreamResult`` into a
no-op ``testtools.StreamResult``.

Inputs (ids, ``datetime`` and nanosecond timestamps) are built before timing, so only the
encoding is measured. Encoders are timed round-robin, so drift on a noisy machine hits all
of them alike; only ratios from the same run mean anything. Cells are median (min-max).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import io
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata

import testtools
from subunit import ByteStreamToStreamResult, StreamResultToBytes

from testserver.wire.events import Packet
from testserver.wire.packets import PacketDecoder, encode_packet, encode_status
from testserver.wire.sentinels import END_OF_INPUT, NEED_DATA

UTC = datetime.timezone.utc
START_NS = 1_704_067_200_000_000_000
"""2024-01-01T00:00:00Z; event i is stamped START + i * 37 us (microseconds, so that both
encoders, python-subunit's being microsecond-precise, write identical bytes)."""


def make_inputs(events: int) -> tuple[list[str], list[int], list[datetime.datetime]]:
    """Test ids (~35 characters) and per-test timestamps, as ns and as datetimes."""
    tests = events // 2
    ids = [f"pkg.mod_{i % 97:02d}.TestCase{i % 7}.test_{i:07d}" for i in range(tests)]
    stamps_ns = [START_NS + i * 37_000 for i in range(tests)]
    epoch = datetime.datetime(1970, 1, 1, tzinfo=UTC)
    stamps_dt = [epoch + datetime.timedelta(microseconds=ns // 1000) for ns in stamps_ns]
    return ids, stamps_ns, stamps_dt


def encoders(
    ids: list[str], stamps_ns: list[int], stamps_dt: list[datetime.datetime]
) -> dict[str, Callable[[], bytes]]:
    def python_subunit() -> bytes:
        out = io.BytesIO()
        status = StreamResultToBytes(out).status
        for test_id, when in zip(ids, stamps_dt, strict=True):
            status(test_id=test_id, test_status="inprogress", timestamp=when)
            status(test_id=test_id, test_status="success", timestamp=when)
        return out.getvalue()

    def ours_encode_status() -> bytes:
        out = io.BytesIO()
        write = out.write
        for test_id, ns in zip(ids, stamps_ns, strict=True):
            write(encode_status(test_id, "inprogress", ns))
            write(encode_status(test_id, "success", ns))
        return out.getvalue()

    def ours_encode_packet() -> bytes:
        out = io.BytesIO()
        write = out.write
        for test_id, ns in zip(ids, stamps_ns, strict=True):
            write(encode_packet(Packet(test_id=test_id, status="inprogress", timestamp_ns=ns)))
            write(encode_packet(Packet(test_id=test_id, status="success", timestamp_ns=ns)))
        return out.getvalue()

    return {
        "python-subunit StreamResultToBytes.status()": python_subunit,
        "testserver encode_status()": ours_encode_status,
        "testserver encode_packet(Packet(...))": ours_encode_packet,
    }


def decoders(data: bytes, events: int, chunk: int) -> dict[str, Callable[[], object]]:
    def python_subunit() -> None:
        ByteStreamToStreamResult(io.BytesIO(data)).run(testtools.StreamResult())

    def ours() -> None:
        decoder = PacketDecoder()
        seen = 0
        for start in range(0, len(data), chunk):
            decoder.receive_data(data[start : start + chunk])
            while decoder.next_event() is not NEED_DATA:
                seen += 1
        decoder.receive_data(b"")
        assert decoder.next_event() is END_OF_INPUT and seen == events, seen

    return {
        "python-subunit ByteStreamToStreamResult": python_subunit,
        "testserver PacketDecoder": ours,
    }


def time_round_robin(functions: dict[str, Callable[[], object]], repeats: int) -> dict:
    """Seconds per call of each function, ``repeats`` rounds, functions interleaved."""
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            gc.collect()
            start = time.perf_counter()
            function()
            samples[name].append(time.perf_counter() - start)
    return samples


def report(title: str, samples: dict[str, list[float]], events: int) -> list[float]:
    """Print one table; return the per-round ratios of row 2 (ours) over row 1 (theirs)."""
    print(f"\n{title}\n")
    print(f"| {'what':<45} | {'events/s median (min-max)':<29} | {'us/event':>8} |")
    print(f"|{'-' * 47}|{'-' * 31}|{'-' * 10}|")
    for name, seconds in samples.items():
        rates = [events / s for s in seconds]
        cell = f"{statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f})"
        micros = statistics.median(seconds) / events * 1e6
        print(f"| {name:<45} | {cell:<29} | {micros:>8.2f} |")
    theirs, ours = list(samples.values())[:2]
    return [t / o for t, o in zip(theirs, ours, strict=True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="status events (even)")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per encoder")
    parser.add_argument("--chunk", type=int, default=65_536, help="decoder read size")
    parser.add_argument("--quick", action="store_true", help="20,000 events, 3 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.repeats = min(args.events, 20_000), min(args.repeats, 3)
    events = args.events - args.events % 2

    print("$ " + shlex.join([sys.executable, *sys.argv]))
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("python-subunit", "testtools")
    )
    print(f"Python {platform.python_version()} on {platform.machine()}; {versions}")
    print(f"{events:,} events = {events // 2:,} tests x (inprogress, success), with timestamps")

    ids, stamps_ns, stamps_dt = make_inputs(events)
    encode = encoders(ids, stamps_ns, stamps_dt)
    outputs = {name: function() for name, function in encode.items()}  # also a warm-up
    data = outputs["python-subunit StreamResultToBytes.status()"]
    assert all(out == data for out in outputs.values()), "the encoders disagree"
    print(f"all encoders wrote the same {len(data):,} bytes ({len(data) / events:.1f} B/event)")

    ratios = report("Encoding", time_round_robin(encode, args.repeats), events)
    encode_ratio = statistics.median(ratios)
    decode = decoders(data, events, args.chunk)
    ratios = report("Decoding", time_round_robin(decode, args.repeats), events)
    decode_ratio = statistics.median(ratios)
    print(f"\nencode ratio encode_status / python-subunit: {encode_ratio:.2f}x (median per round)")
    print(f"decode ratio PacketDecoder / python-subunit: {decode_ratio:.2f}x (median per round)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
