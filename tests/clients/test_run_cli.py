"""``testserver`` at a terminal: the warm daemon, the options people know, streams for tools.

End to end over real processes: ``python -m testserver ...`` subprocesses, a pseudo-terminal
(``pty.openpty``) where being at a terminal matters, the real daemon in the project's own
``.testserver/`` directory, and python-subunit's real filters (``subunit2junitxml``,
``subunit-stats``, ``subunit2pyunit``) reading ``testserver run --format subunit``.
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from processes import descendants, describe, gone, session_processes
from serverproc import copy_project
from terminal import read_terminal, run_at_terminal

from testserver.clients.project import DAEMON_DIR_ENV, find_root

TIMEOUT = 120
BIN = Path(sys.executable).parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")
ENV = {
    k: v
    for k, v in os.environ.items()
    if k not in ("TESTSERVER_NO_DAEMON", DAEMON_DIR_ENV, "NO_COLOR", "COLUMNS")
}
DEMO = ("-t", ".", "-s", "cdemo")


def ts(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m testserver ARGS`` with pipes and no terminal; no process may be left."""
    process = subprocess.Popen(
        [sys.executable, "-m", "testserver", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env or ENV,
        start_new_session=True,
    )
    out, err = process.communicate(timeout=TIMEOUT)
    assert session_processes(process.pid) == [], "the command left processes behind"
    return subprocess.CompletedProcess(process.args, process.returncode, out, err.decode())


def at_terminal(*args: str, cwd: Path, stdin_tty: bool = True) -> tuple[int, str]:
    """``python -m testserver ARGS`` with stdout and stderr (and stdin) on a pseudo-terminal;
    return its exit status and everything it showed, colour codes and CRs removed."""
    code, shown = run_at_terminal(
        [sys.executable, "-m", "testserver", *args],
        cwd=cwd,
        env=ENV,
        stdin_tty=stdin_tty,
        stderr_tty=True,
    )
    return code, ANSI.sub("", shown.decode("utf-8", "replace")).replace("\r\n", "\n")


# -- the command line --------------------------------------------------------------------


def test_help_lists_the_commands(tmp_path):
    result = ts("--help", cwd=tmp_path)
    assert result.returncode == 0
    text = result.stdout.decode()
    for command in ("run", "list", "watch", "debug", "bridge", "daemon"):
        assert re.search(rf"^  {command} +\S.+$", text, re.MULTILINE), command


def test_misspelled_command_is_a_usage_error_with_a_suggestion(tmp_path):
    project = copy_project("cli_pass", tmp_path, "p")
    result = ts("runn", cwd=project)
    assert result.returncode == 2
    assert result.stdout == b""  # nothing ran: no subunit
    assert "unknown command 'runn'; did you mean `testserver run`?" in result.stderr
    unknown = ts("frobnicate", cwd=project)
    assert unknown.returncode == 2 and "unknown command 'frobnicate'" in unknown.stderr


def test_a_module_name_is_still_a_test_name(tmp_path):
    project = copy_project("cli_pass", tmp_path, "p")
    result = ts("cpass", cwd=project)  # a package here, as `python -m unittest cpass`
    assert result.returncode == 0, result.stderr  # (a package without tests: none run)
    assert "unknown command" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [(), ("--serve",), ("--list",), ("run", "--format", "subunit", "--no-daemon")],
    ids=["oneshot", "serve", "list", "run-format-subunit"],
)
def test_binary_subunit_is_never_written_to_a_terminal(tmp_path, args):
    project = copy_project("cli_pass", tmp_path, "p")
    code, shown = at_terminal(*args, cwd=project, stdin_tty=False)
    assert code == 2
    assert "refusing to write binary subunit to a terminal" in shown
    assert "\ufffd" not in shown and "\x00" not in shown


def test_debug_takes_the_loading_options_of_run(tmp_path):
    project = copy_project("cli_demo", tmp_path, "p")
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "testserver",
            "debug",
            *DEMO,
            "cdemo.test_outcomes.Outcomes.test_pass",
        ],
        cwd=project,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=ENV,
        timeout=TIMEOUT,
    )
    assert process.returncode == 0, process.stderr
    assert b"test_pass: success" in process.stderr


