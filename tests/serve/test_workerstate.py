"""The reused worker's state checks, in this process: what each says, and what passes.

Each check that a test can trigger in a worker is driven end to end by
``test_worker_reuse_e2e.py``; here are the ones a test cannot trigger cheaply there (a
closed descriptor, a removed module, memory growth) and the clean case.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import types

import pytest

from testserver.serve.workerstate import RSS_GROWTH_LIMIT, WorkerState

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_nothing_changed_is_fit():
    before = WorkerState.capture()
    assert WorkerState.capture().changed_since(before) is None


def test_a_closed_descriptor_is_seen():
    fd = os.open(os.devnull, os.O_RDONLY)
    before = WorkerState.capture()
    os.close(fd)
    reason = WorkerState.capture().changed_since(before)
    assert reason == f"a test closed file descriptors it did not open ({fd})"


def test_a_removed_module_is_seen():
    sys.modules["testserver_probe_module"] = types.ModuleType("testserver_probe_module")
    try:
        before = WorkerState.capture()
    finally:
        del sys.modules["testserver_probe_module"]
    reason = WorkerState.capture().changed_since(before)
    assert reason == "a test removed modules from sys.modules (testserver_probe_module)"


def test_memory_growth_past_the_bound_is_seen_and_below_it_is_not():
    before = WorkerState.capture()
    within = dataclasses.replace(before, rss=before.rss + RSS_GROWTH_LIMIT)
    assert within.changed_since(before) is None
    past = dataclasses.replace(before, rss=before.rss + RSS_GROWTH_LIMIT + (1 << 20))
    assert past.changed_since(before) == (
        f"its resident memory grew by {(RSS_GROWTH_LIMIT >> 20) + 1} MiB "
        f"(limit {RSS_GROWTH_LIMIT >> 20} MiB)"
    )


def test_many_changes_are_listed_briefly():
    before = WorkerState.capture()
    keys = [f"TESTSERVER_PROBE_{n}" for n in range(7)]
    os.environ.update(dict.fromkeys(keys, "1"))
    try:
        reason = WorkerState.capture().changed_since(before)
    finally:
        for key in keys:
            del os.environ[key]
    assert reason == (
        "a test changed the environment (TESTSERVER_PROBE_0, TESTSERVER_PROBE_1, "
        "TESTSERVER_PROBE_2, TESTSERVER_PROBE_3, TESTSERVER_PROBE_4 and 2 more)"
    )
