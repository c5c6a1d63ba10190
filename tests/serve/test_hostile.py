"""The hostile-test corpus: whatever a test does, no result is lost and nothing is left.

``tests/projects/hostile`` holds one small test per hostile behaviour (signals to itself,
process deaths, children and threads that outlive their test, writes to every fd, closed
stdio, odd output, a monkeypatched ``TestCase.run``). Serve mode, one-shot mode and
``testserver run`` each run the whole corpus and check the same invariants:

- the stream parses whole with python-subunit;
- every requested id ends with exactly one final status, or is explicitly not run;
- nothing started by a test is alive once the batch is over (after a grace period);
- (serve mode) the next batch in the same server still runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from processes import descendants, describe, wait_gone
from serverproc import ServerProcess, copy_project, subunit_events

from testserver.wire.commands import ListTests, RunTests, Stdin

FINAL = {"success", "fail", "skip", "xfail", "uxsuccess"}
GRACE_SECONDS = 30.0
"""How long processes a test started may take to disappear after their batch."""

EXPECTED = {
    "hostile.test_signals.OwnSignals.test_a_sigint_caught": "success",
    "hostile.test_signals.OwnSignals.test_b_sigint_uncaught_is_an_error": "fail",
    "hostile.test_signals.OwnSignals.test_c_sigint_own_handler": "success",
    "hostile.test_signals.OwnSignals.test_d_sigint_default_handler_is_pythons": "success",
    "hostile.test_signals.OwnSignals.test_e_unittest_install_handler": "success",
    "hostile.test_signals.OwnSignals.test_f_sigalrm_own_handler": "success",
    "hostile.test_signals.OwnSignals.test_g_sigterm_kills_the_process": "fail",
    "hostile.test_signals.OwnSignals.test_g2_signal_to_the_import_time_pid": "success",
    "hostile.test_signals.OwnSignals.test_h_after_signals": "success",
    "hostile.test_process.EndsItsProcess.test_a_os_exit": "fail",
    "hostile.test_process.EndsItsProcess.test_b_segfault": "fail",
    "hostile.test_process.EndsItsProcess.test_c_after_deaths": "success",
    "hostile.test_process.LeavesProcesses.test_f_after_children": "success",
    "hostile.test_fds.Descriptors.test_a_consecutive_fds": "success",
    "hostile.test_fds.Descriptors.test_b_closerange_finds_free_fds": "success",
    "hostile.test_fds.Descriptors.test_c_write_low_fds": "success",
    "hostile.test_fds.Descriptors.test_f_print_after_close": "success",
    "hostile.test_fds.Descriptors.test_g_huge_output": "success",
    "hostile.test_fds.Descriptors.test_h_non_utf8_output": "success",
    "hostile.test_fds.Descriptors.test_i_reads_stdin": "success",
    "hostile.test_fds.Descriptors.test_j_isatty_tells_the_truth": "success",
    "hostile.test_zz_patched_run.PatchesRun.test_a_patch": "success",
}
NOT_RUN = {"hostile.test_zz_patched_run.PatchesRun.test_b_victim"}


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the corpus and the environment that records the pids it leaves."""
    pids = tmp_path / "pids"
    pids.mkdir()
    project = copy_project("hostile", tmp_path)
    return project, {"HOSTILE_PIDS": str(pids)}


def final_statuses(events: list[dict]) -> Counter[tuple[str, str]]:
    """``(test id, status)`` counts of the final statuses of runnable tests."""
    return Counter(
        (event["test_id"], event["test_status"])
        for event in events
        if event["test_id"] and event["test_status"] in FINAL and "subtest" not in event
    )


def outcome_per_id(events: list[dict]) -> dict[str, list[str]]:
    """Every final status reported for each test id, in order."""
    outcomes: dict[str, list[str]] = {}
    for event in events:
        if event["test_id"] and event["test_status"] in FINAL:
            outcomes.setdefault(event["test_id"], []).append(event["test_status"])
    return outcomes


def left_processes(pid_dir: Path) -> list[int]:
    """Recorded pids still alive (not zombies) after the grace period."""
    return wait_gone((int(path.name) for path in pid_dir.iterdir()), GRACE_SECONDS)


