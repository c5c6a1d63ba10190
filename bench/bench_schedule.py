"""Makespan of the pure scheduler against the ideal and testr's static partition, simulated.

Usage::

    python bench/bench_schedule.py [--tests N] [--workers 1,4,16,64] [--overhead S]
                                   [--noise SIGMA] [--new FRACTION] [--seed S] [--quick]

No process runs: the pool is simulated, event by event, with the real
:class:`testserver.scheduling.scheduler.Scheduler` handing out the units, so the numbers say
how well the scheduling *policy* balances, beyond this 2-core machine.

The suite (seeded, synthetic: no recorded distribution ships with testserver) has a long
tail, as a large OpenStack unit-test suite does: durations are log-normal (median 10 ms,
sigma 1.5, so a few tests take seconds), tests come in classes of 1 to 20, and a third of
the classes have a ``setUpClass`` (their tests form one group). The *history* the scheduler
and testr see is each test's duration times a log-normal run-to-run noise (``--noise``),
and a fraction of the tests (``--new``) are new, with no history. Each unit costs
``--overhead`` seconds on top of its tests (a round trip to the worker).

Columns, per number of workers N (seconds of simulated time):

- *ideal*: max(total / N, the longest group): no schedule does better;
- *dynamic*: our scheduler, units that grow, longest first by the history;
- *testr*: testr's static partition (``partition_tests``: timed groups longest first to the
  least loaded partition, then untimed ones round-robin), one unit per partition;
- *first*: when dynamic scheduling delivers its first result (testr: at the end of a
  partition's first test too, but nothing is balanced after the start).

The goal of issue 13: dynamic within 5 % of the ideal at N = 64.
"""

from __future__ import annotations

import argparse
import heapq
import random
from dataclasses import dataclass

from testserver.scheduling.scheduler import Scheduler

MEDIAN_SECONDS = 0.010
SIGMA = 1.5


@dataclass
class Suite:
    ids: list[str]
    actual: dict[str, float]
    history: dict[str, float]
    group_of: dict[str, str]


def make_suite(tests: int, noise: float, new: float, seed: int) -> Suite:
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
    return Suite(ids, actual, history, group_of)


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
    """Makespan of testr's ``partition_tests`` on the same history (no group regex
    crosses a class with a fixture here: groups as ours)."""
    groups: dict[str, list[str]] = {}
    for test_id in suite.ids:
        groups.setdefault(suite.group_of.get(test_id, test_id), []).append(test_id)
    timed, untimed = {}, []
    for key, members in groups.items():
        if all(i in suite.history for i in members):
            timed[key] = sum(suite.history[i] for i in members)
        else:
            untimed.append(key)
    planned = [[0.0, n, 0.0] for n in range(workers)]  # [expected, index, actual]
    for key, expected in sorted(timed.items(), key=lambda item: item[1], reverse=True):
        planned.sort()
        planned[0][0] += expected
        planned[0][2] += sum(suite.actual[i] for i in groups[key])
    planned.sort(key=lambda p: p[1])
    for n, key in enumerate(untimed):
        planned[n % workers][2] += sum(suite.actual[i] for i in groups[key])
    return overhead + max(p[2] for p in planned)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tests", type=int, default=20_000)
    parser.add_argument("--workers", default="1,4,16,64")
    parser.add_argument("--overhead", type=float, default=0.002, help="seconds per unit")
    parser.add_argument("--noise", type=float, default=0.3, help="history noise sigma")
    parser.add_argument("--new", type=float, default=0.1, help="fraction without history")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--quick", action="store_true", help="2,000 tests")
    args = parser.parse_args(argv)
    tests = 2_000 if args.quick else args.tests
    suite = make_suite(tests, args.noise, args.new, args.seed)
    total = sum(suite.actual.values())
    groups: dict[str, float] = {}
    for test_id in suite.ids:
        key = suite.group_of.get(test_id, test_id)
        groups[key] = groups.get(key, 0.0) + suite.actual[test_id]
    print(
        f"{tests} tests, {total:.1f} s in all, longest group {max(groups.values()):.2f} s, "
        f"history noise {args.noise}, {args.new:.0%} new, {args.overhead * 1000:g} ms per unit"
    )
    header = ("N", "ideal", "dynamic", "/ideal", "testr", "/ideal", "first")
    print(" ".join(f"{name:>{width}}" for name, width in zip(header, (4, 9, 9, 7, 9, 7, 7))))
    for workers in (int(n) for n in args.workers.split(",")):
        ideal = max(total / workers, max(groups.values()))
        dynamic, first = simulate(suite, workers, args.overhead)
        testr = testr_partition(suite, workers, args.overhead)
        print(
            f"{workers:>4} {ideal:>9.2f} {dynamic:>9.2f} {dynamic / ideal:>7.3f} "
            f"{testr:>9.2f} {testr / ideal:>7.3f} {first:>7.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
