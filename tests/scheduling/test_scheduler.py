"""The scheduler's rules (testserver.scheduling.scheduler), as examples and as properties.

Properties, checked by hypothesis on random batches, groups, durations, pool sizes and
random runs of the pool (units finishing, workers lost part-way, replaced or not):

1. every requested id ends exactly once: with a result in a finished unit, among the
   finished ids of a lost unit, or in ``not_run``; without losses every id is handed out
   exactly once;
2. a group is never split: a unit holding one id of a group holds all of that group's ids
   not finished yet, one after the other;
3. with one worker and no loss, the hand-out order is the requested order (a group stands
   where its first id is);
4. the run always ends: no worker idles while work is pending.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testserver.scheduling.scheduler import MAX_ATTEMPTS, Scheduler, SchedulerError, Unit

NAMES = [f"t{i}" for i in range(12)]
KEYS = ["class:A", "class:B", "module:m"]


def expected_order(ids: list[str], group_of: dict[str, str]) -> list[str]:
    """Groups in first-occurrence order, each group's ids in requested order."""
    members: dict[str, list[str]] = {}
    for test_id in ids:
        members.setdefault(group_of.get(test_id, test_id), []).append(test_id)
    return [test_id for names in members.values() for test_id in names]


class Pool:
    """Drives a scheduler as a pool would and checks the group rule on every hand-out."""

    def __init__(self, scheduler: Scheduler, ids: list[str], group_of: dict[str, str]) -> None:
        self.scheduler = scheduler
        self.group_of = group_of
        self.outstanding: dict[str, Counter[str]] = {}
        for test_id in ids:
            self.outstanding.setdefault(self.key(test_id), Counter())[test_id] += 1
        self.units: dict[object, Unit] = {}
        self.handed: list[Unit] = []
        self.completed: Counter[str] = Counter()
        self.lost = 0

    def key(self, test_id: str) -> str:
        return self.group_of.get(test_id, test_id)

    def take(self, unit: Unit | None) -> None:
        if unit is None:
            return
        self.handed.append(unit)
        self.units[unit.worker] = unit
        keys = [self.key(i) for i in unit.ids]
        for key in set(keys):
            assert Counter(i for i in unit.ids if self.key(i) == key) == self.outstanding[key]
            first, last = keys.index(key), len(keys) - keys[::-1].index(key)
            assert set(keys[first:last]) == {key}, f"group {key} not contiguous in {unit.ids}"

    def finish(self, worker: object, count: int | None = None) -> None:
        unit = self.units.pop(worker)
        done = unit.ids if count is None else unit.ids[:count]
        self.completed.update(done)
        for test_id in done:
            self.outstanding[self.key(test_id)][test_id] -= 1
            self.outstanding[self.key(test_id)] += Counter()  # drop zero counts


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_random_runs_keep_every_rule(data: st.DataObject) -> None:
    ids = data.draw(st.lists(st.sampled_from(NAMES), max_size=25), label="ids")
    group_of = data.draw(st.dictionaries(st.sampled_from(NAMES), st.sampled_from(KEYS)))
    durations = data.draw(
        st.dictionaries(st.sampled_from(NAMES), st.floats(0, 100, allow_nan=False))
    )
    workers = data.draw(st.integers(1, 4), label="workers")
    scheduler = Scheduler(ids, workers=workers, group_of=group_of, durations=durations)
    pool = Pool(scheduler, ids, group_of)
    for worker in range(workers):
        pool.take(scheduler.worker_ready(worker))
    live, fresh = set(range(workers)), workers
    for _ in range(200):
        if scheduler.done:
            break
        busy = sorted(pool.units, key=str)
        assert busy, "work is pending but no worker has any"
        idle = sorted(live - set(pool.units), key=str)
        if idle and data.draw(st.integers(0, 5)) == 0:  # a driver may ask again any time
            pool.take(scheduler.worker_ready(data.draw(st.sampled_from(idle))))
            continue
        worker = data.draw(st.sampled_from(busy))
        if data.draw(st.integers(0, 3)) > 0:
            pool.finish(worker)
            scheduler.unit_finished(worker)
            pool.take(scheduler.worker_ready(worker))
            continue
        unit = pool.units[worker]
        count = data.draw(st.integers(0, len(unit.ids)))
        replacing = data.draw(st.booleans())
        pool.finish(worker, count)
        pool.lost += 1
        live.discard(worker)
        for handed in scheduler.worker_lost(
            worker, unit.ids[:count], reason="worker died", replacing=replacing
        ):
            pool.take(handed)
        if replacing:
            fresh += 1
            live.add(fresh)
            pool.take(scheduler.worker_ready(fresh))
    assert scheduler.done
    not_run = Counter(test_id for test_id, _ in scheduler.not_run)
    assert pool.completed + not_run == Counter(ids)
    if not pool.lost:
        assert Counter(i for unit in pool.handed for i in unit.ids) == Counter(ids)
        assert not scheduler.not_run


@given(
    ids=st.lists(st.sampled_from(NAMES), max_size=30),
    group_of=st.dictionaries(st.sampled_from(NAMES), st.sampled_from(KEYS)),
    durations=st.dictionaries(st.sampled_from(NAMES), st.floats(0, 100)),
)
def test_one_worker_keeps_the_requested_order(
    ids: list[str], group_of: dict[str, str], durations: dict[str, float]
) -> None:
    scheduler = Scheduler(ids, workers=1, group_of=group_of, durations=durations)
    order: list[str] = []
    while (unit := scheduler.worker_ready("w")) is not None:
        order += unit.ids
        scheduler.unit_finished("w")
    assert order == expected_order(ids, group_of)
    assert scheduler.done