def check_accounting(events: list[dict], ids: list[str], not_run: set[str]) -> None:
    """Exactly one final status per requested id, or an explicit not-run; known outcomes."""
    assert not [e for e in events if e["test_id"] == "subunit.parser"], "stream corrupted"
    outcomes = outcome_per_id(events)
    for test_id in ids:
        if test_id in not_run:
            assert test_id not in outcomes or outcomes[test_id] == ["fail"], test_id
            continue
        assert len(outcomes.get(test_id, [])) == 1, (test_id, outcomes.get(test_id))
    for test_id, status in EXPECTED.items():
        assert outcomes[test_id] == [status], (test_id, outcomes[test_id])


@pytest.mark.heavy
def test_serve_mode_survives_the_corpus(corpus) -> None:
    project, env = corpus
    server = ServerProcess(project, "-t", ".", "-s", "hostile", "--timeout", "30", env=env)
    try:
        ids = [p.test_id for p in server.request(ListTests("l")).packets if p.status == "exists"]
        assert len(ids) == len(EXPECTED) + len(NOT_RUN) + 7  # 7 whose outcome may vary
        server.send(RunTests("r", tuple(ids)))
        server.send(Stdin("eof", b""))
        transcript = server.wait_complete("r", timeout=120)
        complete = transcript.complete
        events = subunit_events(transcript.raw)
        check_accounting(events, ids, set(complete["not_run"]))
        assert set(complete["not_run"]) == NOT_RUN
        assert complete["status"] == "incomplete", complete
        assert left_processes(Path(env["HOSTILE_PIDS"])) == []
        output = b"".join(e["file_bytes"] for e in events if e["file_name"] == "stdout")
        assert b"thread still talking" in output and b"child still talking" in output
        again = server.request(RunTests("again", (ids[-1], ids[0])))
        assert again.complete["status"] == "ok", again.complete
        assert sorted(again.statuses().values()) == ["success", "success"]
        deadline = time.monotonic() + GRACE_SECONDS
        left = descendants(server.proc.pid)
        while len(left) > 1 and time.monotonic() < deadline:  # the retired worker may linger
            time.sleep(0.05)
            left = descendants(server.proc.pid)
        assert len(left) <= 1, [describe(pid) for pid in left]  # at most the standby worker
    finally:
        server.kill()


def run_testserver(corpus, *args: str) -> subprocess.CompletedProcess:
    """``python -m testserver ARGS -t . -s hostile`` on the corpus, to its end."""
    project, env = corpus
    return subprocess.run(
        [sys.executable, "-m", "testserver", *args, "-t", ".", "-s", "hostile"],
        cwd=project,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env={**os.environ, **env},
        timeout=180,
    )


@pytest.mark.heavy
def test_oneshot_mode_survives_the_corpus(corpus) -> None:
    _, env = corpus
    result = run_testserver(corpus, "--timeout", "30")
    events = subunit_events(result.stdout)
    ids = sorted(outcome_per_id(events))
    check_accounting(events, ids, NOT_RUN)
    victim = next(iter(NOT_RUN))
    assert outcome_per_id(events)[victim] == ["fail"]
    reasons = [
        event["file_bytes"]
        for event in events
        if event["test_id"] == victim and event["file_name"] == "traceback"
    ]
    assert b"not run" in b"".join(reasons)
    assert result.returncode == 1, result.stderr
    assert left_processes(Path(env["HOSTILE_PIDS"])) == []


@pytest.mark.heavy
def test_testserver_run_survives_the_corpus(corpus) -> None:
    """The terminal client: a failure summary naming what did not run, exit 1, nothing left."""
    _, env = corpus
    result = run_testserver(corpus, "run", "--no-daemon")
    out = result.stdout.decode("utf-8", "replace")
    assert result.returncode == 1, out + result.stderr.decode("utf-8", "replace")
    victim = next(iter(NOT_RUN))
    assert victim in out.split("NOT RUN", 1)[1], out
    for test_id, status in EXPECTED.items():
        if status == "fail":
            assert test_id in out, test_id
    assert left_processes(Path(env["HOSTILE_PIDS"])) == []
