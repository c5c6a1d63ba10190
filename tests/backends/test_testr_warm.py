"""testr and stestr driving warm servers through ``testserver-client`` and the stestr shim.

These run the real ``testr`` (testrepository) and ``stestr`` commands from the virtualenv:
``testr init && testr run`` (serial and ``--parallel --concurrency 2``) and ``stestr run``
with ``PYTHON`` pointing at the shim, and check the counts they print. The ``daemon_parallel``
project's two tests pass only when they run at the same time in two processes, so a passing
parallel run proves the daemon served the partitions in parallel.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from daemonproc import DaemonHandle
from serverproc import copy_project

BIN = Path(sys.executable).parent
CLIENT = f"{sys.executable} -m testserver.backends.testr"
"""What ``testserver-client`` is once installed as a console script."""

STESTR_PYTHON = f"{sys.executable} -m testserver.backends.testr --stestr"
"""What ``testserver-stestr-python`` is once installed as a console script."""


def tool(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return path


@pytest.fixture
def daemon():
    handle = DaemonHandle()
    yield handle
    handle.close()


def write_testr_conf(project: Path, start: str) -> None:
    (project / ".testr.conf").write_text(
        "[DEFAULT]\n"
        f"test_command={CLIENT} discover -t . -s {start} $LISTOPT $IDOPTION\n"
        "test_id_option=--load-list $IDFILE\n"
        "test_list_option=--list\n"
    )


def run_testr(daemon: DaemonHandle, project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(tool("testr")), *args],
        cwd=project,
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_stestr(daemon: DaemonHandle, project: Path, start: str, *args: str):
    (project / ".stestr.conf").write_text(f"[DEFAULT]\ntest_path=./{start}\ntop_dir=./\n")
    env = dict(daemon.env, PYTHON=STESTR_PYTHON)
    return subprocess.run(
        [str(tool("stestr")), "run", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def counts(output: str) -> dict[str, int]:
    """stestr's totals: ``{"Passed": 4, "Failed": 1, ...}``."""
    return {name: int(n) for name, n in re.findall(r"^ - (\w[\w ]*): (\d+)$", output, re.M)}


def test_testr_run_is_warm_from_the_second_run(daemon, tmp_path):
    project = copy_project("daemon_basic", tmp_path)
    write_testr_conf(project, "dbasic")
    assert run_testr(daemon, project, "init").returncode == 0
    first = run_testr(daemon, project, "run")
    assert first.returncode == 1, first.stdout + first.stderr  # test_fail fails
    assert "Ran 6 tests" in first.stdout
    assert "FAILED (id=0, failures=1, skips=1)" in first.stdout
    assert "AssertionError: 1 != 2" in first.stdout
    [server] = daemon.status()["servers"]

    second = run_testr(daemon, project, "run")
    assert "Ran 6 tests" in second.stdout
    assert "FAILED (id=1, failures=1, skips=1)" in second.stdout
    [again] = daemon.status()["servers"]
    assert again["pid"] == server["pid"]  # warm: the same loaded server
    assert again["runs"] == server["runs"] + 1

    failing = run_testr(daemon, project, "run", "--failing")  # lists, then --load-list
    assert "Ran 1 (-5) tests" in failing.stdout
    assert "FAILED (id=2, failures=1)" in failing.stdout
    assert [s["pid"] for s in daemon.status()["servers"]] == [server["pid"]]


def test_testr_parallel_runs_partitions_in_parallel(daemon, tmp_path):
    project = copy_project("daemon_parallel", tmp_path)
    write_testr_conf(project, "dpar")
    assert run_testr(daemon, project, "init").returncode == 0
    first = run_testr(daemon, project, "run", "--parallel", "--concurrency", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Ran 2 tests" in first.stdout
    assert "PASSED (id=0)" in first.stdout
    pids = daemon.server_pids()
    assert len(pids) == 2

    second = run_testr(daemon, project, "run", "--parallel", "--concurrency", "2")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Ran 2 tests" in second.stdout
    assert daemon.server_pids() == pids  # both partitions found warm servers


def test_testr_list_with_import_errors_fails_like_oneshot(daemon, tmp_path):
    project = copy_project("daemon_broken", tmp_path)
    write_testr_conf(project, "dbroken")
    assert run_testr(daemon, project, "init").returncode == 0
    result = run_testr(daemon, project, "list-tests")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Non-zero exit code (2) from test listing" in output
    assert "no_such_module_for_testserver" in output


def test_stestr_run_parallel_through_the_shim(daemon, tmp_path):
    project = copy_project("daemon_parallel", tmp_path)
    result = run_stestr(daemon, project, "dpar", "--concurrency", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert counts(result.stdout)["Passed"] == 2
    assert counts(result.stdout)["Failed"] == 0
    pids = daemon.server_pids()
    assert len(pids) == 2
    again = run_stestr(daemon, project, "dpar", "--concurrency", "2")
    assert counts(again.stdout)["Passed"] == 2
    assert daemon.server_pids() == pids


def test_stestr_counts_match_the_suite(daemon, tmp_path):
    project = copy_project("daemon_basic", tmp_path)
    result = run_stestr(daemon, project, "dbasic")
    assert result.returncode == 1, result.stdout + result.stderr
    totals = counts(result.stdout)
    assert (totals["Passed"], totals["Failed"], totals["Skipped"]) == (4, 1, 1)
    serial = run_stestr(daemon, project, "dbasic", "--serial")  # no listing, no --load-list
    assert (counts(serial.stdout)["Passed"], counts(serial.stdout)["Failed"]) == (4, 1)
    assert len(daemon.server_pids()) >= 1
