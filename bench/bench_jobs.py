"""Speed-up of ``--jobs N`` on a warm server, and the memory each extra worker costs.

Usage::

    python bench/bench_jobs.py [--jobs 1,2,4] [--repeat 3] [--cpu-tests 10000]
                               [--cpu-work 10000] [--sleep-tests 200] [--sleep 0.02] [--quick]

Two generated suites (in ``bench/out/jobs/``), each served by one warm
``python -m testserver --serve -j N`` per N, started side by side in this run:

- *sleep*: ``--sleep-tests`` tests that each sleep ``--sleep`` seconds (issue 13: 200 x
  20 ms, serial 4 s; goal ``-j 4`` within 1.4 s);
- *cpu*: ``--cpu-tests`` tests that each do ``--cpu-work`` iterations of arithmetic, in
  modules that import a module building a large dict (the loaded suite workers share by
  copy-on-write); goal ``-j 2`` at least 1.6x faster than ``-j 1`` on a 2-core machine;
- *one test*: the round trip of a one-test batch at each N (goal: no worse with ``--jobs``).

Each figure is the median of ``--repeat`` warm ``run-tests`` round trips (frame written to
completion decoded, `_client.py`; ``3 x --repeat``, at least 9, for one test), after one
warm-up batch, the servers taking turns round by round so that the machine's load drifts
alike for all. The speed-up column is ``time(-j 1) / time(-j N)`` from the same run.

Memory: during a batch of ``-j 4`` on the cpu suite the server's children are sampled from
``/proc``: RSS, PSS and USS (private pages) of each worker (``smaps_rollup``), next to the
server's own RSS. USS is what one more worker really costs; PSS shares the copy-on-write
pages among the processes that map them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _client import Server  # noqa: E402

from testserver.scheduling.jobs import available_cpus  # noqa: E402
from testserver.wire.commands import RunTests  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "jobs"
SAMPLE_SECONDS = 0.05
"""How often the workers' memory is sampled during a batch."""


def write_suite(root: Path, name: str, modules: dict[str, str]) -> Path:
    """Write package ``name`` with ``modules`` under ``root/name``; the suite directory."""
    suite = root / name
    package = suite / name
    shutil.rmtree(package, ignore_errors=True)  # no module of an earlier, larger suite
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for module, text in modules.items():
        (package / f"{module}.py").write_text(text)
    return suite


