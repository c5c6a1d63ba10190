"""Following a worker's packets: what the server's CRC check costs, measured in one run.

Usage::

    python bench/bench_tracking.py [--tests N] [--repeats R] [--chunk BYTES] [--quick]

Builds the stream a worker writes for N tests (``inprogress``, a ``stdout`` attachment, then
``success``, with timestamps), cut into ``--chunk``-byte reads as from a pipe. Then times,
round-robin so that drift hits both alike, ``BatchTracker.feed`` behind:

- *checked*: ``split_packets(checked=True)``, what ``WorkerBatch`` does with a worker's pipe
  (length bounds and CRC32 of every packet: a test may write into the pipe);
- *unchecked*: ``split_packets``, the header only.

Both must agree on ``ran`` and ``outcomes``. Only the ratio means anything; cells are the
median (min-max) seconds per pass over the stream.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from testserver.wire.batchtracking import BatchTracker
from testserver.wire.packets import encode_status, file_packets
from testserver.wire.splitting import split_packets

START_NS = 1_704_067_200_000_000_000


def make_stream(tests: int) -> tuple[list[str], bytes]:
    ids = [f"pkg.mod_{i % 97:02d}.TestCase{i % 7}.test_{i:07d}" for i in range(tests)]
    parts = []
    for n, test_id in enumerate(ids):
        now = START_NS + n * 37_000
        parts.append(encode_status(test_id, "inprogress", now))
        parts += file_packets("stdout", b"some output\n", test_id=test_id, eof=True)
        parts.append(encode_status(test_id, "success", now + 1000))
    return ids, b"".join(parts)


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def tracking(ids: list[str], reads: list[bytes], *, checked: bool) -> Callable[[], dict]:
    def run() -> dict[str, int]:
        tracker = BatchTracker(ids)
        buffer = bytearray()
        for data in reads:
            buffer += data
            for raw in split_packets(buffer, checked=checked):
                tracker.feed(raw, 0.0)
        return {"ran": tracker.ran, **tracker.outcomes}

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--chunk", type=int, default=65_536)
    parser.add_argument("--quick", action="store_true", help="10,000 tests, 3 rounds")
    args = parser.parse_args(argv)
    tests, repeats = (10_000, 3) if args.quick else (args.tests, args.repeats)
    ids, stream = make_stream(tests)
    reads = chunks(stream, args.chunk)
    functions = {
        "checked": tracking(ids, reads, checked=True),
        "unchecked": tracking(ids, reads, checked=False),
    }
    results = {name: f() for name, f in functions.items()}
    assert len({str(r) for r in results.values()}) == 1, results
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            samples[name].append(time.perf_counter() - start)
    print(f"{tests} tests, {len(stream)} bytes in {len(reads)} reads, {repeats} rounds")
    for name, times in samples.items():
        print(f"  {name:18} {statistics.median(times):.4f} s ({min(times):.4f}-{max(times):.4f})")
    ratios = [c / u for c, u in zip(*samples.values(), strict=True)]
    print(f"ratio checked / unchecked: {statistics.median(ratios):.2f}x (median per round)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
