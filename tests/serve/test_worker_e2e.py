"""End-to-end: the standby worker: its warm-up (done while idle) is invisible to the batch,
and one that died while idle is replaced, not used."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from serverproc import ServerProcess

from testserver.wire.commands import RunTests

ONE = "ewarm.test_fixtures.Fixtures.test_one"
TWO = "ewarm.test_fixtures.Fixtures.test_two"
ONE_BATCH = ["setUpModule", "setUpClass", "test_one", "tearDownModule"]
DEADLINE = 30.0
"""Seconds to wait for a process to appear or die before the test fails."""


@pytest.fixture
def logged(tmp_path):
    log = tmp_path / "fixtures.log"
    log.write_text("")
    proc = ServerProcess("e2e_warmup", "-t", ".", "-s", "ewarm", env={"EWARM_LOG": str(log)})
    yield proc, log
    proc.kill()


def test_a_warmed_worker_runs_the_batch_and_nothing_else(logged):
    server, log = logged
    transcript = server.request(RunTests("one", (ONE,)))
    assert transcript.statuses() == {ONE: "success"}
    assert transcript.files(ONE, "stdout") == b"only this\n"
    assert transcript.complete["status"] == "ok"
    assert log.read_text().split() == ONE_BATCH


def test_every_batch_starts_from_the_loaded_state(logged):
    server, log = logged
    for index in range(3):
        transcript = server.request(RunTests(f"b{index}", (ONE, TWO)))
        assert transcript.statuses() == {ONE: "success", TWO: "success"}
    batch = ["setUpModule", "setUpClass", "test_one", "test_two", "tearDownModule"]
    assert log.read_text().split() == batch * 3


def _standby_of(server: ServerProcess) -> int:
    """The pid of the server's standby worker, once it has been forked."""
    pid = server.proc.pid
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.01)
    raise AssertionError("the server forked no standby worker")


def _wait_dead(pid: int) -> None:
    """Wait until ``pid`` has exited (a zombie its parent has not reaped yet, or gone)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.01)
    raise AssertionError(f"worker {pid} did not die")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_standby_that_died_while_idle_is_replaced(logged):
    server, log = logged
    standby = _standby_of(server)
    os.kill(standby, signal.SIGKILL)
    _wait_dead(standby)
    transcript = server.request(RunTests("after", (ONE,)))
    assert transcript.statuses() == {ONE: "success"}
    assert transcript.complete["status"] == "ok"
    assert not transcript.complete.get("crashes")
    assert log.read_text().split() == ONE_BATCH
