"""``testserver run`` and ``testserver list``: human output, selection, colour, exit codes.

End to end: the commands run as subprocesses (``python -m testserver run ...``) against the
projects under ``tests/projects/cli_*``; each starts and stops a real server. The pieces
that need no process (selection, counting, packet assembly) are checked directly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import serverproc
from processes import session_processes
from serverproc import copy_project
from terminal import run_at_terminal

from testserver.clients.runs import Assembler, Outcome, Output, Started, Tally, select
from testserver.wire.events import Packet

DEMO = ("-t", ".", "-s", "cdemo")
TIMEOUT = 60
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(autouse=True)
def projects(tmp_path: Path) -> Path:
    """Fresh copies of the ``cli_*`` projects for each test: ``testserver run`` keeps its
    memory (``--lf``, timings) in the project, which must not carry over between tests."""
    for name in ("cli_broken", "cli_demo", "cli_pass", "cli_slow"):
        copy_project(name, tmp_path / "projects")
    global PROJECTS
    PROJECTS = tmp_path / "projects"
    return PROJECTS


PROJECTS = serverproc.PROJECTS


def command(
    *args: str, project: str = "cli_demo", env: dict | None = None, root: Path | None = None
):
    """Run ``python -m testserver ARGS`` in ``project`` (under ``root``, default: this test's
    copies); check it left no process behind."""
    process = subprocess.Popen(
        [sys.executable, "-m", "testserver", *args],
        cwd=(root or PROJECTS) / project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    assert session_processes(process.pid) == [], "the command left processes behind"
    return subprocess.CompletedProcess(
        process.args, process.returncode, stdout.decode(), stderr.decode()
    )


# -- testserver run, human output --------------------------------------------------------


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("demo_run")
    copy_project("cli_demo", root)
    return command("run", *DEMO, "--no-color", root=root)


def test_run_exits_1_when_a_test_fails(demo_run):
    assert demo_run.returncode == 1, demo_run.stderr


def test_run_progress_line_has_one_character_per_test(demo_run):
    first = demo_run.stdout.splitlines()[0]
    progress, _, percent = first.partition(" ")
    # load order: test_outcomes (bytes, error, fail, pass, skip, uxsuccess, xfail),
    # test_stdin, test_sub (setUpClass error, Child, Sub); test_error raises KeyError: E
    assert progress == "FEF.sux.E.F"
    assert percent.strip() == "[100%]"
    assert len(first) == 80


def test_run_failure_block_has_traceback_and_captured_output(demo_run):
    out = demo_run.stdout
    block = out.split("FAIL: cdemo.test_outcomes.Outcomes.test_fail\n", 1)[1].split("=" * 70)[0]
    assert block.startswith("-" * 70 + "\nTraceback (most recent call last):\n")
    assert "AssertionError: 2 != 3\n" in block
    assert re.search(r"-+ captured stdout -+\nprinted before failing\n", block)
    assert re.search(r"-+ captured stderr -+\nwarned before failing\n", block)


def test_run_shows_every_kind_of_problem(demo_run):
    out = demo_run.stdout
    assert "ERROR: cdemo.test_outcomes.Outcomes.test_error\n" in out
    assert "KeyError: 'broken'" in out
    assert "UNEXPECTED SUCCESS: cdemo.test_outcomes.Outcomes.test_uxsuccess\n" in out
    assert "ERROR: setUpClass (cdemo.test_sub.BrokenFixture)\n" in out
    assert "ValueError: class fixture broke" in out
    assert "FAIL: cdemo.test_sub.Sub.test_numbers (i=1)\n" in out
    assert "FAIL: cdemo.test_sub.Sub.test_numbers\n" in out
    assert "bad \ufffd byte\n" in out  # invalid UTF-8 output, replaced
    assert "FAIL: cdemo.test_outcomes.Outcomes.test_pass" not in out
    assert "FAIL: cdemo.test_outcomes.Outcomes.test_xfail" not in out


def test_run_summary_and_verdict(demo_run):
    lines = demo_run.stdout.splitlines()
    assert lines[-1] == (
        "FAILED (failures=3, errors=2, skipped=1, expected failures=1, unexpected successes=1, "
        "not run=1)"
    )
    assert re.fullmatch(
        r"Ran 10 tests in \d+\.\d\ds — 3 passed, 3 failed, 2 errors, 1 skipped, "
        r"1 expected failure, 1 unexpected success, 1 not run",
        lines[-3],
    )
    assert lines[-4] == "-" * 70


def test_run_has_no_colour_when_not_a_terminal(demo_run):
    assert "\x1b[" not in demo_run.stdout


def test_run_all_passing_is_ok_and_exits_0():
    result = command("run", "-t", ".", "-s", "cpass", project="cli_pass")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("s... ")
    assert re.fullmatch(r"Ran 4 tests in \d+\.\d\ds — 3 passed, 1 skipped", lines[-3])
    assert lines[-1] == "OK (skipped=1)"
    assert "noise from a passing test" not in result.stdout  # output of passing tests: hidden


def test_run_an_exact_id_runs_only_that_test():
    result = command("run", *DEMO, "cdemo.test_outcomes.Outcomes.test_pass")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0].startswith(". ")
    assert "Ran 1 test in" in result.stdout
    assert result.stdout.splitlines()[-1] == "OK"


def test_run_patterns_select_like_unittest_k():
    result = command("run", *DEMO, "--format", "json", "*Outcomes.test_*ss", "Child")
    assert result.returncode == 1
    assert '"test_id": "cdemo.test_outcomes.Outcomes.test_pass"' in result.stdout
    assert '"test_id": "cdemo.test_outcomes.Outcomes.test_uxsuccess"' in result.stdout
    assert '"test_id": "cdemo.test_sub.Child.test_inherited"' in result.stdout
    assert "test_fail" not in result.stdout


def test_run_a_selector_that_matches_nothing_fails():
    result = command("run", *DEMO, "cdemo.test_outcomes.Outcomes.test_pass", "no_such_test")
    assert result.returncode == 1
    assert "no test matches 'no_such_test'" in result.stderr
    assert "Ran 1 test in" in result.stdout
    assert result.stdout.splitlines()[-1] == "FAILED (unmatched=1)"


def test_run_nothing_selected_runs_nothing():
    result = command("run", *DEMO, "no_such_test")
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == "NO TESTS RAN (unmatched=1)"


def test_run_mentions_modules_that_failed_to_import_when_selecting():
    result = command("run", "-t", ".", "-s", "cbroken", "test_fine", project="cli_broken")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "module cbroken.test_broken failed to import and was not selected" in result.stderr
    assert "no_such_module_anywhere" in result.stderr


def test_run_a_broken_module_fails_the_run():
    result = command("run", "-t", ".", "-s", "cbroken", project="cli_broken")
    assert result.returncode == 1
    assert "ERROR: unittest.loader._FailedTest.cbroken.test_broken" in result.stdout
    assert "ModuleNotFoundError: No module named 'no_such_module_anywhere'" in result.stdout


def test_run_in_process_isolation():
    result = command("run", *DEMO, "--isolation", "none", "Outcomes.test_pass", "Stdin")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ran 2 tests in" in result.stdout


def test_run_with_a_bad_start_directory_exits_2():
    result = command("run", "-s", "no/such/dir")
    assert result.returncode == 2
    assert "cannot start the server" in result.stderr


def test_run_bad_arguments_exit_2():
    result = command("run", "--format", "xml")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


# -- colour ------------------------------------------------------------------------------


def run_on_a_terminal(*args: str, env_extra: dict | None = None) -> str:
    """Run ``testserver run ARGS`` with stdout on a pseudo-terminal; return what it showed."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    env.update(env_extra or {})
    code, shown = run_at_terminal(
        [sys.executable, "-m", "testserver", "run", "-t", ".", "-s", "cpass", *args],
        cwd=PROJECTS / "cli_pass",
        env=env,
    )
    assert code == 0
    return shown.decode()


