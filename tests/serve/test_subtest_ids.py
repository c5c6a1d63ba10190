"""Every id the server reports is accepted back, and ``--subtests fold`` counts as subunit.run.

``tools_subtests`` has ``Loops.test_all_pass`` (subtests i=0..2, all pass) and
``Loops.test_one_fails`` (i=0 passes, i=1 fails). Streams are decoded with python-subunit's
own parser; the testr and stestr tests run the real tools through the warm backends.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

import pytest
from daemonproc import DaemonHandle
from serverproc import ServerProcess, copy_project, run_oneshot, subunit_events

from testserver.wire.commands import RunTests

PARENT = "tsub.test_sub.Loops.test_one_fails"
PASSING = "tsub.test_sub.Loops.test_all_pass"
SUBTEST = f"{PARENT} (i=1)"
ARGS = ("discover", "-t", ".", "-s", "tsub")
BIN = Path(sys.executable).parent


def final_statuses(stream: bytes) -> list[tuple[str, str]]:
    """``(test id, status)`` of every final status python-subunit decodes, in order."""
    finals = {"success", "fail", "skip", "xfail", "uxsuccess"}
    return [
        (event["test_id"], event["test_status"])
        for event in subunit_events(stream)
        if event.get("test_status") in finals
    ]


def parents_run(stream: bytes) -> collections.Counter[str]:
    """How many times each test (not subtest) got an ``inprogress``."""
    return collections.Counter(
        event["test_id"]
        for event in subunit_events(stream)
        if event.get("test_status") == "inprogress" and " " not in event["test_id"]
    )


@pytest.mark.parametrize("isolation", ["fork", "none"])
def test_run_tests_takes_subtest_ids_and_runs_each_parent_once(isolation):
    server = ServerProcess("tools_subtests", *ARGS, "--isolation", isolation)
    try:
        ids = (SUBTEST, f"{PARENT} (i=0)", f"{PASSING} (i=2)", PARENT, f"{PASSING} [m] (i=1)")
        transcript = server.request(RunTests("r1", ids))
    finally:
        server.kill()
    assert transcript.complete["status"] == "ok", transcript.complete
    assert transcript.complete["unknown"] == []
    assert parents_run(transcript.raw) == {PARENT: 1, PASSING: 1}
    statuses = transcript.statuses()
    assert statuses[PARENT] == "fail" and statuses[SUBTEST] == "fail"
    assert statuses[PASSING] == "success"


def test_run_tests_still_reports_an_id_that_names_nothing():
    server = ServerProcess("tools_subtests", *ARGS)
    try:
        transcript = server.request(RunTests("r1", (f"{PARENT}x (i=1)", SUBTEST)))
    finally:
        server.kill()
    assert transcript.complete["unknown"] == [f"{PARENT}x (i=1)"]
    assert parents_run(transcript.raw)[PARENT] == 1


@pytest.mark.parametrize("isolation", ["fork", "none"])
def test_load_list_with_a_parent_and_its_subtests_runs_it_once(tmp_path, isolation):
    load_list = tmp_path / "ids"
    load_list.write_text(f"{SUBTEST}\n{PARENT}\n{PARENT} (i=0)\n{PASSING} (i=0)\n")
    result = run_oneshot(
        "tools_subtests", *ARGS, "--load-list", str(load_list), "--isolation", isolation
    )
    assert result.returncode == 0, result.stderr
    assert parents_run(result.stdout) == {PARENT: 1, PASSING: 1}
    assert ("tsub.test_sub.Loops.test_all_pass (i=2)", "success") in final_statuses(result.stdout)


def test_names_on_the_command_line_may_be_subtest_ids():
    result = run_oneshot("tools_subtests", SUBTEST, f"{PARENT} (i=0)", f"{PASSING} [m]")
    assert result.returncode == 0, result.stderr
    assert parents_run(result.stdout) == {PARENT: 1, PASSING: 1}


@pytest.mark.parametrize("isolation", ["fork", "none"])
def test_fold_gives_the_totals_of_subunit_run(isolation):
    ours = run_oneshot("tools_subtests", *ARGS, "--subtests", "fold", "--isolation", isolation)
    reference = subprocess.run(
        [sys.executable, "-m", "subunit.run", *ARGS],
        cwd=Path(__file__).parent.parent / "projects" / "tools_subtests",
        capture_output=True,
        timeout=120,
        check=False,
    )
    expected = [(PASSING, "success"), (PARENT, "fail")]
    assert sorted(final_statuses(ours.stdout)) == sorted(final_statuses(reference.stdout))
    assert sorted(final_statuses(ours.stdout)) == sorted(expected)
    tracebacks = {
        event["file_name"]: event["file_bytes"]
        for event in subunit_events(ours.stdout)
        if event.get("test_id") == PARENT and event.get("file_name")
    }
    assert b"AssertionError: 1 != 0" in tracebacks["traceback (i=1)"]
    stats = subprocess.run(
        [tool("subunit-stats"), "--no-passthrough"], input=ours.stdout, capture_output=True
    ).stdout.decode()
    assert re.search(r"^Total tests:\s+2$", stats, re.M), stats


def test_fold_in_serve_mode():
    server = ServerProcess("tools_subtests", *ARGS, "--subtests", "fold")
    try:
        transcript = server.request(RunTests("r1", (SUBTEST,)))
    finally:
        server.kill()
    assert final_statuses(transcript.raw) == [(PARENT, "fail")]
    assert b"1 != 0" in transcript.files(PARENT, "traceback (i=1)")


def test_an_unknown_subtests_mode_is_a_usage_error():
    result = run_oneshot("tools_subtests", *ARGS, "--subtests", "flat")
    assert result.returncode == 2
    assert b"invalid choice: 'flat'" in result.stderr


# -- the warm backends, driven by the real testr and stestr ---------------------------------


@pytest.fixture
def daemon():
    handle = DaemonHandle()
    yield handle
    handle.close()


def fix_the_failing_subtest(project: Path) -> None:
    source = project / "tsub" / "test_sub.py"
    text = source.read_text()
    assert "self.assertEqual(i, 0)" in text
    source.write_text(text.replace("self.assertEqual(i, 0)", "self.assertGreaterEqual(i, 0)"))


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return str(path)


def test_stestr_failing_after_a_fix_passes_through_the_warm_shim(daemon, tmp_path):
    project = copy_project("tools_subtests", tmp_path)
    (project / ".stestr.conf").write_text("[DEFAULT]\ntest_path=./tsub\ntop_dir=./\n")
    env = dict(daemon.env, PYTHON=f"{sys.executable} -m testserver.backends.testr --stestr")

    def stestr(*args: str) -> subprocess.CompletedProcess:
        command = [tool("stestr"), *args]
        return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)

    first = stestr("run")
    assert first.returncode == 1, first.stdout + first.stderr
    failing = stestr("failing", "--list").stdout.splitlines()
    assert SUBTEST in failing  # stestr recorded the subtest's own id
    fix_the_failing_subtest(project)
    again = stestr("run", "--failing")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "no test with id" not in again.stdout
    assert daemon.server_pids(), "the warm server ran the --failing run"


def write_testr_conf(project: Path, *options: str) -> None:
    (project / ".testr.conf").write_text(
        "[DEFAULT]\n"
        f"test_command={sys.executable} -m testserver.backends.testr discover -t . -s tsub "
        f"{' '.join(options)} $LISTOPT $IDOPTION\n"
        "test_id_option=--load-list $IDFILE\n"
        "test_list_option=--list\n"
    )


def run_testr(daemon: DaemonHandle, project: Path, *args: str) -> subprocess.CompletedProcess:
    command = [tool("testr"), *args]
    return subprocess.run(command, cwd=project, env=daemon.env, capture_output=True, text=True)


def test_testr_failing_after_a_fix_passes_through_the_warm_client(daemon, tmp_path):
    project = copy_project("tools_subtests", tmp_path)
    write_testr_conf(project)
    assert run_testr(daemon, project, "init").returncode == 0
    first = run_testr(daemon, project, "run")
    assert first.returncode == 1, first.stdout + first.stderr
    assert "Ran 7 tests" in first.stdout  # subtests count as tests (spec 5.3.2)
    assert SUBTEST in run_testr(daemon, project, "failing", "--list").stdout
    fix_the_failing_subtest(project)
    again = run_testr(daemon, project, "run", "--failing")
    assert again.returncode == 0, again.stdout + again.stderr
    assert re.search(r"^PASSED \(id=1\)", again.stdout, re.M), again.stdout
    assert daemon.server_pids()


def test_testr_counts_as_with_subunit_run_when_the_warm_client_folds(daemon, tmp_path):
    project = copy_project("tools_subtests", tmp_path)
    write_testr_conf(project, "--subtests", "fold")
    assert run_testr(daemon, project, "init").returncode == 0
    first = run_testr(daemon, project, "run")
    assert "Ran 2 tests" in first.stdout, first.stdout + first.stderr
    assert "FAILED (id=0, failures=1)" in first.stdout
    assert run_testr(daemon, project, "failing", "--list").stdout.split() == [PARENT]
