"""End-to-end: ``testserver debug`` joins a terminal to a test's pdb session."""

from __future__ import annotations

import subprocess
import sys

from serverproc import PROJECTS

BREAKPOINT = "estdin.test_pdb.Debugged.test_breakpoint"


def debug(test_id: str, typed: bytes) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "testserver", "debug", test_id, "-t", ".", "-s", "estdin"],
        cwd=PROJECTS / "e2e_stdin",
        input=typed,
        capture_output=True,
        timeout=60,
    )


def test_print_a_variable_and_continue():
    result = debug(BREAKPOINT, b"p secret\nc\n")
    assert result.returncode == 0, result.stderr
    assert b"(Pdb) 42\n(Pdb) " in result.stdout
    assert f"{BREAKPOINT}: success".encode() in result.stderr


def test_change_a_variable_and_the_test_fails():
    result = debug(BREAKPOINT, b"secret = 41\nc\n")
    assert result.returncode == 1
    assert b"AssertionError: 41 != 42" in result.stderr
    assert f"{BREAKPOINT}: fail".encode() in result.stderr


def test_end_of_terminal_input_quits_the_debugger():
    result = debug(BREAKPOINT, b"")
    assert result.returncode == 1
    assert b"BdbQuit" in result.stderr
