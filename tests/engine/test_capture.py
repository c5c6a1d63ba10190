"""Tests for testserver.engine.capture: fd-level output capture.

Most tests run in a forked child so that fds 1 and 2 of the pytest process are never
touched; one test installs in-process to show that uninstall() puts everything back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys
import tempfile
from typing import Any

import pytest
from inprocess import in_child

from testserver.engine.capture import OutputCapture, read_leftover


def new_capture() -> tuple[OutputCapture, Any, Any]:
    out = tempfile.TemporaryFile()  # noqa: SIM115 - kept open by the caller
    err = tempfile.TemporaryFile()  # noqa: SIM115
    return OutputCapture(out.fileno(), err.fileno()), out, err


def libc() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def test_captures_python_fd_and_child_process_output() -> None:
    def child() -> tuple[bytes, bytes]:
        capture, _out, _err = new_capture()
        capture.install()
        print("print")
        sys.stderr.write("stderr write\n")
        os.write(1, b"os.write 1\n")
        os.write(2, b"os.write 2\n")
        sys.stdout.buffer.write(b"buffer write\n")
        subprocess.run(["echo", "child process"], check=True)
        subprocess.run(["sh", "-c", "echo child stderr >&2"], check=True)
        taken = capture.take()
        capture.uninstall()
        return taken

    out, err = in_child(child)
    assert out == b"print\nos.write 1\nbuffer write\nchild process\n"
    assert err == b"stderr write\nos.write 2\nchild stderr\n"


@pytest.mark.skipif(libc() is None, reason="no libc to call through ctypes")
def test_captures_c_level_writes() -> None:
    def child() -> tuple[bytes, bytes]:
        capture, _out, _err = new_capture()
        capture.install()
        lib = libc()
        lib.printf(b"from printf %d\n", 42)
        lib.fflush(None)
        taken = capture.take()
        capture.uninstall()
        return taken

    assert in_child(child) == (b"from printf 42\n", b"")


def test_take_returns_what_was_written_since_the_last_take() -> None:
    def child() -> list[object]:
        capture, out, _err = new_capture()
        capture.install()
        print("first")
        first = capture.take()
        empty = capture.take()
        print("second")
        size_after_write = os.fstat(out.fileno()).st_size  # written from offset 0 again
        second = capture.take()
        capture.uninstall()
        return [first, empty, size_after_write, second]

    first, empty, size, second = in_child(child)
    assert first == (b"first\n", b"")
    assert empty == (b"", b"")
    assert size == len(b"second\n")
    assert second == (b"second\n", b"")


def test_uninstall_restores_fds_and_streams() -> None:
    def child() -> list[object]:
        read_end, write_end = os.pipe()
        os.dup2(write_end, 1)
        os.close(write_end)
        original = sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        capture, _out, _err = new_capture()
        capture.install()
        print("captured")
        replaced = sys.stdout is not original
        capture.uninstall()
        restored = sys.stdout is original
        print("after")
        sys.stdout.flush()
        os.write(1, b"raw after\n")
        capture.uninstall()  # a second uninstall does nothing
        os.close(1)
        with os.fdopen(read_end, "rb") as pipe:
            seen = pipe.read()
        return [replaced, restored, seen, capture.take()]

    replaced, restored, seen, leftover = in_child(child)
    assert replaced and restored
    assert seen == b"after\nraw after\n"
    assert leftover == (b"captured\n", b"")  # not taken before uninstall: still there


def test_print_is_in_the_file_when_the_process_dies_right_after() -> None:
    capture, out, err = new_capture()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            capture.install()
            print("last words", end="")
            sys.stderr.write("dying")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    with out, err:
        assert read_leftover(out.fileno()) == b"last words"
        assert read_leftover(err.fileno()) == b"dying"
        assert os.fstat(out.fileno()).st_size == 0
        assert read_leftover(out.fileno()) == b""


def test_streams_are_utf8_and_escape_what_cannot_be_encoded() -> None:
    def child() -> list[object]:
        capture, _out, _err = new_capture()
        capture.install()
        encoding = sys.stdout.encoding
        print("caf\u00e9 \udcff")
        taken = capture.take()
        capture.uninstall()
        return [encoding, taken]

    encoding, (out, _) = in_child(child)
    assert encoding == "utf-8"
    assert out == "caf\u00e9 \\udcff\n".encode()


def test_large_output_is_read_completely() -> None:
    blob = bytes(range(256)) * 12_288  # 3 MiB

    def child() -> bytes:
        capture, _out, _err = new_capture()
        capture.install()
        for start in range(0, len(blob), 100_000):
            os.write(1, blob[start : start + 100_000])
        out, _ = capture.take()
        capture.uninstall()
        return out

    assert in_child(child) == blob


def test_install_twice_is_an_error_and_context_manager_uninstalls() -> None:
    def child() -> list[object]:
        capture, _out, _err = new_capture()
        with capture:
            installed = capture.installed
            try:
                capture.install()
            except RuntimeError as error:
                message = str(error)
            print("inside")
        return [installed, capture.installed, message, capture.take()]

    installed, after, message, taken = in_child(child)
    assert installed and not after
    assert "twice" in message
    assert taken == (b"inside\n", b"")


def test_closed_fd_stays_closed_after_uninstall() -> None:
    def child() -> list[object]:
        capture, _out, _err = new_capture()
        os.close(2)
        capture.install()
        os.write(2, b"to the capture\n")
        taken = capture.take()
        capture.uninstall()
        try:
            os.fstat(2)
            closed = False
        except OSError:
            closed = True
        return [taken, closed]

    taken, closed = in_child(child)
    assert taken == (b"", b"to the capture\n")
    assert closed


def test_capture_files_must_not_be_the_redirected_fds() -> None:
    with pytest.raises(ValueError, match="above 2"):
        OutputCapture(1, 5)
    with pytest.raises(ValueError, match="distinct"):
        OutputCapture(5, 5)


def test_in_process_install_and_uninstall_leave_the_process_as_it_was() -> None:
    before = (os.fstat(1).st_ino, os.fstat(2).st_ino, sys.stdout, sys.stderr)
    fds_before = set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    capture, out, err = new_capture()
    try:
        capture.install()
        print("in process")
        os.write(2, b"fd 2 in process\n")
        taken = capture.take()
    finally:
        capture.uninstall()
        out.close()
        err.close()
    if fds_before is not None:
        assert set(os.listdir("/proc/self/fd")) == fds_before  # no fd leaked
    assert taken == (b"in process\n", b"fd 2 in process\n")
    assert (os.fstat(1).st_ino, os.fstat(2).st_ino, sys.stdout, sys.stderr) == before