# -- run: choosing and showing -----------------------------------------------------------


@pytest.fixture
def demo(tmp_path) -> Path:
    return copy_project("cli_demo", tmp_path, "demo")


def ran_ids(result: subprocess.CompletedProcess) -> list[str]:
    return [
        e["test_id"]
        for e in map(json.loads, result.stdout.splitlines())
        if e["event"] == "test" and e["status"] != "inprogress" and e["kind"] == "test"
    ]


def test_k_filters_like_unittest(demo):
    result = ts("run", *DEMO, "--format", "json", "-k", "*.test_pas*", "-k", "Child", cwd=demo)
    assert sorted(ran_ids(result)) == [
        "cdemo.test_outcomes.Outcomes.test_pass",
        "cdemo.test_sub.Child.test_inherited",
    ]


def test_file_and_directory_paths_select_their_tests(demo):
    by_file = ts("run", *DEMO, "--format", "json", "cdemo/test_stdin.py", cwd=demo)
    assert ran_ids(by_file) == ["cdemo.test_stdin.Stdin.test_reads_end_of_input"]
    by_dir = ts("run", *DEMO, "--format", "json", "./cdemo/", "-k", "test_pass", cwd=demo)
    assert ran_ids(by_dir) == ["cdemo.test_outcomes.Outcomes.test_pass"]
    missing = ts("run", *DEMO, "cdemo/test_nothing.py", cwd=demo)
    assert missing.returncode == 2
    assert "no such file or directory: cdemo/test_nothing.py" in missing.stderr


def test_verbose_prints_a_line_per_test_with_error_distinct_from_fail(demo):
    result = ts("run", *DEMO, "-v", "Outcomes", cwd=demo)
    lines = result.stdout.decode().splitlines()
    assert "cdemo.test_outcomes.Outcomes.test_pass ... ok" in lines
    assert "cdemo.test_outcomes.Outcomes.test_fail ... FAIL" in lines
    assert "cdemo.test_outcomes.Outcomes.test_error ... ERROR" in lines
    assert "cdemo.test_outcomes.Outcomes.test_skip ... skipped 'not today'" in lines
    assert "ERROR: cdemo.test_outcomes.Outcomes.test_error" in lines
    assert "FAIL: cdemo.test_outcomes.Outcomes.test_fail" in lines


def test_failfast_stops_at_the_first_failure(tmp_path):
    project = copy_project("cli_failfast", tmp_path, "p")
    result = ts("run", "-t", ".", "-s", "cfailfast", "-x", "--format", "json", cwd=project)
    assert result.returncode == 1
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["status"] == "cancelled" and summary["ok"] is False
    # The cancel reaches the worker before test_b_blocks starts (not run) or during it.
    assert "cfailfast.test_ff.FailFast.test_c_never" in summary["not_run"]
    assert summary["outcomes"]["success"] == 0
    human = ts("run", "-t", ".", "-s", "cfailfast", "--failfast", cwd=project).stdout.decode()
    assert human.splitlines()[-1].startswith("FAILED (failures=1")  # not INTERRUPTED


def test_durations_lists_the_slowest_tests(demo):
    result = ts("run", *DEMO, "--durations", "2", "Outcomes", cwd=demo)
    out = result.stdout.decode()
    block = out.split("Slowest test durations (2 of 7)\n", 1)[1].split("\n\n", 1)[0]
    assert [line.split()[1].startswith("cdemo.") for line in block.splitlines()] == [True] * 2


def test_last_failed_and_failed_first_remember_the_last_run(demo):
    first = ts("run", *DEMO, "--format", "json", "Outcomes", cwd=demo)
    failed = {
        "cdemo.test_outcomes.Outcomes.test_" + n for n in ("bytes", "error", "fail", "uxsuccess")
    }
    assert first.returncode == 1
    state = demo / ".testserver"
    assert (state / ".gitignore").read_text().strip().endswith("*")
    again = ts("run", *DEMO, "--format", "json", "--lf", cwd=demo)
    assert set(ran_ids(again)) == failed
    ordered = ran_ids(ts("run", *DEMO, "--format", "json", "--ff", "Outcomes", cwd=demo))
    assert set(ordered[:4]) == failed and len(ordered) == 7


