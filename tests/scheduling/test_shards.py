"""CI shards (testserver.scheduling.shards): a partition, whole groups, balanced, stable.

Properties (hypothesis): for any suite, groups, history and N, the N shards partition the
ids (each in exactly one, order kept); a group is in one shard; the requested order does
not change who gets what; without a history the shards' test counts differ by at most
the largest group; with one, the greedy bound holds (no shard exceeds the mean load by
more than the costliest group).
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from testserver.scheduling.groups import make_groups
from testserver.scheduling.shards import MAX_SHARDS, Shard, parse_shard, select_shard

IDS = st.lists(st.text("abcdef.", min_size=1, max_size=6), unique=True, max_size=40)


def groups_for(ids: list[str], seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    return {i: f"g{rng.randrange(8)}" for i in ids if rng.random() < 0.5}


def all_shards(ids, count, **kwargs) -> list[list[str]]:
    return [select_shard(ids, Shard(k, count), **kwargs) for k in range(1, count + 1)]


@given(ids=IDS, count=st.integers(1, 7), seed=st.integers(0, 99), timed=st.booleans())
def test_shards_partition_the_suite_by_whole_groups(ids, count, seed, timed) -> None:
    group_of = groups_for(ids, seed)
    rng = random.Random(seed)
    durations = {i: rng.expovariate(1.0) for i in ids if timed and rng.random() < 0.8}
    shards = all_shards(ids, count, group_of=group_of, durations=durations)
    assert Counter(i for shard in shards for i in shard) == Counter(ids)
    for shard in shards:
        assert shard == [i for i in ids if i in shard]  # the requested order
    owner = {group_of.get(i, i): k for k, shard in enumerate(shards) for i in shard}
    assert all(owner[group_of.get(i, i)] == k for k, shard in enumerate(shards) for i in shard)
    shuffled = list(ids)
    rng.shuffle(shuffled)
    again = all_shards(shuffled, count, group_of=group_of, durations=durations)
    assert [set(shard) for shard in again] == [set(shard) for shard in shards]


@given(ids=IDS, count=st.integers(1, 7), seed=st.integers(0, 99))
def test_without_history_shards_balance_the_count(ids, count, seed) -> None:
    group_of = groups_for(ids, seed)
    sizes = [len(shard) for shard in all_shards(ids, count, group_of=group_of)]
    largest = max(Counter(group_of.get(i, i) for i in ids).values(), default=0)
    assert max(sizes) - min(sizes) <= largest


@given(ids=IDS, count=st.integers(1, 7), seed=st.integers(0, 99))
def test_with_history_no_shard_exceeds_the_mean_by_more_than_one_group(ids, count, seed):
    rng = random.Random(seed)
    group_of = groups_for(ids, seed)
    durations = {i: rng.paretovariate(1.5) for i in ids}
    groups, _ = make_groups(ids, group_of, durations)
    cost = {group.key: group.cost for group in groups}
    loads = [
        sum(cost[key] for key in {group_of.get(i, i) for i in shard})
        for shard in all_shards(ids, count, group_of=group_of, durations=durations)
    ]
    heaviest = max(cost.values(), default=0.0)
    assert max(loads) <= sum(loads) / count + heaviest + 1e-9


def test_history_balances_time_not_count() -> None:
    durations = {"slow": 60.0, **{f"fast{i}": 1.0 for i in range(6)}}
    first, second = all_shards(list(durations), 2, durations=durations)
    assert first == ["slow"]
    assert len(second) == 6


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2", "a shard is K/N, machine K of N counting from 1 (e.g. 2/4), not '2'"),
        ("a/4", "a shard is K/N"),
        ("-1/4", "a shard is K/N"),
        ("0/4", "shard 0 of 4 does not exist: K of K/N counts from 1 to N"),
        ("5/4", "shard 5 of 4 does not exist"),
        ("1/0", f"the number of shards must be 1 to {MAX_SHARDS}, not 0"),
        (f"1/{MAX_SHARDS + 1}", "the number of shards must be"),
    ],
)
def test_a_bad_shard_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_shard(text)


def test_a_good_shard_parses() -> None:
    assert parse_shard(" 3/8 ") == Shard(3, 8)
    assert str(Shard(3, 8)) == "3/8"
