"""Tests that must run together, and what each group is expected to cost.

A *group* is the tests that share a fixture (:mod:`testserver.engine.fixturegroups` says
which): the tests of one class with ``setUpClass``/``tearDownClass``, or all the tests of a
module with ``setUpModule``/``tearDownModule``. A test without such a fixture is a group of
its own. Both the scheduler and the CI shards hand out whole groups, so a fixture runs once
per worker or machine that needs it. Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MIN_COST = 1e-3
"""Seconds a test is taken to cost at least (its start-up), so a history of zeros still
lets units grow and shards balance by count."""

UNKNOWN_COST = 1.0
"""The cost of a test when no requested test has a known duration: all tests weigh the
same, so balancing by cost is balancing by count."""


@dataclass(frozen=True)
class Group:
    """Ids that go to one worker (or shard) together, in the order they were requested."""

    key: str
    ids: tuple[str, ...]
    cost: float


def is_duration(value: object) -> bool:
    """Whether ``value`` is a usable duration in seconds: a finite number, not negative."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def make_groups(
    ids: Sequence[str],
    group_of: Mapping[str, str] | None = None,
    durations: Mapping[str, float] | None = None,
) -> tuple[list[Group], bool]:
    """``(groups, whether any requested test has a known duration)``.

    Groups come in the order of their first requested id (``group_of`` maps an id to its
    group's key; an id it does not name is alone). A test of unknown duration costs the
    mean of the known ones, or :data:`UNKNOWN_COST` when none is known.
    """
    group_of = group_of or {}
    durations = durations or {}
    members: dict[str, list[str]] = {}
    for test_id in ids:
        members.setdefault(group_of.get(test_id, test_id), []).append(test_id)
    known = [durations[i] for i in dict.fromkeys(ids) if is_duration(durations.get(i))]
    default = max(MIN_COST, sum(known) / len(known)) if known else UNKNOWN_COST
    groups = [
        Group(key, tuple(names), sum(_cost(durations.get(i), default) for i in names))
        for key, names in members.items()
    ]
    return groups, bool(known)


def module_groups(ids: Sequence[str]) -> dict[str, str]:
    """Id -> ``"module:<name>"``, from the ids alone, for a client that cannot ask the
    engine: ``pkg.mod.Class.test_x`` is in module ``pkg.mod``, so a module's tests (and so
    any class or module fixture) stay together. An id with fewer than three dotted parts
    stands alone."""
    groups = {}
    for test_id in ids:
        parts = test_id.split(" ", 1)[0].rsplit(".", 2)
        if len(parts) == 3:
            groups[test_id] = f"module:{parts[0]}"
    return groups


def _cost(duration: float | None, default: float) -> float:
    return max(MIN_COST, duration) if is_duration(duration) else default  # type: ignore[arg-type]
