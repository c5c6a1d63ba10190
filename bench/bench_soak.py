"""Soak: one warm server, many batches and reload cycles; does anything grow?

Usage::

    python bench/bench_soak.py            # 10,000 run-tests batches, 1,000 reload cycles
    python bench/bench_soak.py --quick    # 300 batches, 30 reload cycles (make bench)
    python bench/bench_soak.py --batches 2000 --reloads 200 --samples 10

It writes a small project to a new ``bench/out/soak-*/`` (removed at the end): a passing, a
failing, a skipped, a printing and a subtest test, and a module ``Edit`` whose helper is
rewritten by every reload cycle. It starts one ``python -m testserver --serve`` on it and
talks to it only through the protocol:

- a **batch** is one ``run-tests``: every test, or one of three fixed id lists in turn. Each
  completion must be ``ok`` with the same ``ran`` and ``outcomes`` as the first batch of its
  kind run on the same version of the edited code;
- a **reload cycle** rewrites ``soakpkg/helper.py`` (``VALUE = N``; every fifth cycle it also
  renames a test in ``test_edit.py``), sends ``reload`` (its generation must go up) and runs
  the edited tests, which must pass or fail as the new code says. Cycles are spread evenly
  among the batches.

After a warm-up (1 % of the work) and then evenly, it samples from ``/proc``: the server's
RSS, open file descriptors and threads, and its descendant processes (the workers and
anything they started) with their total RSS and descriptors. It prints one row per sample,
then compares the first three samples with the last three: a metric is **flat** when the
smallest of the last three is within 5 % (RSS), equal (descriptors, threads) or at most one
above (process counts: a worker in flight) the largest of the first three, else **GROWTH**.
A transient worker cannot flag growth; a leak, which only grows, does. At the end it sends
``quit`` and reports the processes of the server's tree still alive. Raw samples go to
``bench/out/soak.json``. Exit status 1 on a wrong result, growth, or a process left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _client import Server  # noqa: E402  (sibling script, not a package)

from testserver.wire.commands import Reload, RunTests  # noqa: E402
from testserver.wire.control import RELOAD, decode_control  # noqa: E402
from testserver.wire.packets import decode_packets  # noqa: E402

OUT = HERE / "out"
RSS_TOLERANCE = 0.05
"""RSS counts as flat within 5 %: allocator noise, not a leak of one object per batch."""

PKG = "soakpkg"
FIXED = f"{PKG}.test_fixed.Fixed."
EDIT = f"{PKG}.test_edit.Edit."
ID_LISTS: tuple[tuple[str, ...], ...] = (
    (),  # every test
    (FIXED + "test_pass", FIXED + "test_print"),
    (FIXED + "test_fail", FIXED + "test_skip", FIXED + "test_sub"),
    (FIXED + "test_print", EDIT + "test_value", FIXED + "test_pass"),
)
"""The batches, in turn; each kind must complete the same way every time."""

FIXED_MODULE = """import sys
import unittest


