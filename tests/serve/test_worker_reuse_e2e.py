"""End-to-end: ``--isolation worker`` reuses a worker across batches while they pass and
leave nothing behind that its checks see; each check, a failure, a reload and the batch
limit retire it (and the server says why); ``--isolation fork`` forks a fresh one per batch."""

from __future__ import annotations

import sys

import pytest
from processes import wait_gone
from serverproc import ServerProcess, Transcript, copy_project, save_as_editors_do

from testserver.serve.batch import MAX_BATCHES
from testserver.wire.commands import Cancel, RunTests, Stdin
from testserver.wire.control import RELOAD, STDIN_WANTED, WORKER_RETIRED

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

ARGS = ("-t", ".", "-s", "rstate")
PREFIX = "rstate.test_state.State."
CLEAN = PREFIX + "test_clean"
DEADLINE = 30


def _wait_dead(pid: int) -> None:
    assert not wait_gone([pid], DEADLINE), f"process {pid} did not die"


@pytest.fixture(scope="module")
def server():
    proc = ServerProcess("reuse_state", *ARGS)
    assert proc.hello["isolation"] == "worker"
    yield proc
    proc.kill()


_ids = iter(range(1_000_000))


def run(server: ServerProcess, name: str) -> tuple[int, Transcript]:
    """Run test ``name`` of the State class; return the pid of the worker that ran it."""
    test_id = PREFIX + name
    transcript = server.request(RunTests(f"r{next(_ids)}", (test_id,)))
    assert test_id in transcript.statuses(), transcript.packets
    return int(transcript.files(test_id, "stdout").split()[0]), transcript


def retired(transcript: Transcript) -> list[dict]:
    return transcript.controls(WORKER_RETIRED)


def test_clean_batches_run_in_one_worker(server):
    first, _ = run(server, "test_clean")
    for _ in range(3):
        pid, transcript = run(server, "test_clean")
        assert pid == first
        assert retired(transcript) == []
        assert transcript.complete["status"] == "ok"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("test_fail", "a test failed or erred"),
        ("test_chdir", "a test changed the working directory"),
        ("test_environ", "a test changed the environment (RSTATE_LEAK)"),
        ("test_sys_path", "a test changed sys.path"),
        ("test_thread", "a test left threads running (+1)"),
        ("test_child", "a test left child processes"),
        ("test_fd", "a test left file descriptors open"),
        ("test_import", "a test imported modules not imported at load time (colorsys)"),
        ("test_signal_handler", "a test changed signal handlers (SIGUSR2)"),
        ("test_umask", "a test changed the umask to 077"),
        ("test_alarm", "a test left an alarm or interval timer armed"),
    ],
)
def test_a_batch_that_leaves_state_behind_retires_its_worker(server, name, reason):
    before, _ = run(server, "test_clean")
    pid, transcript = run(server, name)
    assert pid == before  # it ran in the reused worker...
    [event] = retired(transcript)  # ...which the server then retired, saying why
    assert event["reason"].startswith(reason), event
    assert event["pid"] == pid
    assert event["id"] == transcript.complete["id"]
    packets = transcript.packets
    position = [i for i, p in enumerate(packets) if p.file_name == WORKER_RETIRED]
    assert position[0] < len(packets) - 1  # before the completion
    _wait_dead(pid)
    after, transcript = run(server, "test_clean")
    assert after != pid  # the next batch runs in a fresh worker
    assert retired(transcript) == []


def test_a_child_left_running_is_killed_with_the_retired_worker(server):
    _, transcript = run(server, "test_child")
    child = int(transcript.files(PREFIX + "test_child", "stdout").split()[1])
    assert retired(transcript)
    _wait_dead(child)


def test_a_worker_is_retired_after_its_batch_limit(server):
    first, _ = run(server, "test_clean")
    for _ in range(MAX_BATCHES):
        pid, transcript = run(server, "test_clean")
        assert pid == first
        events = retired(transcript)
        if events:
            break
    else:
        raise AssertionError(f"no worker-retired event in {MAX_BATCHES} batches")
    assert events[0]["batches"] == MAX_BATCHES
    assert events[0]["reason"].startswith(f"it ran {MAX_BATCHES} batches")
    assert run(server, "test_clean")[0] != first


def test_a_reload_drops_the_parked_worker(tmp_path):
    project = copy_project("reuse_state", tmp_path)
    proc = ServerProcess(project, *ARGS)
    try:
        first, _ = run(proc, "test_clean")
        again, _ = run(proc, "test_clean")
        assert again == first
        save_as_editors_do(project / "rstate" / "test_state.py", "pass\n", "self.assertTrue(1)\n")
        pid, transcript = run(proc, "test_clean")
        assert transcript.controls(RELOAD)
        assert retired(transcript) == []
        assert pid != first
        _wait_dead(first)
    finally:
        proc.kill()


def test_fork_isolation_forks_a_fresh_worker_for_every_batch():
    proc = ServerProcess("reuse_state", *ARGS, "--isolation", "fork")
    try:
        assert proc.hello["isolation"] == "fork"
        pids = []
        for _ in range(3):
            pid, transcript = run(proc, "test_clean")
            assert retired(transcript) == []
            pids.append(pid)
        assert len(set(pids)) == 3
    finally:
        proc.kill()


def test_a_batch_that_read_stdin_retires_its_worker(server):
    before, _ = run(server, "test_clean")
    server.send(RunTests("in", (PREFIX + "test_reads_stdin",)))
    server.read_until(lambda p: p.file_name == STDIN_WANTED)
    server.send(Stdin("data", b"typed\n"))
    transcript = server.wait_complete("in")
    assert b"typed" in transcript.files(PREFIX + "test_reads_stdin", "stdout")
    [event] = retired(transcript)
    assert event["reason"] == "the batch read stdin"
    assert run(server, "test_clean")[0] != before


def test_a_cancelled_batch_retires_its_worker(server):
    before, _ = run(server, "test_clean")
    waits = PREFIX + "test_waits"
    server.send(RunTests("long", (waits,)))
    server.read_until(lambda p: p.test_id == waits and p.status == "inprogress")
    server.send(Cancel("stop"))
    transcript = server.wait_complete("long")
    assert transcript.complete["status"] == "cancelled"
    [event] = retired(transcript)
    assert event["reason"] == "the batch was cancelled"
    assert event["pid"] == before
    assert run(server, "test_clean")[0] != before


def test_a_pool_parks_a_clean_worker_for_the_next_batch():
    proc = ServerProcess("reuse_state", *ARGS, "-j", "2")
    try:
        first, _ = run(proc, "test_clean")
        assert [run(proc, "test_clean")[0] for _ in range(2)] == [first, first]
        run(proc, "test_fail")  # a unit that failed: its worker is not parked
        assert run(proc, "test_clean")[0] != first
    finally:
        proc.kill()
