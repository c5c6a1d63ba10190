"""Makespan of the pure scheduler against the ideal and testr's static partition, simulated.

Usage::

    python bench/bench_schedule.py [--durations FILE] [--suites A,B] [--copies K] [--no-groups]
    python bench/bench_schedule.py --synthetic [--tests N] [--quick]
    ... [--workers 1,4,16,64] [--overhead S] [--noise SIGMA] [--new FRACTION] [--seed S]

No process runs: the pool is simulated, event by event, with the real
:class:`testserver.scheduling.scheduler.Scheduler` handing out the units, so the numbers say
how well the scheduling *policy* balances, beyond this 2-core machine.

The suite is, by default, a recorded one: ``bench/data/durations-public.json.gz``, each
test's duration under ``python -m subunit.run`` in 17 public suites (CPython's ``test``
modules, Twisted, testtools, python-subunit, fixtures...; written by
``bench/record_durations.py``, whose header says which versions, where and when), with its
fixture groups (a class with ``setUpClass``, a module with ``setUpModule``). It has a long
tail, as a large OpenStack unit-test suite does: most tests take a millisecond, a few take
seconds. ``--suites`` keeps some of its suites, ``--copies K`` makes it K times larger (K
copies of each test and group: a project of the same shape whose total is long enough for
N workers to beat its longest test), ``--no-groups`` ignores its fixture groups.
``--synthetic`` uses a seeded synthetic suite instead: durations log-normal
(median 10 ms, sigma 1.5), tests in classes of 1 to 20, a third of the classes with a
``setUpClass`` (their tests form one group).

The *history* the scheduler and testr see is each test's duration times a log-normal
run-to-run noise (``--noise``), and a fraction of the tests (``--new``) are new, with no
history. Each unit costs ``--overhead`` seconds on top of its tests (a round trip to the
worker).

Columns, per number of workers N (seconds of simulated time):

- *total/N*: the ideal of issue 13, every worker busy to the end;
- *bound*: max(total / N, the longest group): no schedule does better, since a group
  (one test, or the tests of one fixture) runs on one worker;
- *dynamic*: our scheduler, units that grow, new tests first, then longest first by the
  history;
- *testr*: testr's static partition (``partition_tests``: timed groups longest first to the
  least loaded partition, then partly timed ones by their known part, then untimed ones
  round-robin), one unit per partition;
- *first*: when dynamic scheduling delivers its first result (testr: at the end of a
  partition's first test too, but nothing is balanced after the start).

Ratios are to the bound; */total* is dynamic's to total / N. The goal of issue 13: dynamic
within 5 % of the ideal at N = 64, which a suite whose longest group exceeds total / 64 can
only meet against the bound.
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import json
import random
from dataclasses import dataclass
from pathlib import Path

from testserver.scheduling.scheduler import Scheduler

MEDIAN_SECONDS = 0.010
SIGMA = 1.5

RECORDED = Path(__file__).resolve().parent / "data" / "durations-public.json.gz"
"""The default suite, written by ``bench/record_durations.py``."""


@dataclass
class Suite:
    ids: list[str]
    actual: dict[str, float]
    history: dict[str, float]
    group_of: dict[str, str]
    about: str


def make_suite(tests: int, noise: float, new: float, seed: int) -> Suite:
    """The seeded synthetic suite of the module docstring (history drawn as it goes, so a
    seed gives the suite it always gave)."""
    rng = random.Random(seed)
    ids, actual, history, group_of = [], {}, {}, {}
    klass = 0
    while len(ids) < tests:
        klass += 1
        size = rng.randint(1, 20)
        fixture = rng.random() < 1 / 3
        for n in range(min(size, tests - len(ids))):
            test_id = f"pkg.mod{klass // 10}.Class{klass}.test_{n}"
            ids.append(test_id)
            actual[test_id] = MEDIAN_SECONDS * rng.lognormvariate(0, SIGMA)
            if rng.random() >= new:
                history[test_id] = actual[test_id] * rng.lognormvariate(0, noise)
            if fixture:
                group_of[test_id] = f"class:{klass}"
    return Suite(ids, actual, history, group_of, f"{tests} synthetic tests (seed {seed})")


def load_suite(
    path: Path,
    noise: float,
    new: float,
    seed: int,
    *,
    only: list[str] | None = None,
    groups: bool = True,
    copies: int = 1,
) -> Suite:
    """The suite recorded in ``path`` (see ``bench/record_durations.py``): all of it, or
    the suites named in ``only``; without ``groups``, every test is a group of its own;
    ``copies`` times over (``copyK/`` before each id and group), as a larger project with
    the same distribution would be."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as stream:
            data = json.load(stream)
        recorded, group_of = data["durations"], data["groups"]
        counts = {name: suite["tests"] for name, suite in data["header"]["suites"].items()}
    except (OSError, ValueError, KeyError, TypeError) as error:
        message = f"{path}: not a durations file of bench/record_durations.py: {error}"
        raise SystemExit(message) from None
    if sum(counts.values()) != len(recorded):
        raise SystemExit(
            f"{path}: the header counts {sum(counts.values())} tests, not {len(recorded)}"
        )
    unknown = sorted(set(only or ()) - set(counts))
    if unknown:
        raise SystemExit(f"{path}: no suite {', '.join(unknown)}; it has {', '.join(counts)}")
    ids, start = [], 0
    everything = list(recorded)
    for name, count in counts.items():  # the ids are in the header's suite order
        if not only or name in only:
            ids += everything[start : start + count]
        start += count
    if copies > 1:
        group_of = {
            f"copy{k}/{i}": f"copy{k}/{g}" for k in range(copies) for i, g in group_of.items()
        }
        recorded = {f"copy{k}/{i}": recorded[i] for k in range(copies) for i in ids}
        ids = [f"copy{k}/{i}" for k in range(copies) for i in ids]
    actual = {test_id: recorded[test_id] for test_id in ids}
    rng = random.Random(seed)
    history = {
        test_id: seconds * rng.lognormvariate(0, noise)
        for test_id, seconds in actual.items()
        if rng.random() >= new
    }
    chosen = len(only) if only else len(counts)
    about = f"{len(ids) // copies} tests recorded in {chosen} suites ({path.name})"
    if copies > 1:
        about += f" x {copies} copies"
    if not groups:
        group_of, about = {}, about + ", fixture groups ignored"
    return Suite(ids, actual, history, group_of, about)


