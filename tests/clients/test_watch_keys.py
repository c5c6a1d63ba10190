"""``testserver watch`` on a terminal: keys, tracebacks with file:line, import errors, colour.

``python -m testserver watch`` runs with a pseudo-terminal (``pty``) as stdin, stdout and
stderr, in a copy of ``tests/projects/cli_watch``. The test types keys into the terminal and
reads what watch writes on it (the "screen", colour codes removed where they do not
matter); it checks that the terminal's modes are those it had once watch has exited.
"""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest
from processes import session_processes
from serverproc import DEFAULT_TIMEOUT, copy_project, save_as_editors_do

from testserver.clients.tracebacks import frames, import_failure, project_frame

PROJECT = Path(__file__).parent.parent / "projects" / "cli_watch"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
HELP = "keys: a run all, f run failures, p filter by pattern, Enter run again, q quit"


class Terminal:
    """``testserver watch`` behind a pseudo-terminal: ``type`` keys, ``expect`` text."""

    def __init__(self, root: Path, *args: str) -> None:
        self.root = root
        self.master, slave = pty.openpty()
        self.slave = slave
        self.modes_before = termios.tcgetattr(slave)
        argv = [sys.executable, "-m", "testserver", "watch", "-t", ".", "-s", "wproj", *args]
        self.process = subprocess.Popen(
            argv, cwd=root, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        self.screen = ""
        self.position = 0
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:  # EIO: every writer of the terminal is gone
                data = b""
            with self.changed:
                if not data:
                    self.screen += "\0"  # end of output
                    self.changed.notify_all()
                    return
                self.screen += data.decode("utf-8", "replace")
                self.changed.notify_all()

    def expect(self, pattern: str) -> str:
        """Wait for ``pattern`` (a regular expression) after what was already expected;
        return the text from there up to the end of the match (colour codes removed)."""
        deadline = time.monotonic() + DEFAULT_TIMEOUT
        with self.changed:
            while True:
                text = ANSI.sub("", self.screen[self.position :]).replace("\r\n", "\n")
                match = re.search(pattern, text)
                if match is not None:
                    raw = self.screen[self.position :]
                    self.position += _raw_length(raw, match.end())
                    return text[: match.end()]
                remaining = deadline - time.monotonic()
                if "\0" in text or remaining <= 0:
                    raise AssertionError(f"{pattern!r} not on the screen: {text!r}")
                self.changed.wait(remaining)

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def edit(self, relative: str, old: str, new: str) -> None:
        """Save a file of the project the way editors do."""
        save_as_editors_do(self.root / relative, old, new)

    def wait(self) -> int:
        code = self.process.wait(DEFAULT_TIMEOUT)
        assert session_processes(self.process.pid) == [], "watch left processes behind"
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        os.close(self.slave)
        self.reader.join(DEFAULT_TIMEOUT)
        os.close(self.master)


def _raw_length(raw: str, plain_length: int) -> int:
    """How many characters of ``raw`` (with colour codes and CRs) give ``plain_length``
    characters once those are removed."""
    count = index = 0
    while count < plain_length and index < len(raw):
        match = ANSI.match(raw, index)
        if match is not None:
            index = match.end()
        elif raw.startswith("\r\n", index):
            index, count = index + 2, count + 1
        else:
            index, count = index + 1, count + 1
    return index


@pytest.fixture
def terminal(tmp_path):
    started: list[Terminal] = []

    def start(*args: str) -> Terminal:
        started.append(Terminal(copy_project(PROJECT, tmp_path, "project"), *args))
        return started[-1]

    yield start
    for each in started:
        each.close()


def test_keys_run_all_failures_again_and_a_pattern_then_q_quits(terminal):
    watch = terminal("--no-color")
    watch.expect(r"4 passed — OK")
    watch.expect(re.escape(HELP))
    watch.type("f")
    watch.expect(r"no failing tests to run")

    watch.edit("wproj/calc.py", "a + b", "a - b")
    watch.expect(r"running 3 tests")
    watch.expect(r"3 failed")
    watch.type("f")  # the three failures only
    assert "running 3 tests" in watch.expect(r"running \d+ tests?")
    watch.expect(r"3 failed")
    watch.type("a")
    assert "running 4 tests" in watch.expect(r"running \d+ tests?")
    watch.expect(r"1 passed, 3 failed")
    watch.type("\r")  # Enter: the same tests again
    assert "running 4 tests" in watch.expect(r"running \d+ tests?")
    watch.expect(r"FAILED")

    watch.type("p")
    watch.expect(r"pattern \(Enter: apply, empty: none, Esc: cancel\) › ")
    watch.type("othx\x7fer")  # a typo, erased
    watch.expect(re.escape("othx\b \ber"))  # echoed, and erased on the screen
    watch.type("\r")
    watch.expect(r"filter: 'other'")
    assert "running 1 test" in watch.expect(r"running \d+ tests?")
    watch.expect(r"1 passed — OK")
    watch.edit("wproj/calc.py", "a - b", "a + b")  # the filter applies to saves too
    watch.expect(r"wproj/calc.py changed: no tests affected")

    watch.type("p")
    watch.expect(r"› ")
    watch.type("calc\x1b")  # Esc: no new filter, nothing runs
    watch.type("p\r")  # an empty pattern: back to every test
    watch.expect(r"filter: none")
    assert "running 4 tests" in watch.expect(r"running \d+ tests?")
    watch.expect(r"4 passed — OK")

    watch.type("q")
    assert watch.wait() == 0
    assert termios.tcgetattr(watch.slave) == watch.modes_before  # echo and lines are back


def run_after_a_save(watch: Terminal, relative: str, old: str, new: str) -> str:
    """What the run after the first one, caused by this edit, shows."""
    watch.expect(r"4 passed — OK")
    watch.edit(relative, old, new)
    watch.expect(r"running \d+ tests?")
    return watch.expect(r"Ran \d+ tests?")


def test_a_terminated_watch_restores_the_terminal(terminal):
    watch = terminal("--no-color")
    watch.expect(re.escape(HELP))
    assert termios.tcgetattr(watch.slave) != watch.modes_before  # cbreak while watching
    watch.process.terminate()
    assert watch.wait() == 128 + signal.SIGTERM
    assert termios.tcgetattr(watch.slave) == watch.modes_before


def test_failures_show_a_traceback_then_one_line_each_with_file_and_line(terminal):
    watch = terminal("--no-color")
    failures = run_after_a_save(watch, "wproj/calc.py", "return a + b", "return a - b")
    assert "Ran 3 tests" in failures
    calc = watch.root / "wproj" / "calc.py"
    assert f'File "{calc}", line 2, in add' not in failures  # assertions fail in the tests
    lines = failures.splitlines()
    heads = [line for line in lines if line.startswith("FAIL ")]
    assert heads[0] == "FAIL wproj.test_calc.CalcTest.test_add (wproj/test_calc.py:8)"
    following = lines[lines.index(heads[0]) + 1 :]
    assert following[0] == "    Traceback (most recent call last):"
    assert "    AssertionError: -1 != 3" in following
    assert heads[1:] == [
        "FAIL wproj.test_calc.CalcTest.test_add_negative (wproj/test_calc.py:11): "
        "AssertionError: 0 != -2",
        "FAIL wproj.test_helpers.HelpersTest.test_double (wproj/test_helpers.py:8): "
        "AssertionError: 0 != 4",
    ]
    watch.type("q")
    assert watch.wait() == 0


def test_a_broken_helper_module_shows_file_line_and_source(terminal):
    watch = terminal("--no-color")
    report = run_after_a_save(watch, "wproj/helpers.py", "def double(x):", "def double(x:")
    lines = report.splitlines()
    [error] = [line for line in lines if line.startswith("ERROR ")]
    assert error.startswith(
        "ERROR cannot import wproj.test_helpers (wproj/helpers.py:4): SyntaxError: "
    )
    following = lines[lines.index(error) + 1 : lines.index(error) + 3]
    assert following[0] == "    def double(x:"
    assert following[1].strip().startswith("^")
    watch.type("q")
    assert watch.wait() == 0


def test_failures_are_red_on_a_terminal(terminal):
    watch = terminal()
    watch.expect(r"4 passed — OK")
    watch.edit("wproj/test_other.py", "assertTrue(True)", "assertTrue(False)")
    watch.expect(r"running 1 test")
    start = watch.position
    watch.expect(r"FAILED")
    assert "\x1b[31mFAIL\x1b[0m wproj.test_other.OtherTest.test_truth" in watch.screen[start:]
    watch.type("q")
    assert watch.wait() == 0


def test_without_a_terminal_there_are_no_keys(tmp_path):
    root = copy_project(PROJECT, tmp_path, "project")
    process = subprocess.Popen(
        [sys.executable, "-m", "testserver", "watch", "-t", ".", "-s", "wproj"],
        cwd=root,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    guard = threading.Timer(DEFAULT_TIMEOUT, os.killpg, (process.pid, 9))  # never hang
    guard.start()
    try:
        assert process.stdout is not None and process.stdin is not None
        line = b""
        while not line.startswith(b"watching for changes"):
            line = process.stdout.readline()
            assert line, "watch ended"
        process.stdin.write(b"q\n")  # not a terminal: not a key
        process.stdin.close()
        other = root / "wproj" / "test_other.py"  # still watching: a save runs its tests
        other.write_text(other.read_text().replace("True)", "1)"))
        while not line.startswith(b"Ran "):
            line = process.stdout.readline()
            assert line, "watch ended"
        os.killpg(process.pid, 2)
        rest = process.stdout.read()
        assert process.wait(DEFAULT_TIMEOUT) == 0
        assert HELP.encode() not in rest and b"keys:" not in line
    finally:
        guard.cancel()
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None and not stream.closed:
                stream.close()


# -- the traceback reader ------------------------------------------------------------------

SYNTAX = """\
ImportError: Failed to import test module: pkg.test_h
Traceback (most recent call last):
  File "/usr/lib/python3.11/unittest/loader.py", line 407, in _find_test_path
    module = self._get_module_from_name(name)
  File "/p/pkg/test_h.py", line 1, in <module>
    from pkg import helper
  File "/p/pkg/helper.py", line 4
    def double(x:
              ^
SyntaxError: '(' was never closed
"""


def test_the_innermost_project_frame_and_the_source_line_to_blame():
    failure = import_failure(SYNTAX, ["/p"])
    assert failure is not None
    assert (failure.frame.path, failure.frame.line) == ("/p/pkg/helper.py", 4)
    assert failure.frame.source == "def double(x:"
    assert failure.frame.marker == "          ^"
    assert failure.error == "SyntaxError: '(' was never closed"
    assert [frame.name for frame in frames(SYNTAX)] == ["_find_test_path", "<module>", None]


def test_dependencies_and_files_outside_the_roots_are_not_the_project():
    text = (
        "Traceback (most recent call last):\n"
        '  File "/p/pkg/test_x.py", line 9, in test_x\n'
        "    lib.call()\n"
        '  File "/p/.venv/lib/python3.11/site-packages/lib.py", line 3, in call\n'
        "    raise ValueError\n"
        "ValueError\n"
    )
    frame = project_frame(text, ["/p"])
    assert frame is not None and (frame.path, frame.line, frame.source) == (
        "/p/pkg/test_x.py",
        9,
        "lib.call()",
    )
    assert project_frame(text, ["/elsewhere"]) is None