def test_breakpoint_points_to_testserver_debug(tmp_path):
    project = tmp_path / "bp"
    (project / "bpt").mkdir(parents=True)
    (project / "bpt" / "__init__.py").write_text("")
    (project / "bpt" / "test_bp.py").write_text(
        "import unittest\n\nclass T(unittest.TestCase):\n"
        "    def test_stop(self):\n        breakpoint()\n"
    )
    result = ts("run", "-t", ".", "-s", "bpt", cwd=project)
    assert result.returncode == 1
    assert "testserver debug -s bpt -t . bpt.test_bp.T.test_stop" in result.stdout.decode()


# -- issue 10: requested tests that did not run ------------------------------------------


def test_tests_not_run_fail_the_run(tmp_path):
    project = copy_project("cli_notrun", tmp_path, "p")
    result = ts("run", "-t", ".", "-s", "cnotrun", cwd=project)
    out = result.stdout.decode()
    assert result.returncode == 1, out
    assert "NOT RUN: 1 requested test got no result" in out
    assert "cnotrun.test_hijack.A.test_2_silent  (not run)" in out
    assert out.splitlines()[-1] == "FAILED (not run=1)"
    as_json = ts("run", "-t", ".", "-s", "cnotrun", "--format", "json", cwd=project)
    summary = json.loads(as_json.stdout.splitlines()[-1])
    assert (as_json.returncode, summary["ok"]) == (1, False)
    assert summary["not_run"] == ["cnotrun.test_hijack.A.test_2_silent"]
    stream = ts("run", "-t", ".", "-s", "cnotrun", "--format", "subunit", cwd=project)
    stats = subprocess.run(
        [str(BIN / "subunit-stats")], input=stream.stdout, capture_output=True, timeout=TIMEOUT
    )
    assert b"Failed tests:      1" in stats.stdout  # the test that did not run


# -- --format subunit for tools ----------------------------------------------------------


def tool(name: str, data: bytes) -> subprocess.CompletedProcess:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed next to {sys.executable}")
    return subprocess.run([str(path)], input=data, capture_output=True, timeout=TIMEOUT)


def subunit_run(project: Path, *args: str) -> bytes:
    return subprocess.run(
        [sys.executable, "-m", "subunit.run", "discover", *args],
        cwd=project,
        capture_output=True,
        timeout=TIMEOUT,
        env=ENV,
    ).stdout


def stats_counts(text: bytes) -> list[str]:
    return [line for line in text.decode().splitlines() if line.endswith(tuple("0123456789"))]


@pytest.mark.parametrize("name, top", [("tools_demo", "tdemo"), ("tools_subtests", "tsub")])
def test_format_subunit_feeds_junitxml_stats_and_pyunit(tmp_path, name, top):
    project = copy_project(name, tmp_path)
    stream = ts("run", "-t", ".", "-s", top, "--format", "subunit", cwd=project).stdout
    assert b"testserver." not in stream  # no control events
    xml = tool("subunit2junitxml", stream)
    suite = ElementTree.fromstring(xml.stdout)  # well-formed
    assert suite.tag == "testsuite"
    assert all(case.get("name") for case in suite.iter("testcase"))
    stats = tool("subunit-stats", stream)
    assert b"{" not in stats.stdout  # no control JSON glued into the output
    pyunit = tool("subunit2pyunit", stream)
    assert b"Ran " in pyunit.stderr + pyunit.stdout


@pytest.mark.parametrize("name, top", [("tools_demo", "tdemo"), ("tools_subtests", "tsub")])
def test_subtests_fold_gives_the_totals_of_subunit_run(tmp_path, name, top):
    project = copy_project(name, tmp_path)
    folded = ts(
        "run", "-t", ".", "-s", top, "--format", "subunit", "--subtests", "fold", cwd=project
    ).stdout
    reference = subunit_run(project, "-t", ".", "-s", top)
    expected = stats_counts(tool("subunit-stats", reference).stdout)
    assert stats_counts(tool("subunit-stats", folded).stdout) == expected
    reported = ts("run", "-t", ".", "-s", top, "--format", "subunit", cwd=project).stdout
    if name == "tools_subtests":  # each subtest is a test of its own: more tests
        assert stats_counts(tool("subunit-stats", reported).stdout) != expected