def group_costs(suite: Suite) -> dict[str, float]:
    """Group key -> its tests' total actual duration."""
    groups: dict[str, float] = {}
    for test_id in suite.ids:
        key = suite.group_of.get(test_id, test_id)
        groups[key] = groups.get(key, 0.0) + suite.actual[test_id]
    return groups


def simulate(suite: Suite, workers: int, overhead: float) -> tuple[float, float]:
    """``(makespan, time of the first result)`` of the dynamic scheduler."""
    scheduler = Scheduler(
        suite.ids, workers=workers, group_of=suite.group_of, durations=suite.history
    )
    free = [(0.0, worker) for worker in range(workers)]
    makespan, first = 0.0, float("inf")
    while free:
        now, worker = heapq.heappop(free)
        unit = scheduler.worker_ready(worker)
        if unit is None:
            makespan = max(makespan, now)
            continue
        start = now + overhead
        first = min(first, start + suite.actual[unit.ids[0]])
        end = start + sum(suite.actual[i] for i in unit.ids)
        scheduler.unit_finished(worker)
        heapq.heappush(free, (end, worker))
    assert scheduler.done
    return makespan, first


def testr_partition(suite: Suite, workers: int, overhead: float) -> float:
    """Makespan of testr's ``partition_tests`` on the same history and groups: fully timed
    groups longest first, each to the partition of least expected time (then fewest tests),
    then partly timed groups by their known part the same way, then untimed groups
    round-robin; one unit per partition."""
    members: dict[str, list[str]] = {}
    for test_id in suite.ids:
        members.setdefault(suite.group_of.get(test_id, test_id), []).append(test_id)
    timed, partial, untimed = {}, {}, []
    for key, ids in members.items():
        known = sum(suite.history[i] for i in ids if i in suite.history)
        if all(i in suite.history for i in ids):
            timed[key] = known
        elif known:
            partial[key] = known
        else:
            untimed.append(key)
    # [expected, tests, index, actual] per partition
    planned = [[0.0, 0, n, 0.0] for n in range(workers)]
    for queue in (timed, partial):
        for key, expected in sorted(queue.items(), key=lambda item: item[1], reverse=True):
            planned[0][0] += expected
            planned[0][1] += len(members[key])
            planned[0][3] += sum(suite.actual[i] for i in members[key])
            planned.sort(key=lambda p: (p[0], p[1]))
    planned.sort(key=lambda p: p[2])
    for n, key in enumerate(untimed):
        planned[n % workers][3] += sum(suite.actual[i] for i in members[key])
    return overhead + max(p[3] for p in planned)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--durations", type=Path, help=f"a recorded suite (default: {RECORDED.name})"
    )
    parser.add_argument("--synthetic", action="store_true", help="the synthetic suite instead")
    parser.add_argument("--tests", type=int, default=20_000, help="synthetic tests")
    parser.add_argument("--quick", action="store_true", help="2,000 synthetic tests")
    parser.add_argument("--workers", default="1,4,16,64")
    parser.add_argument("--overhead", type=float, default=0.002, help="seconds per unit")
    parser.add_argument("--noise", type=float, default=0.3, help="history noise sigma")
    parser.add_argument("--new", type=float, default=0.1, help="fraction without history")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--suites", help="recorded suites to keep, separated by commas")
    parser.add_argument("--copies", type=int, default=1, help="the recorded suite K times")
    parser.add_argument(
        "--no-groups", action="store_true", help="ignore the recorded fixture groups"
    )
    args = parser.parse_args(argv)
    if args.synthetic and (args.durations or args.suites or args.no_groups or args.copies != 1):
        parser.error("--synthetic excludes --durations, --suites, --copies and --no-groups")
    if args.copies < 1:
        parser.error(f"--copies takes a positive number, not {args.copies}")
    try:
        workers = [int(n) for n in args.workers.split(",")]
    except ValueError:
        workers = []
    if not workers or min(workers) < 1:
        parser.error(f"--workers takes positive numbers separated by commas, not {args.workers!r}")
    if args.synthetic or (args.durations is None and not RECORDED.exists()):
        tests = 2_000 if args.quick else args.tests
        suite = make_suite(tests, args.noise, args.new, args.seed)
    else:
        suite = load_suite(
            args.durations or RECORDED,
            args.noise,
            args.new,
            args.seed,
            only=args.suites.split(",") if args.suites else None,
            groups=not args.no_groups,
            copies=args.copies,
        )
    report(suite, workers, args)
    return 0


def report(suite: Suite, workers: list[int], args: argparse.Namespace) -> None:
    """Print the suite's summary and one row per number of workers."""
    total = sum(suite.actual.values())
    longest = max(group_costs(suite).values())
    print(
        f"{suite.about}: {total:.1f} s in all, longest group {longest:.2f} s, "
        f"history noise {args.noise}, {args.new:.0%} new, {args.overhead * 1000:g} ms per unit"
    )
    header = ("N", "total/N", "bound", "dynamic", "/bound", "/total", "testr", "/bound", "first")
    widths = (4, 9, 9, 9, 7, 7, 9, 7, 7)
    print(" ".join(f"{name:>{width}}" for name, width in zip(header, widths)))
    for n in workers:
        ideal = total / n
        bound = max(ideal, longest)
        dynamic, first = simulate(suite, n, args.overhead)
        testr = testr_partition(suite, n, args.overhead)
        print(
            f"{n:>4} {ideal:>9.2f} {bound:>9.2f} {dynamic:>9.2f} {dynamic / bound:>7.3f} "
            f"{dynamic / ideal:>7.3f} {testr:>9.2f} {testr / bound:>7.3f} {first:>7.3f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
