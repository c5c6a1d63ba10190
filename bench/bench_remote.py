"""What a remote worker (``--worker-command``) costs and brings, side by side in one run.

Usage::

    python bench/bench_remote.py [--repeat 5] [--trivial-tests 2000] [--sleep-tests 100]
                                 [--sleep 0.02] [--quick]

Each configuration is one warm ``python -m testserver --serve --no-reload`` started in this
run on the same generated suites (``bench/out/remote/``); a "remote" is a second testserver
reached through ``--worker-command "cd SUITE && python -m testserver --serve ..."``: a pipe
on this machine, so the figures price testserver's relay (decode each packet, tag it,
encode it again) and the extra process hop, not a network.

- *trivial*: ``--trivial-tests`` empty tests: the relay's cost per test, ``remote`` against
  ``local`` with one worker each;
- *sleep*: ``--sleep-tests`` tests that sleep ``--sleep`` s: the speed-up a remote brings
  when tests wait (``-j 1`` plus one remote against ``-j 1`` and ``-j 2``);
- *one test*: the round trip of a one-test batch, local against remote;
- *first batch*: a remote connects (and imports its suite) at its first unit; the first
  batch's round trip against the warm ones.

Each figure is the median of ``--repeat`` warm ``run-tests`` round trips (`_client.py`),
after one warm-up batch; ratios compare figures of this run only.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _client import Server  # noqa: E402
from bench_jobs import sleep_suite, timed, write_suite  # noqa: E402

from testserver.wire.commands import ListTests, RunTests  # noqa: E402
from testserver.wire.packets import decode_packets  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "remote"

CONFIGS = {
    "local -j 1": (1, 0),
    "remote only": (0, 1),
    "local -j 2": (2, 0),
    "-j 1 + remote": (1, 1),
}
"""Name -> (local workers, remote workers)."""


def trivial_suite(root: Path, tests: int) -> Path:
    per_module = 50
    modules = {}
    for m in range((tests + per_module - 1) // per_module):
        count = min(per_module, tests - m * per_module)
        body = "".join(f"    def test_{t:02d}(self):\n        pass\n\n" for t in range(count))
        modules[f"test_triv_{m:03d}"] = f"import unittest\n\n\nclass T(unittest.TestCase):\n{body}"
    return write_suite(root, "trivial", modules)


def start(suite: Path, name: str, local: int, remote: int) -> Server:
    serve = [sys.executable, "-m", "testserver", "--serve", "--no-reload", "-t", ".", "-s"]
    serve.append(suite.name)
    command = f"cd {shlex.quote(str(suite))} && exec {shlex.join(serve)}"
    argv = [*serve, "--jobs", str(local)]
    argv += [arg for _ in range(remote) for arg in ("--worker-command", command)]
    slug = name.replace(" ", "_").replace("+", "plus")
    server = Server(argv, suite, OUT / f"{suite.name}-{slug}.stderr")
    server.wait_hello()
    return server


def round_trips(server: Server, ids: tuple[str, ...], repeat: int, label: str) -> dict:
    """The first batch's round trip (a remote connects then), then the warm median."""
    first = server.request(RunTests(f"{label}-first", ids), decode=False)
    return {"first": first.seconds, "warm": timed(server, ids, repeat, label)}


def measure(suite: Path, repeat: int, configs: dict[str, tuple[int, int]]) -> dict:
    servers = {name: start(suite, name, *shape) for name, shape in configs.items()}
    try:
        reply = next(iter(servers.values())).request(ListTests("list"))
        ids = tuple(sorted(p.test_id for p in decode_packets(reply.raw) if p.status == "exists"))
        results = {}
        for name, server in servers.items():
            label = "".join(c if c.isalnum() else "_" for c in name)
            results[name] = round_trips(server, ids, repeat, f"all-{label}")
            results[name]["one"] = timed(server, ids[:1], max(repeat, 5), f"one-{label}")
        return results
    finally:
        for server in servers.values():
            server.close()


def report(title: str, results: dict, tests: int) -> None:
    base = results["local -j 1"]
    print(f"\n{title}: median warm round trip (s), against local -j 1 in this run")
    print(f"{'':>14} {'batch':>8} {'ratio':>7} {'us/test':>8} {'one test':>9} {'ratio':>7}")
    for name, row in results.items():
        print(
            f"{name:>14} {row['warm']:>8.3f} {row['warm'] / base['warm']:>6.2f}x "
            f"{row['warm'] / tests * 1e6:>8.1f} {row['one']:>9.4f} "
            f"{row['one'] / base['one']:>6.2f}x"
        )
    remote = results["remote only"]
    print(
        f"  remote only: first batch (connects, imports) {remote['first']:.3f} s, "
        f"{remote['first'] / remote['warm']:.1f}x a warm one"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--trivial-tests", type=int, default=2000)
    parser.add_argument("--sleep-tests", type=int, default=100)
    parser.add_argument("--sleep", type=float, default=0.02)
    parser.add_argument("--quick", action="store_true", help="repeat 2, 500 trivial tests")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat, args.trivial_tests = 2, 500
    OUT.mkdir(parents=True, exist_ok=True)
    trivial = trivial_suite(OUT, args.trivial_tests)
    sleepy = sleep_suite(OUT, args.sleep_tests, args.sleep)
    one_each = {name: CONFIGS[name] for name in ("local -j 1", "remote only")}
    results = {
        "trivial": measure(trivial, args.repeat, one_each),
        "sleep": measure(sleepy, args.repeat, CONFIGS),
    }
    report(f"trivial ({args.trivial_tests} empty tests)", results["trivial"], args.trivial_tests)
    sleep_title = f"sleep ({args.sleep_tests} tests x {args.sleep * 1000:g} ms)"
    report(sleep_title, results["sleep"], args.sleep_tests)
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