class Fixed(unittest.TestCase):
    def test_pass(self):
        self.assertTrue(True)

    def test_fail(self):
        self.assertEqual(1, 2)

    def test_skip(self):
        self.skipTest("soak")

    def test_print(self):
        print("out " * 50)
        sys.stderr.write("err\\n")

    def test_sub(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertLess(i, 2)
"""

EDIT_MODULE = """import unittest

from soakpkg import helper


class Edit(unittest.TestCase):
    def test_value(self):
        self.assertEqual(helper.VALUE % 2, 0, helper.VALUE)

    def test_extra_{extra}(self):
        self.assertEqual(helper.NAME, "extra_{extra}")
"""


def write_helper(project: Path, value: int, extra: int) -> None:
    text = f'VALUE = {value}\nNAME = "extra_{extra}"\n'
    (project / PKG / "helper.py").write_text(text)


def write_project(project: Path) -> None:
    package = project / PKG
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "test_fixed.py").write_text(FIXED_MODULE)
    (package / "test_edit.py").write_text(EDIT_MODULE.format(extra=0))
    write_helper(project, 0, 0)


# -- sampling -----------------------------------------------------------------------------


@dataclass
class Sample:
    batches: int
    reloads: int
    seconds: float
    rss_mib: float
    fds: int
    threads: int
    children: int
    descendants: int
    desc_rss_mib: float
    desc_fds: int


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line)


def _rss_mib(status: dict[str, str]) -> float:
    return int(status.get("VmRSS", "0 kB").split()[0]) / 1024


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def parents() -> dict[int, int]:
    """Parent pid of every live, non-zombie process."""
    result = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                result[int(entry)] = int(fields[1])
    return result


def descendants(pid: int) -> tuple[list[int], list[int]]:
    """(children, all descendants) of ``pid``."""
    tree = parents()
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for child, parent in tree.items() if parent in frontier]
        found += frontier
    return [child for child, parent in tree.items() if parent == pid], found


def sample(pid: int, batches: int, reloads: int, started: float) -> Sample:
    children, tree = descendants(pid)
    desc_rss, desc_fds = 0.0, 0
    for child in tree:
        try:
            desc_rss += _rss_mib(_status(child))
        except OSError:
            continue
        desc_fds += _fds(child)
    status = _status(pid)
    return Sample(
        batches,
        reloads,
        time.monotonic() - started,
        _rss_mib(status),
        _fds(pid),
        int(status["Threads"]),
        len(children),
        len(tree),
        desc_rss,
        desc_fds,
    )


# -- the work -----------------------------------------------------------------------------


class SoakError(AssertionError):
    """The server gave a wrong result during the soak."""


class Soak:
    def __init__(self, server: Server, project: Path) -> None:
        self.server = server
        self.project = project
        self.expected: dict[tuple[int, int], tuple[int, dict]] = {}
        self.generation = 0
        self.restarts = 0
        self.batches = 0
        self.reloads = 0

    def batch(self) -> None:
        kind = self.batches % len(ID_LISTS)
        ids = ID_LISTS[kind]
        reply = self.server.request(RunTests(f"b{self.batches}", ids), decode=False)
        done = reply.complete
        if done.get("status") != "ok":
            raise SoakError(f"batch {self.batches}: {done}")
        seen = (done["ran"], done["outcomes"])
        key = (kind, self.reloads % 2)  # Edit.test_value passes after even reload cycles
        if self.expected.setdefault(key, seen) != seen:
            raise SoakError(f"batch {self.batches}: {seen}, first {self.expected[key]}")
        self.batches += 1

    def reload_cycle(self) -> None:
        number = self.reloads + 1
        extra = (number // 5) % 3
        write_helper(self.project, number, extra)
        if number % 5 == 0:
            (self.project / PKG / "test_edit.py").write_text(EDIT_MODULE.format(extra=extra))
        reply = self.server.request(Reload(f"r{number}"))
        for packet in decode_packets(reply.raw):
            control = decode_control(packet)
            if control and control[0] == RELOAD and control[1].get("restarted"):
                self.restarts += 1
        generation = reply.complete.get("generation", -1)
        if reply.complete.get("status") != "ok" or generation <= self.generation:
            raise SoakError(f"reload {number}: {reply.complete} after {self.generation}")
        self.generation = generation
        ids = (EDIT + "test_value", EDIT + f"test_extra_{extra}")
        done = self.server.request(RunTests(f"e{number}", ids)).complete
        want = {"success": 1 + (number % 2 == 0), "fail": int(number % 2 == 1)}
        got = {key: done["outcomes"][key] for key in want}
        if done.get("status") != "ok" or got != want or done["generation"] != generation:
            raise SoakError(f"reload {number}: ran the old code? {done}, expected {want}")
        self.reloads = number


def run(batches: int, reloads: int, samples: int) -> tuple[list[Sample], Soak, list[int]]:
    OUT.mkdir(exist_ok=True)
    project = Path(tempfile.mkdtemp(prefix="soak-", dir=OUT))  # concurrent runs do not mix
    write_project(project)
    argv = [sys.executable, "-m", "testserver", "--serve", "-t", ".", "-s", PKG]
    server = Server(argv, project, OUT / f"{project.name}-stderr.log")
    seen: set[int] = set()
    try:
        server.wait_hello()
        soak = Soak(server, project)
        total = batches + reloads
        warmup = max(1, total // 100)
        marks = {warmup + (total - warmup) * i // samples for i in range(samples + 1)}
        started = time.monotonic()
        rows: list[Sample] = []
        for step in range(1, total + 1):
            if soak.reloads < reloads and step * reloads // total > soak.reloads:
                soak.reload_cycle()
            else:
                soak.batch()
            if step in marks:
                rows.append(sample(server.pid, soak.batches, soak.reloads, started))
                seen.update(descendants(server.pid)[1])
                print(row(rows[-1]), flush=True)
    finally:
        seen.update(descendants(server.pid)[1])
        server.close()
        shutil.rmtree(project)
    left = sorted(pid for pid in seen if pid in parents())
    return rows, soak, left


# -- report -------------------------------------------------------------------------------

HEADER = (
    f"{'batches':>8} {'reloads':>7} {'secs':>7} {'RSS MiB':>8} {'fds':>4} {'thr':>4} "
    f"{'kids':>4} {'desc':>4} {'desc RSS':>8} {'desc fds':>8}"
)


def row(s: Sample) -> str:
    return (
        f"{s.batches:8d} {s.reloads:7d} {s.seconds:7.1f} {s.rss_mib:8.1f} {s.fds:4d} "
        f"{s.threads:4d} {s.children:4d} {s.descendants:4d} {s.desc_rss_mib:8.1f} "
        f"{s.desc_fds:8d}"
    )


def verdicts(rows: list[Sample]) -> dict[str, str]:
    """Per metric: 'flat' or 'GROWTH', comparing the first and the last three samples.

    Process counts may be one above the first samples' largest: a worker forked for the next
    batch is caught or not, by chance. The descendants' RSS and descriptors are printed, not
    judged, for the same reason; a leak in a worker shows in the server or in the counts.
    """
    result = {}
    window = min(3, len(rows))
    allowance = {"rss_mib": 0.0, "fds": 0, "threads": 0, "children": 1, "descendants": 1}
    for name, extra in allowance.items():
        first = max(getattr(s, name) for s in rows[:window])
        last = min(getattr(s, name) for s in rows[-window:])
        limit = first * (1 + RSS_TOLERANCE) if name == "rss_mib" else first + extra
        word = "flat" if last <= limit else "GROWTH"
        result[name] = f"{word} (first {first:g}, last {last:g})"
    result["rss_mib"] += f"; {trend(rows)}"
    return result


def trend(rows: list[Sample]) -> str:
    """The server's RSS change from the first to the last sample, per 1,000 commands."""
    first, last = rows[0], rows[-1]
    commands = (last.batches + last.reloads) - (first.batches + first.reloads)
    change_kib = (last.rss_mib - first.rss_mib) * 1024
    per_1000 = change_kib * 1000 / commands if commands else 0.0
    return f"{change_kib:+.0f} KiB over {commands:,d} batches and cycles, {per_1000:+.0f} per 1,000"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 batches, 30 reload cycles")
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--reloads", type=int, default=1_000)
    parser.add_argument("--samples", type=int, default=20, help="samples after the warm-up")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.reloads, args.samples = 300, 30, 6
    if args.batches < 1 or args.reloads < 0 or args.samples < 1:
        parser.error("--batches and --samples must be >= 1, --reloads >= 0")
    print(f"soak: {args.batches} batches, {args.reloads} reload cycles, one server")
    print(HEADER)
    try:
        rows, soak, left = run(args.batches, args.reloads, args.samples)
    except SoakError as error:
        print(f"WRONG RESULT: {error}")
        return 1
    results = verdicts(rows)
    for name, verdict in results.items():
        print(f"{name:12} {verdict}")
    print(f"restarts: {soak.restarts}; generation {soak.generation}")
    print(f"processes of the server's tree alive after quit: {len(left)} {left or ''}".rstrip())
    report: dict[str, Any] = {
        "batches": soak.batches,
        "reloads": soak.reloads,
        "samples": [asdict(s) for s in rows],
        "verdicts": results,
        "left_after_quit": left,
    }
    (OUT / "soak.json").write_text(json.dumps(report, indent=1))
    grew = any(verdict.startswith("GROWTH") for verdict in results.values())
    return 1 if grew or left else 0


if __name__ == "__main__":
    sys.exit(main())