def sleep_suite(root: Path, tests: int, seconds: float) -> Path:
    per_module = 20
    modules = {}
    for m in range((tests + per_module - 1) // per_module):
        count = min(per_module, tests - m * per_module)
        body = "".join(
            f"    def test_{t:02d}(self):\n        time.sleep({seconds})\n\n" for t in range(count)
        )
        modules[f"test_sleep_{m:03d}"] = (
            f"import time\nimport unittest\n\n\nclass T(unittest.TestCase):\n{body}"
        )
    return write_suite(root, "sleepy", modules)


def cpu_suite(root: Path, tests: int, work: int) -> Path:
    per_module = 50
    modules = {"heavy": "TABLE = {i: str(i) * 3 for i in range(300_000)}\n"}
    for m in range((tests + per_module - 1) // per_module):
        count = min(per_module, tests - m * per_module)
        body = "".join(
            f"    def test_{t:02d}(self):\n        spin({work})\n\n" for t in range(count)
        )
        modules[f"test_cpu_{m:03d}"] = (
            "import unittest\n\nfrom cpu import heavy  # noqa: F401\n\n\n"
            "def spin(n):\n    total = 0\n    for i in range(n):\n        total += i * i\n"
            f"    return total\n\n\nclass T(unittest.TestCase):\n{body}"
        )
    return write_suite(root, "cpu", modules)


def start(suite: Path, jobs: int) -> Server:
    name = suite.name
    argv = [sys.executable, "-m", "testserver", "--serve", "--no-reload", "-t", ".", "-s", name]
    server = Server([*argv, "-j", str(jobs)], suite, OUT / f"{name}-j{jobs}.stderr")
    server.wait_hello()
    return server


def round_trip(server: Server, ids: tuple[str, ...], label: str) -> float:
    """Seconds from writing a ``run-tests`` of ``ids`` to its completion (which must be ok)."""
    reply = server.request(RunTests(label, ids), decode=False)
    if reply.complete.get("status") != "ok":
        raise SystemExit(f"{label}: batch ended {reply.complete}")
    return reply.seconds


def rounds(servers: dict[int, Server], ids: tuple[str, ...], count: int, label: str) -> dict:
    """Median round trip per server, the servers taking turns (load drift hits all alike)."""
    for jobs, server in servers.items():
        round_trip(server, ids, f"{label}-warm-j{jobs}")
    seconds: dict[int, list[float]] = {jobs: [] for jobs in servers}
    for n in range(count):
        for jobs, server in servers.items():
            seconds[jobs].append(round_trip(server, ids, f"{label}-{n}-j{jobs}"))
    return {jobs: statistics.median(times) for jobs, times in seconds.items()}


def smaps(pid: int) -> dict[str, int]:
    """``Rss``, ``Pss`` and USS (private clean + dirty) of ``pid`` in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0])
    return {
        "rss": values["Rss"],
        "pss": values["Pss"],
        "uss": values["Private_Clean"] + values["Private_Dirty"],
    }


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()]


def worker_memory(server: Server, ids: tuple[str, ...]) -> dict[str, float]:
    """Sample the workers' memory while the server runs ``ids``; medians in MiB."""
    samples: list[dict[str, int]] = []
    thread = threading.Thread(target=server.request, args=(RunTests("mem", ids),))
    thread.start()
    while thread.is_alive():
        for pid in children(server.pid):
            try:
                samples.append(smaps(pid))
            except (OSError, ValueError, KeyError):
                pass  # it ended meanwhile
        time.sleep(SAMPLE_SECONDS)
    thread.join()
    if not samples:
        return {}
    mib = {key: statistics.median(s[key] for s in samples) / 1024 for key in samples[0]}
    mib["server_rss"] = server.rss_kib() / 1024
    return mib


def ids_of(suite: Path, server: Server) -> tuple[str, ...]:
    from testserver.wire.commands import ListTests

    reply = server.request(ListTests("list"))
    return tuple(sorted(_listed(reply.raw)))


def _listed(raw: bytes) -> list[str]:
    from testserver.wire.packets import decode_packets

    return [p.test_id for p in decode_packets(raw) if p.status == "exists" and p.test_id]


def measure(suite: Path, jobs_list: list[int], repeat: int) -> dict[int, dict[str, float]]:
    servers = {jobs: start(suite, jobs) for jobs in jobs_list}
    try:
        ids = ids_of(suite, servers[jobs_list[0]])
        batch = rounds(servers, ids, repeat, "all")
        one = rounds(servers, ids[:1], max(3 * repeat, 9), "one")
        return {jobs: {"batch": batch[jobs], "one": one[jobs]} for jobs in jobs_list}
    finally:
        for server in servers.values():
            server.close()


def report(name: str, results: dict[int, dict[str, float]]) -> None:
    base = results[min(results)]
    print(f"\n{name}: median warm round trip (s), speed-up against -j {min(results)}")
    print(f"{'jobs':>5} {'batch':>9} {'speed-up':>9} {'one test':>9} {'ratio':>7}")
    for jobs, row in sorted(results.items()):
        print(
            f"{jobs:>5} {row['batch']:>9.3f} {base['batch'] / row['batch']:>8.2f}x "
            f"{row['one']:>9.4f} {row['one'] / base['one']:>6.2f}x"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", default="1,2,4")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cpu-tests", type=int, default=10_000)
    parser.add_argument("--cpu-work", type=int, default=10_000)
    parser.add_argument("--sleep-tests", type=int, default=200)
    parser.add_argument("--sleep", type=float, default=0.02)
    parser.add_argument("--quick", action="store_true", help="repeat 1, 2,000 cpu tests")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat, args.cpu_tests = 1, 2000
    jobs_list = sorted({int(j) for j in args.jobs.split(",")})
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"CPUs {available_cpus()}, load average {os.getloadavg()[0]:.1f} at the start")
    sleepy = sleep_suite(OUT, args.sleep_tests, args.sleep)
    cpu = cpu_suite(OUT, args.cpu_tests, args.cpu_work)
    results = {
        "sleep": measure(sleepy, jobs_list, args.repeat),
        "cpu": measure(cpu, jobs_list, args.repeat),
    }
    report(f"sleep ({args.sleep_tests} tests x {args.sleep * 1000:g} ms)", results["sleep"])
    report(f"cpu ({args.cpu_tests} tests x {args.cpu_work} iterations)", results["cpu"])
    with start(cpu, max(jobs_list)) as server:
        memory = worker_memory(server, ids_of(cpu, server))
    print(f"\nmemory during a -j {max(jobs_list)} cpu batch (MiB, median per worker sample):")
    print(
        f"  server RSS {memory.get('server_rss', 0):.1f}; worker RSS {memory.get('rss', 0):.1f}, "
        f"PSS {memory.get('pss', 0):.1f}, USS (what one more worker costs) "
        f"{memory.get('uss', 0):.1f}"
    )
    print(f"load average {os.getloadavg()[0]:.1f} at the end (above the CPUs: shared machine)")
    results["memory"] = memory  # type: ignore[assignment]
    (OUT / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