def test_colour_on_a_terminal():
    shown = run_on_a_terminal()
    assert "\x1b[32m.\x1b[0m" in shown  # a green dot
    assert "\x1b[1;32mOK (skipped=1)\x1b[0m" in shown
    assert ANSI.sub("", shown).replace("\r\n", "\n").splitlines()[-1] == "OK (skipped=1)"


def test_no_color_environment_variable():
    assert "\x1b[" not in run_on_a_terminal(env_extra={"NO_COLOR": "1"})


def test_no_color_option():
    assert "\x1b[" not in run_on_a_terminal("--no-color")


# -- testserver list ---------------------------------------------------------------------


def test_list_prints_ids_one_per_line():
    result = command("list", *DEMO)
    assert result.returncode == 0, result.stderr
    ids = result.stdout.splitlines()
    assert ids[0] == "cdemo.test_outcomes.Outcomes.test_bytes"
    assert "cdemo.test_sub.BrokenFixture.test_never" in ids
    assert len(ids) == 11


def test_list_with_a_pattern():
    result = command("list", *DEMO, "Sub")
    assert result.stdout.splitlines() == ["cdemo.test_sub.Sub.test_numbers"]
    assert result.returncode == 0


def test_list_a_pattern_that_matches_nothing_exits_1():
    result = command("list", *DEMO, "nothing_like_this")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "no test matches 'nothing_like_this'" in result.stderr


