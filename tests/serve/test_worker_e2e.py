"""End-to-end: the standby worker's warm-up (done while idle) is invisible to the batch."""

from __future__ import annotations

import pytest
from serverproc import ServerProcess

from testserver.wire.commands import RunTests

ONE = "ewarm.test_fixtures.Fixtures.test_one"
TWO = "ewarm.test_fixtures.Fixtures.test_two"
ONE_BATCH = ["setUpModule", "setUpClass", "test_one", "tearDownModule"]


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