def test_units_start_with_one_test_and_grow_then_shrink_for_the_tail() -> None:
    scheduler = Scheduler([f"t{i}" for i in range(200)], workers=1)
    sizes = []
    while (unit := scheduler.worker_ready("w")) is not None:
        sizes.append(len(unit.ids))
        scheduler.unit_finished("w")
    assert sizes[:5] == [1, 2, 4, 8, 16]
    peak = sizes.index(max(sizes))
    assert sizes[peak:] == sorted(sizes[peak:], reverse=True)
    assert sum(sizes) == 200


def test_longest_first_after_a_short_first_unit() -> None:
    durations = {"short": 0.1, "mid": 5.0, "long": 50.0, "longer": 60.0}
    scheduler = Scheduler(["short", "mid", "long", "longer"], workers=2, durations=durations)
    assert scheduler.worker_ready("a").ids == ("short",)  # a first result at once
    assert scheduler.worker_ready("b").ids == ("mid",)
    scheduler.unit_finished("a")
    assert scheduler.worker_ready("a").ids == ("longer",)
    scheduler.unit_finished("b")
    assert scheduler.worker_ready("b").ids == ("long",)


def test_groups_with_a_new_test_go_before_the_known_ones() -> None:
    durations = {"short": 0.1, "long": 50.0, "C.old": 60.0}
    group_of = {"C.old": "class:C", "C.new": "class:C"}
    ids = ["short", "long", "C.old", "C.new", "new"]
    scheduler = Scheduler(ids, workers=2, group_of=group_of, durations=durations)
    assert scheduler.pending == ("C.old", "C.new", "new", "long", "short")
    assert scheduler.worker_ready("a").ids == ("short",)  # still a first result at once
    assert scheduler.worker_ready("b").ids == ("long",)
    scheduler.unit_finished("a")
    assert scheduler.worker_ready("a").ids[:2] == ("C.old", "C.new")


def test_a_group_goes_whole_even_past_the_unit_target() -> None:
    group_of = {"C.a": "class:C", "C.b": "class:C", "C.c": "class:C"}
    scheduler = Scheduler(["x", "C.a", "y", "C.b", "C.c"], workers=2, group_of=group_of)
    assert scheduler.worker_ready(1).ids == ("x",)
    assert scheduler.worker_ready(2).ids == ("C.a", "C.b", "C.c")


def test_a_lost_workers_unfinished_tests_go_to_an_idle_worker() -> None:
    scheduler = Scheduler(["a", "b", "c"], workers=2, group_of={"b": "g", "c": "g"})
    assert scheduler.worker_ready(1).ids == ("a",)
    assert scheduler.worker_ready(2).ids == ("b", "c")
    scheduler.unit_finished(1)
    assert scheduler.worker_ready(1) is None  # idles: nothing pending
    (unit,) = scheduler.worker_lost(2, ["b"], reason="worker 2 died")
    assert (unit.worker, unit.ids) == (1, ("c",))
    scheduler.unit_finished(1)
    assert scheduler.done and not scheduler.not_run


def test_with_no_worker_left_the_rest_is_not_run_with_the_reason() -> None:
    scheduler = Scheduler(["a", "b", "c"], workers=1)
    scheduler.worker_ready("w")
    assert scheduler.worker_lost("w", [], reason="the remote host hung up") == []
    assert scheduler.done
    assert scheduler.not_run == [
        (test_id, "the remote host hung up, and no worker is left to run it")
        for test_id in ("a", "b", "c")
    ]


def test_a_unit_that_kills_every_worker_is_given_up() -> None:
    scheduler = Scheduler(["poison"], workers=1)
    for attempt in range(MAX_ATTEMPTS):
        assert scheduler.worker_ready(attempt).ids == ("poison",)
        scheduler.worker_lost(attempt, [], reason="segfault", replacing=True)
    assert scheduler.done
    assert scheduler.not_run == [
        ("poison", f"segfault; given up after {MAX_ATTEMPTS} lost workers")
    ]


def test_abandon_gives_up_what_is_pending_only() -> None:
    scheduler = Scheduler(["a", "b", "c"], workers=1)
    scheduler.worker_ready("w")
    assert scheduler.abandon("cancelled") == ["b", "c"]
    scheduler.unit_finished("w")
    assert scheduler.done and scheduler.worker_ready("w") is None


def test_misuse_raises_naming_the_worker() -> None:
    scheduler = Scheduler(["a", "b"], workers=1)
    with pytest.raises(SchedulerError, match="'w' finished a unit it was not given"):
        scheduler.unit_finished("w")
    scheduler.worker_ready("w")
    with pytest.raises(SchedulerError, match="'w' is ready but its unit is not finished"):
        scheduler.worker_ready("w")
    with pytest.raises(SchedulerError, match="'x' was lost but never was ready"):
        scheduler.worker_lost("x", reason="?")
    with pytest.raises(ValueError, match="workers must be a positive integer, not 0"):
        Scheduler([], workers=0)
