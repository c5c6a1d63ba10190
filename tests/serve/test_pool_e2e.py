"""End-to-end: ``--jobs N`` spreads a batch over N forked workers of one real server.

A real ``python -m testserver --serve -j N`` over real pipes; every transcript is decoded
with python-subunit's own ``ByteStreamToStreamResult``: the ``worker-K`` tags, the union of
the ids, a crash or a timeout whose unit is finished elsewhere, a cancel mid-batch, a class
fixture run once, ``stdin`` routed to the test that waits; one-shot ``-j 2`` against
``python -m subunit.run`` on the same project.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from serverproc import PROJECTS, ServerProcess, copy_project, run_oneshot, subunit_events
from subunit_reader import read_with_subunit

from testserver.wire.commands import Cancel, ListTests, RunTests, Stdin
from testserver.wire.control import STDIN_WANTED

PROJECT = "pool_demo"
LOAD = ("-t", ".", "-s", "pooltests")
M = "pooltests.test_many.Many."
FIX = "pooltests.test_fixture.WithSetUpClass."
F = "pooltests.test_faults."


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project, out of this repository: no timing history orders its units."""
    return copy_project(PROJECT, tmp_path, as_name="project")


def serve(project: Path, *args: str, faults: str = "", env: dict | None = None) -> ServerProcess:
    return ServerProcess(project, *LOAD, *args, env={"POOL_FAULTS": faults, **(env or {})})


def by_test(raw: bytes, *, strict: bool = True) -> dict[str, list[dict]]:
    """python-subunit's events of each test id (``strict``: no byte outside a packet)."""
    events: dict[str, list[dict]] = collections.defaultdict(list)
    decoded = subunit_events(raw) if strict else read_with_subunit(raw, non_subunit_name="out")
    for event in decoded:
        if event.get("test_id") is not None:
            events[event["test_id"]].append(event)
    return events


def worker_of(events: list[dict], jobs: int) -> str:
    """The one ``worker-K`` tag every event of a test carries."""
    tags = {frozenset(event["test_tags"] or ()) for event in events}
    assert len(tags) == 1, tags
    (tag,) = tags
    (name,) = tag
    assert name in {f"worker-{k}" for k in range(jobs)}
    return name


def final(events: list[dict]) -> str:
    return events[-1]["test_status"]


@pytest.mark.parametrize("jobs", [2, 3])
def test_every_test_runs_once_tagged_with_its_worker(project: Path, jobs: int) -> None:
    server = serve(project, "-j", str(jobs))
    try:
        assert server.hello["jobs"] == jobs
        ids = server.request(ListTests("l")).statuses()
        runnable = sorted(i for i in ids if not i.startswith(F + "Hang"))
        transcript = server.request(RunTests("r", tuple(runnable)))
        events = by_test(transcript.raw)
        assert sorted(events) == runnable
        workers = {test_id: worker_of(evs, jobs) for test_id, evs in events.items()}
        assert {final(evs) for evs in events.values()} == {"success"}
        assert len(set(workers.values())) > 1, "one worker ran everything"
        fixture = {workers[i] for i in runnable if i.startswith(FIX)}
        assert len(fixture) == 1, "the tests of one class fixture went to several workers"
        body = transcript.complete
        assert (body["status"], body["ran"], body["not_run"]) == ("ok", len(runnable), [])
    finally:
        server.kill()


def test_one_worker_writes_no_tags(project: Path) -> None:
    server = serve(project, "-j", "1")
    try:
        assert server.hello["jobs"] == 1
        transcript = server.request(RunTests("r", (M + "test_00", M + "test_01")))
        assert all(e["test_tags"] is None for e in subunit_events(transcript.raw))
    finally:
        server.kill()


def test_a_class_fixture_runs_once_in_one_worker(project: Path, tmp_path: Path) -> None:
    log = tmp_path / "setupclass.log"
    server = serve(project, "-j", "3", env={"POOL_FIXTURE_LOG": str(log)})
    try:
        ids = tuple(sorted(i for i in server.request(ListTests("l")).statuses() if "Hang" not in i))
        transcript = server.request(RunTests("r", ids))
        assert transcript.complete["status"] == "ok"
        assert len(log.read_text().split()) == 1
    finally:
        server.kill()


def test_a_crash_fails_its_test_and_the_rest_of_its_unit_runs_elsewhere(project: Path) -> None:
    server = serve(project, "-j", "2", faults="crash")
    try:
        crash = (F + "Crash.test_a_crash", F + "Crash.test_b_after", F + "Crash.test_c_after")
        ids = (*crash, *(M + f"test_{n:02d}" for n in range(6)))
        transcript = server.request(RunTests("r", ids))
        events = by_test(transcript.raw)
        assert sorted(events) == sorted(ids)
        assert [final(events[i]) for i in crash] == ["fail", "success", "success"]
        traceback = transcript.files(crash[0], "traceback")
        assert b"exited with status 3" in traceback
        for test_id in ids:
            worker_of(events[test_id], 2)
        body = transcript.complete
        assert body["status"] == "ok" and body["not_run"] == []
        assert body["crashes"] == [f"{crash[0]}: exited with status 3"]
        again = server.request(RunTests("again", ids[3:]))
        assert again.complete["status"] == "ok", "the pool did not replace the worker"
    finally:
        server.kill()


