"""Hand a batch's tests to N workers in units that start small and grow.

The pure core of parallel runs (issue 13): the process layer (or a simulation) tells a
:class:`Scheduler` what happened and carries out what it answers; the scheduler does no
I/O and reads no clock, so the simulation and the real pool run the same code.

- **Units.** A worker's first unit is one group, so the first results come at once; each
  next unit of that worker may cost up to :data:`GROWTH` times its last one, but never more
  than the pending work divided by :data:`TAIL_FACTOR` times the number of workers (as in
  factoring, a guided self-scheduling), so the tail is balanced.
- **Order.** With one worker, or when no duration is known, groups are handed out in the
  requested order. Otherwise groups with a test of unknown duration (new tests) first, then
  the others longest first (LPT), except that a worker's first unit is the shortest
  pending group, for a first result at once. A new test may be a long one: run early, it
  lands while the known work can still even the workers out (at the end, it would set the
  makespan; ``bench/bench_schedule.py``).
- **Groups** (:mod:`testserver.scheduling.groups`) are never split: a class or module
  fixture runs once per worker that needs it.
- **Events.** :meth:`Scheduler.worker_ready` → a :class:`Unit` (or ``None``: the worker
  idles); :meth:`Scheduler.unit_finished`; :meth:`Scheduler.worker_lost` → the unfinished
  ids of its unit go back to the front of the queue, handed to idle workers at once; when
  no worker can take them they become :attr:`Scheduler.not_run`, with the reason.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from testserver.scheduling.groups import Group, is_duration, make_groups

GROWTH = 2.0
"""A worker's next unit may cost this many times its last: units double while work lasts."""

TAIL_FACTOR = 2.0
"""A unit costs at most pending / (TAIL_FACTOR x workers): factoring's half-share, which
leaves enough small units at the end to even out the workers' finishing times."""

MAX_ATTEMPTS = 3
"""Hand-outs of one group before it is given up as not run: a unit that kills every worker
it reaches (or workers that die before they start) must not go round for ever."""


class SchedulerError(Exception):
    """The driver misused the scheduler (an event that makes no sense now); a bug."""


@dataclass(frozen=True)
class Unit:
    """Tests for one worker to run in this order; ``number`` counts units from 1."""

    number: int
    worker: Hashable
    ids: tuple[str, ...]
    cost: float


class Scheduler:
    """Hands the ``ids`` of one batch to ``workers`` workers; see the module docstring."""

    def __init__(
        self,
        ids: Sequence[str],
        *,
        workers: int,
        group_of: Mapping[str, str] | None = None,
        durations: Mapping[str, float] | None = None,
    ) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, not {workers!r}")
        groups, known = make_groups(ids, group_of, durations)
        self.longest_first = workers > 1 and known
        if self.longest_first:
            known = durations or {}
            # new work first, then longest first; stable: ties keep the request order
            groups.sort(key=lambda g: (all(is_duration(known.get(i)) for i in g.ids), -g.cost))
        self.workers = workers
        self._queue: deque[Group] = deque(groups)
        self._pending = sum(group.cost for group in groups)
        self._running: dict[Hashable, tuple[Unit, list[Group]]] = {}
        self._last_cost: dict[Hashable, float] = {}
        self._live: set[Hashable] = set()
        self._idle: list[Hashable] = []
        self._attempts: Counter[str] = Counter()
        self._numbers = itertools.count(1)
        self.not_run: list[tuple[str, str]] = []
        """``(id, reason)`` per requested id that no worker will run (a twice-requested id
        can have two entries)."""

    @property
    def done(self) -> bool:
        """Nothing is pending and no unit is out."""
        return not self._queue and not self._running

    @property
    def pending(self) -> tuple[str, ...]:
        """Ids not handed out yet, in hand-out order."""
        return tuple(i for group in self._queue for i in group.ids)

    def worker_ready(self, worker: Hashable) -> Unit | None:
        """``worker`` can take work: its next unit, or ``None`` (it idles until work returns)."""
        if worker in self._running:
            raise SchedulerError(f"worker {worker!r} is ready but its unit is not finished")
        self._live.add(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        unit = self._hand_out(worker)
        if unit is None:
            self._idle.append(worker)
        return unit

    def unit_finished(self, worker: Hashable) -> None:
        """``worker`` finished its unit (each id got its result or a not-run from the driver)."""
        if worker not in self._running:
            raise SchedulerError(f"worker {worker!r} finished a unit it was not given")
        del self._running[worker]

    def worker_lost(
        self,
        worker: Hashable,
        finished: Iterable[str] = (),
        *,
        reason: str,
        replacing: bool = False,
    ) -> list[Unit]:
        """``worker`` is gone; ``finished`` are the ids of its unit that got a result.

        The others go back to the front of the queue (a group's rest stays together) and
        are handed to idle workers at once: the units returned. When no live worker is left
        and ``replacing`` is false, everything pending becomes not run, with ``reason``.
        """
        if worker not in self._live:
            raise SchedulerError(f"worker {worker!r} was lost but never was ready")
        self._live.discard(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        if worker in self._running:
            self._requeue(self._running.pop(worker)[1], finished, reason)
        if not self._live and not replacing:
            self.abandon(f"{reason}, and no worker is left to run it")
            return []
        units = []
        while self._idle and self._queue:
            unit = self._hand_out(self._idle.pop(0))
            if unit is not None:
                units.append(unit)
        return units

    def abandon(self, reason: str) -> list[str]:
        """Give up on everything pending (a cancel, no worker can be had): the ids now
        not run with ``reason``."""
        given_up = list(self.pending)
        self.not_run.extend((test_id, reason) for test_id in given_up)
        self._queue.clear()
        self._pending = 0.0
        return given_up

    def _hand_out(self, worker: Hashable) -> Unit | None:
        if not self._queue:
            return None
        last = self._last_cost.get(worker)
        if last is None and self.longest_first:
            taken = [self._queue.pop()]  # the shortest: a first result at once
        else:
            taken = [self._queue.popleft()]
        cost = taken[0].cost
        if last is not None:  # a first unit is one group; later ones grow to the target
            target = min(last * GROWTH, self._pending / (TAIL_FACTOR * self.workers))
            while self._queue and cost + self._queue[0].cost <= target:
                cost += self._queue[0].cost
                taken.append(self._queue.popleft())
        self._pending = max(0.0, self._pending - cost)
        self._attempts.update(group.key for group in taken)
        ids = tuple(i for group in taken for i in group.ids)
        unit = Unit(next(self._numbers), worker, ids, cost)
        self._running[worker] = (unit, taken)
        self._last_cost[worker] = cost
        return unit

    def _requeue(self, groups: list[Group], finished: Iterable[str], reason: str) -> None:
        done = Counter(finished)
        back = []
        for group in groups:
            rest = []
            for test_id in group.ids:
                if done[test_id] > 0:
                    done[test_id] -= 1
                else:
                    rest.append(test_id)
            if not rest:
                continue
            if self._attempts[group.key] >= MAX_ATTEMPTS:
                why = f"{reason}; given up after {MAX_ATTEMPTS} lost workers"
                self.not_run.extend((test_id, why) for test_id in rest)
                continue
            share = group.cost * len(rest) / len(group.ids)
            back.append(Group(group.key, tuple(rest), share))
        for group in reversed(back):
            self._queue.appendleft(group)
            self._pending += group.cost