# -- the warm daemon ---------------------------------------------------------------------


def project_with_marker(name: str, tmp_path: Path) -> Path:
    """A copy of ``tests/projects/NAME`` with a ``pyproject.toml``: a project of its own."""
    project = copy_project(name, tmp_path, "proj")
    (project / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    (project / "sub" / "deeper").mkdir(parents=True)
    return project


def stop_daemon_of(project: Path) -> None:
    """Stop the project's daemon (if any) and check that it and its servers are gone."""
    status = ts("daemon", "status", "--project", str(project), cwd=project.parent)
    pids = set()
    if status.returncode == 0:
        answer = json.loads(status.stdout)
        pids = {answer["pid"], *descendants(answer["pid"])}
    stop = ts("daemon", "stop", "--project", str(project), cwd=project.parent)
    assert stop.returncode == 0, stop.stderr
    left = {pid: describe(pid) for pid in pids if not gone(pid)}
    assert not left, f"processes left after stop: {left}"


@pytest.fixture
def warm_project(tmp_path):
    """A project whose daemon is stopped, all its processes gone, after the test."""
    project = project_with_marker("cli_pass", tmp_path)
    yield project
    stop_daemon_of(project)


def test_second_run_at_a_terminal_is_warm(warm_project):
    code, first = at_terminal("run", "-t", ".", "-s", "cpass", cwd=warm_project)
    assert code == 0, first
    assert "started a background test server for" in first
    assert "testserver daemon stop" in first and "--no-daemon" in first
    assert (warm_project / ".testserver" / "daemon.sock").exists()
    code, second = at_terminal("run", "-t", "./", "-s", "./cpass", cwd=warm_project)
    assert code == 0, second
    assert "started a background" not in second  # said once
    assert second.splitlines()[-1] == "OK (skipped=1)"
    status = json.loads(ts("daemon", "status", cwd=warm_project / "sub" / "deeper").stdout)
    assert status["project"] == str(find_root(str(warm_project))[0])
    [server] = status["servers"]
    assert server["runs"] == 2  # both spellings of the options used the same warm server


def test_warm_run_sees_edits(warm_project):
    code, _ = at_terminal("run", "-t", ".", "-s", "cpass", cwd=warm_project)
    assert code == 0
    module = warm_project / "cpass" / "test_ok.py"
    module.write_text(
        module.read_text() + "\n\nclass Added(unittest.TestCase):\n"
        "    def test_new(self):\n        self.assertEqual(1, 2)\n"
    )
    code, shown = at_terminal("run", "-t", ".", "-s", "cpass", "-v", cwd=warm_project)
    assert code == 1, shown
    assert "cpass.test_ok.Added.test_new ... FAIL" in shown
    [server] = json.loads(ts("daemon", "status", cwd=warm_project).stdout)["servers"]
    assert server["runs"] == 2


def test_no_daemon_and_pipes_start_no_daemon(warm_project):
    code, shown = at_terminal("run", "--no-daemon", "-t", ".", "-s", "cpass", cwd=warm_project)
    assert code == 0, shown
    piped = ts("run", "-t", ".", "-s", "cpass", cwd=warm_project)
    assert piped.returncode == 0
    assert not (warm_project / ".testserver" / "daemon.sock").exists()


def test_daemon_status_outside_a_project_says_which_directory(tmp_path):
    result = ts("daemon", "status", cwd=tmp_path)
    assert result.returncode == 1
    answer = json.loads(result.stdout)
    assert answer["running"] is False and answer["project"] == os.path.realpath(tmp_path)
    assert "is not inside a project" in result.stderr


def test_thin_client_agrees_with_the_shim():
    from testserver.backends import testr, warmcli

    assert warmcli.DAEMON_PROTOCOL == testr.DAEMON_PROTOCOL
    assert (warmcli.SOCKET_NAME, warmcli.NO_DAEMON_ENV) == (testr.SOCKET_NAME, testr.NO_DAEMON_ENV)
    request = {"v": 1, "argv": ["-k", 'é\n"x"'], "env": {"A": "b"}, "tty": True, "c": None}
    assert json.loads(warmcli.encode(request)) == request


def test_a_warm_run_imports_neither_json_nor_socket(warm_project):
    code, _ = at_terminal("run", "-t", ".", "-s", "cpass", cwd=warm_project)
    assert code == 0
    probe = (
        "import sys, runpy; sys.argv = ['testserver', 'run', '--daemon', '-t', '.', '-s', "
        "'cpass']; code = 0\n"
        "try:\n    runpy.run_module('testserver', run_name='__main__')\n"
        "except SystemExit as exit_:\n    code = exit_.code\n"
        "heavy = ('json', 'socket', 'testserver.backends.testr', 'argparse')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "print(code, heavy, file=sys.stderr)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=warm_project,
        env=ENV,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=TIMEOUT,
    )
    assert result.stderr.decode().splitlines()[-1] == "0 []", result.stderr


def test_ctrl_c_cancels_a_warm_run_and_keeps_the_server(tmp_path):
    project = project_with_marker("daemon_slow", tmp_path)
    master, slave = pty.openpty()
    try:
        client = subprocess.Popen(
            [sys.executable, "-m", "testserver", "run", "-t", ".", "-s", "dslow", "-v"],
            cwd=project,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=ENV,
        )
        os.close(slave)
        wait_for((project / "dslow" / "started").exists, client)
        client.send_signal(signal.SIGINT)  # the first Ctrl-C: cancel, show what ran
        assert client.wait(TIMEOUT) == 1
        shown = read_all(master)
        assert "dslow.test_slow.TestSlow.test_quick ... ok" in shown
        assert shown.rstrip().splitlines()[-1].startswith("INTERRUPTED")
        [server] = json.loads(ts("daemon", "status", cwd=project).stdout)["servers"]
        assert (server["busy"], server["runs"]) == (False, 1)  # back in the pool, warm
    finally:
        stop_daemon_of(project)


def wait_for(predicate, process: subprocess.Popen) -> None:
    """Wait until ``predicate()`` holds (polling), failing if ``process`` exits first."""
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert process.poll() is None, "the command ended before the test started"
        assert time.monotonic() < deadline, "the test never started"
        time.sleep(0.02)


def read_all(master: int) -> str:
    shown = read_terminal(master).decode("utf-8", "replace")
    return ANSI.sub("", shown).replace("\r\n", "\n")


def test_daemon_serves_json_and_subunit_formats_too(warm_project):
    args = ("run", "--daemon", "-t", ".", "-s", "cpass")
    stream = ts(*args, "--format", "subunit", cwd=warm_project)
    assert stream.returncode == 0, stream.stderr
    stats = tool("subunit-stats", stream.stdout)
    assert b"Total tests:       4" in stats.stdout and b"Skipped tests:     1" in stats.stdout
    lines = ts(*args, "--format", "json", cwd=warm_project).stdout.decode().splitlines()
    summary = json.loads(lines[-1])
    assert (summary["event"], summary["ok"], summary["ran"]) == ("summary", True, 4)
    [server] = json.loads(ts("daemon", "status", cwd=warm_project).stdout)["servers"]
    assert server["runs"] == 2


def test_paths_and_ids_are_told_apart(tmp_path):
    from testserver.clients.runcommand import is_path, path_pattern

    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "test_a.py").write_text("")
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("")
    assert is_path("pkg/test_a.py", str(tmp_path)) and is_path("pkg/", str(tmp_path))
    assert is_path("pkg/sub", str(tmp_path))
    assert not is_path("pkg.T.test_x (path='a/b')", str(tmp_path))  # a subtest id
    assert not is_path("test_x", str(tmp_path))
    top = str(tmp_path)
    assert path_pattern("pkg/test_a.py", top, top) == "pkg.test_a.*"
    assert path_pattern("pkg/sub/__init__.py", top, top) == "pkg.sub.*"
    assert path_pattern("./pkg/sub/", top, top) == "pkg.sub.*"
    with pytest.raises(ValueError, match="not under the top-level directory"):
        path_pattern("..", top, top)