def test_list_reports_import_errors():
    result = command("list", "-t", ".", "-s", "cbroken", project="cli_broken")
    assert result.returncode == 1
    assert "unittest.loader._FailedTest.cbroken.test_broken" in result.stdout.splitlines()
    assert "module cbroken.test_broken failed to import" in result.stderr


# -- light start -------------------------------------------------------------------------


def test_client_commands_do_not_import_testtools_or_subunit():
    code = (
        "import sys, testserver.clients.console, testserver.clients.runs, "
        "testserver.clients.jsonout, testserver.clients.watch; "
        "heavy = [m for m in ('testtools', 'subunit', 'watchdog') if m in sys.modules]; "
        "print(heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.stdout.strip() == "[]", result.stderr


# -- the pieces --------------------------------------------------------------------------

IDS = ["p.m.A.test_a", "p.m.A.test_ab", "p.m.B.test_c", "p.n.C.test_a"]


def test_select_exact_id_selects_only_itself():
    assert select(IDS, ["p.m.A.test_a"]) == (["p.m.A.test_a"], [])


def test_select_substring_and_wildcards_keep_load_order():
    assert select(IDS, ["test_c", "p.m.A.*"]) == (
        ["p.m.A.test_a", "p.m.A.test_ab", "p.m.B.test_c"],
        [],
    )
    assert select(IDS, ["*.test_a"]) == (["p.m.A.test_a", "p.n.C.test_a"], [])


def test_select_reports_unmatched_and_no_selector_selects_all():
    assert select(IDS, ["zzz", "p.n"]) == (["p.n.C.test_a"], ["zzz"])
    assert select(IDS, []) == (IDS, [])


def test_assembler_joins_attachment_pieces_until_the_final_status():
    assembler = Assembler()
    items = []
    for packet in [
        Packet(test_id="t", status="inprogress", timestamp_ns=1_000_000_000),
        Packet(test_id="t", file_name="stdout", file_bytes=b"ab"),
        Packet(file_name="stderr", file_bytes=b"glo"),
        Packet(test_id="t", file_name="stdout", file_bytes=b"cd", eof=True),
        Packet(file_name="stderr", file_bytes=b"bal", eof=True),
        Packet(test_id="t", file_name="traceback", file_bytes=b"boom", eof=True),
        Packet(test_id="t", status="fail", timestamp_ns=1_500_000_000),
    ]:
        items += assembler.feed(packet)
    assert items == [
        Started("t", None, True),
        Output("stderr", b"global"),
        Outcome("t", "fail", None, True, {"stdout": b"abcd", "traceback": b"boom"},
                1_000_000_000, 1_500_000_000),
    ]  # fmt: skip
    assert items[-1].duration == 0.5
    assert items[-1].headline() == "boom"


def test_tally_counts_like_the_server_and_keeps_problems():
    tally = Tally(complete={"status": "ok"})
    for outcome in [
        Outcome("a", "success"),
        Outcome("b", "fail"),
        Outcome("b (i=1)", "fail", parent_id="b", runnable=False),
        Outcome("setUpClass (m.C)", "fail", runnable=False),
        Outcome("c", "skip"),
        Outcome("d", "xfail"),
        Outcome("e", "uxsuccess"),
    ]:
        tally.add(outcome)
    assert tally.ran == 5
    assert [o.test_id for o in tally.problems] == ["b", "b (i=1)", "setUpClass (m.C)", "e"]
    assert tally.summary("-") == (
        "Ran 5 tests in 0.00s - 1 passed, 1 failed, 1 error, 1 skipped, 1 expected failure, "
        "1 unexpected success"
    )
    assert tally.verdict() == (
        "FAILED (failures=1, errors=1, skipped=1, expected failures=1, unexpected successes=1)"
    )
    assert not tally.ok


def test_tally_ok_and_cancelled():
    tally = Tally(complete={"status": "ok"})
    tally.add(Outcome("a", "success"))
    tally.add(Outcome("b", "xfail"))
    assert tally.ok and tally.verdict() == "OK (expected failures=1)"
    cancelled = Tally(complete={"status": "cancelled", "not_run": ["x", "y"]})
    cancelled.add(Outcome("a", "fail", attachments={"traceback": b"cancelled\n"}))
    assert cancelled.verdict() == "INTERRUPTED (errors=1, not run=2)"
    assert cancelled.summary().endswith("1 error, 2 not run")


# -- Ctrl-C ------------------------------------------------------------------------------


def start_slow_run(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "testserver", "run", "-t", ".", "-s", "cslow", *args],
        cwd=PROJECTS / "cli_slow",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def finish(process: subprocess.Popen) -> tuple[str, str]:
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    assert session_processes(process.pid) == [], "the command left processes behind"
    return stdout.decode(), stderr.decode()


def test_ctrl_c_in_a_terminal_cancels_the_run_and_reports_it():
    process = start_slow_run("--no-color")
    assert process.stdout is not None
    assert process.stdout.read(1) == b"."  # test_a_fast passed; test_b_sleeps is next
    os.killpg(process.pid, signal.SIGINT)  # the whole foreground group, as a terminal does
    stdout, _ = finish(process)
    assert process.returncode == 1
    assert stdout.splitlines()[-1].startswith("INTERRUPTED (")
    assert "not run=" in stdout.splitlines()[-1]


def test_sigint_to_the_command_alone_cancels_through_the_protocol():
    process = start_slow_run("--format", "json")
    assert process.stdout is not None
    for line in process.stdout:  # wait until the slow test is running
        event = json.loads(line)
        if event.get("test_id", "").endswith("test_b_sleeps"):
            break
    process.send_signal(signal.SIGINT)
    stdout, _ = finish(process)
    events = [json.loads(line) for line in stdout.splitlines()]
    assert process.returncode == 1
    summary = events[-1]
    assert summary["status"] == "cancelled" and summary["ok"] is False
    assert summary["not_run"] == ["cslow.test_slow.Slow.test_c_after"]
    slow = events[-2]
    assert (slow["test_id"], slow["status"]) == ("cslow.test_slow.Slow.test_b_sleeps", "fail")
    assert "cancelled" in slow["attachments"]["traceback"]


def test_select_a_dotted_prefix_is_tried_before_a_substring():
    ids = ["p.m.A.test_a", "p.mod.B.test_b", "unittest.loader._FailedTest.p.broken"]
    assert select(ids, ["p.m"]) == (["p.m.A.test_a"], [])  # not p.mod, as a substring would
    assert select(ids, ["p.broken.T"]) == ([ids[2]], [])  # the stand-in of its module
    assert select(ids, ["p"]) == (ids[:2] + [ids[2]], [])
    assert select(ids, ["od.B"]) == (["p.mod.B.test_b"], [])  # no prefix hit: a substring