def test_a_hung_test_times_out_and_the_rest_of_its_unit_runs(project: Path) -> None:
    server = serve(project, "-j", "2", "--timeout", "2", faults="hang")
    try:
        ids = (F + "Hang.test_a_hang", F + "Hang.test_b_after", M + "test_00", M + "test_01")
        transcript = server.request(RunTests("r", ids))
        events = by_test(transcript.raw)
        assert [final(events[i]) for i in ids] == ["fail", "success", "success", "success"]
        assert b"timed out after 2 s" in transcript.files(ids[0], "traceback")
        assert transcript.complete["status"] == "ok"
    finally:
        server.kill()


@pytest.mark.parametrize("how", ["cancel", "SIGINT"])
def test_a_cancel_stops_every_worker_of_the_batch(project: Path, how: str) -> None:
    server = serve(project, "-j", "2", faults="block")
    try:
        blocked = (F + "Block.test_block_1", F + "Block.test_block_2")
        ids = (*blocked, *(M + f"test_{n:02d}" for n in range(4)))
        server.send(RunTests("r", ids))
        started: set[str] = set()

        def both_started(packet) -> bool:
            if packet.status == "inprogress" and packet.test_id in blocked:
                started.add(packet.test_id)
            return started == set(blocked)

        server.read_until(both_started)
        if how == "cancel":
            server.send(Cancel("c"))
        else:
            server.proc.send_signal(signal.SIGINT)
        transcript = server.wait_complete("r")
        statuses = transcript.statuses()
        assert [statuses[i] for i in blocked] == ["fail", "fail"]
        body = transcript.complete
        assert body["status"] == "cancelled"
        assert set(body["not_run"]) == set(ids[2:])
        if how == "cancel":
            assert server.wait_complete("c").complete["cancelled"] == "r"
        assert server.request(ListTests("alive")).complete["status"] == "ok"
    finally:
        server.kill()


def test_stdin_goes_to_the_test_that_waits_while_the_others_go_on(project: Path) -> None:
    server = serve(project, "-j", "2", faults="stdin")
    try:
        reader = F + "Input.test_readline"
        ids = (reader, *(M + f"test_{n:02d}" for n in range(6)))
        server.send(RunTests("r", ids))
        server.read_until(lambda p: p.file_name == STDIN_WANTED)
        assert server.request(Stdin("in", b"typed line\n")).complete["bytes"] == 11
        transcript = server.wait_complete("r")
        assert transcript.files(reader, "stdout") == b"read 'typed line\\n'\n"
        assert transcript.complete["status"] == "ok"
    finally:
        server.kill()


def test_oneshot_jobs_2_gives_what_subunit_run_gives() -> None:
    ours = run_oneshot(PROJECT, "-j", "2", "discover", *LOAD)
    assert ours.returncode == 0, ours.stderr
    theirs = subprocess.run(
        [sys.executable, "-m", "subunit.run", "discover", *LOAD],
        cwd=PROJECTS / PROJECT,
        capture_output=True,
        timeout=120,
        env={**os.environ, "POOL_FAULTS": ""},
    )
    ours_by_test = by_test(ours.stdout)
    theirs_by_test = by_test(theirs.stdout, strict=False)  # its tests print to its stdout
    assert {i: final(e) for i, e in ours_by_test.items()} == {
        i: final(e) for i, e in theirs_by_test.items()
    }
    assert {worker_of(e, 2) for e in ours_by_test.values()} == {"worker-0", "worker-1"}


def test_testserver_run_jobs_2_spreads_the_run_and_records_the_times(project: Path) -> None:
    command = [sys.executable, "-m", "testserver", "run", "-j", "2", "--no-daemon", *LOAD]
    done = subprocess.run(
        [*command, "--format", "subunit", "-k", "Many"],
        cwd=project,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    events = by_test(done.stdout)
    assert len(events) == 12
    assert {worker_of(e, 2) for e in events.values()} == {"worker-0", "worker-1"}
    assert (project / ".testserver" / "times.json").exists()
    bad = subprocess.run([*command, "-j", "0"], cwd=project, capture_output=True)
    assert bad.returncode == 2
    assert b"--jobs: the number of workers must be 1 to 256, not 0" in bad.stderr


def test_the_longest_test_by_the_projects_history_starts_early(project: Path) -> None:
    ids = tuple(M + f"test_{n:02d}" for n in range(12))
    times = dict.fromkeys(ids, 0.001) | {M + "test_09": 5.0}
    history = project / ".testserver" / "times.json"
    history.parent.mkdir()
    history.write_text(json.dumps({"version": 1, "times": times}))
    server = serve(project, "-j", "2")
    try:
        transcript = server.request(RunTests("r", ids))
        starts = [p for p in transcript.packets if p.status == "inprogress"]
        assert sorted(p.test_id for p in starts) == sorted(ids)
        by_worker: dict[str, list[str]] = {}
        for packet in starts:
            (worker,) = [tag for tag in packet.tags or () if tag.startswith("worker-")]
            by_worker.setdefault(worker, []).append(packet.test_id)
        # Each worker's first unit is a short test, for a result at once; the next is the
        # longest (in request order it would be the tenth). Per worker, so the order in which
        # two workers' packets interleave (the machine's load) does not matter.
        [tests] = [tests for tests in by_worker.values() if M + "test_09" in tests]
        assert tests.index(M + "test_09") == 1, by_worker
    finally:
        server.kill()
