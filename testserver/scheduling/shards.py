"""CI shards: a deterministic share of the suite for machine K of N (``--shard K/N``).

Every machine of a CI matrix computes the same partition of the same suite and keeps its
own share, so each test runs in exactly one shard and the union of the shards' streams is
a full run. Whole groups (:mod:`testserver.scheduling.groups`) go to one shard, so a class
or module fixture runs on one machine. The partition is greedy longest-processing-time
first: groups by decreasing cost (ties by key), each to the least loaded shard (ties to the
lowest number). The cost is the timing history's when there is one, so the shards take
about equally long (as Jest, Playwright and pytest-split balance); without one every test
costs the same and the shards get about equally many tests. The requested order does not
matter, only the ids, their groups and their durations: all machines must see the same
three. Pure: no I/O, no clock.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from testserver.scheduling.groups import make_groups

MAX_SHARDS = 10_000
"""The largest N of ``--shard K/N``: more machines than that is a typo, not a CI matrix."""


@dataclass(frozen=True)
class Shard:
    """Machine ``index`` (from 1) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ValueError(f"the number of shards must be 1 to {MAX_SHARDS}, not {self.count}")
        if not 1 <= self.index <= self.count:
            raise ValueError(
                f"shard {self.index} of {self.count} does not exist: K of K/N counts from 1 to N"
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"K/N"`` as a :class:`Shard`; ValueError with a message for the user otherwise."""
    index, slash, count = text.strip().partition("/")
    if not slash or not index.isdigit() or not count.isdigit():
        raise ValueError(f"a shard is K/N, machine K of N counting from 1 (e.g. 2/4), not {text!r}")
    return Shard(int(index), int(count))


def assign(
    ids: Sequence[str],
    count: int,
    *,
    group_of: Mapping[str, str] | None = None,
    durations: Mapping[str, float] | None = None,
) -> dict[str, int]:
    """The shard (from 1) of every group key of ``ids``, balanced by cost."""
    groups, _ = make_groups(ids, group_of, durations)
    loads = [(0.0, shard) for shard in range(1, count + 1)]
    owner: dict[str, int] = {}
    for group in sorted(groups, key=lambda group: (-group.cost, group.key)):
        load, shard = heapq.heappop(loads)
        owner[group.key] = shard
        heapq.heappush(loads, (load + group.cost, shard))
    return owner


def select_shard(
    ids: Sequence[str],
    shard: Shard,
    *,
    group_of: Mapping[str, str] | None = None,
    durations: Mapping[str, float] | None = None,
) -> list[str]:
    """The ids of ``ids`` in ``shard``, in their order."""
    group_of = group_of or {}
    owner = assign(ids, shard.count, group_of=group_of, durations=durations)
    return [i for i in ids if owner[group_of.get(i, i)] == shard.index]
