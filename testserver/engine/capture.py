"""Capture test output at the file-descriptor level.

:class:`OutputCapture` points fds 1 and 2 at two regular files (``dup2``), so everything a
test writes lands there: ``print()``, ``sys.stderr.write``, ``os.write(1, ...)``, C code
writing through libc, and child processes, which inherit the fds. ``sys.stdout`` and
``sys.stderr`` are replaced by unbuffered text wrappers on fds 1 and 2, so that a print is
in the file the moment it returns, even if the process dies right after it.

The files are shared with the parent process (a forked worker inherits them), so a parent
can call :func:`read_leftover` to recover what a crashed child wrote.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import sys
import tempfile
from typing import TextIO

from testserver.engine.fds import PRIVATE_FD_MIN, make_private

__all__ = ["OutputCapture", "capture_file", "read_leftover"]

READ_SLACK = 4096
"""Read this much past the size ``fstat`` gave, for bytes written in between: one pread."""

READ_CHUNK = 1 << 20
"""Further reads (a file still growing) take at most 1 MiB at a time."""

STREAM_ENCODING = "utf-8"
STREAM_ERRORS = "backslashreplace"
"""Text written to the capture streams never fails to encode; odd characters are escaped."""


def _text_writer(fd: int) -> io.TextIOWrapper:
    """A write-through text stream on ``fd`` that never closes it."""
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(
        raw,  # type: ignore[arg-type]  # a raw FileIO: no buffer to lose on a crash
        encoding=STREAM_ENCODING,
        errors=STREAM_ERRORS,
        write_through=True,
    )


def _flush(*streams: object) -> None:
    """Flush whatever file-like objects are given; tests may leave broken ones behind."""
    for stream in streams:
        _flush_one(stream)


def _flush_one(stream: object) -> None:
    try:  # noqa: SIM105 - contextlib.suppress costs more, and this runs twice per test
        stream.flush()  # type: ignore[attr-defined]
    except Exception:
        pass  # None, a closed or an odd stream: nothing to flush


def _drain(fd: int) -> bytes:
    """Return the whole content of the file ``fd``, then empty it and rewind.

    Reads with ``pread`` from offset 0 (the shared file offset is not used for reading),
    then truncates to 0 and seeks to 0; every fd sharing the open file description (fds 1
    and 2 after ``dup2``, child processes) then writes from the start again. The size
    comes from seeking to the end, where writers write anyway (cheaper than ``fstat``).
    """
    size = os.lseek(fd, 0, os.SEEK_END)
    if not size:
        return b""
    chunks = []
    offset = 0
    want = size + READ_SLACK
    while True:
        chunk = os.pread(fd, want, offset)
        chunks.append(chunk)
        offset += len(chunk)
        if len(chunk) < want:  # a regular file reads short only at its end
            break
        want = READ_CHUNK
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    return b"".join(chunks)


def capture_file() -> int:
    """An unlinked temporary file for captured output, as a private descriptor."""
    fd, path = tempfile.mkstemp(prefix="testserver-capture-")
    os.unlink(path)
    return make_private(fd)


def read_leftover(fd: int) -> bytes:
    """Parent side: read what a dead child left in a capture file, then empty the file."""
    return _drain(fd)


class OutputCapture:
    """Redirect fds 1 and 2 (and ``sys.stdout``/``sys.stderr``) into two files.

    ``stdout_fd`` and ``stderr_fd`` are fds of regular files opened for reading and
    writing (``tempfile.TemporaryFile().fileno()``); the capture does not own or close
    them. :meth:`take` returns what was written since the previous take. Use
    :meth:`install` / :meth:`uninstall` or the object as a context manager.
    """

    def __init__(self, stdout_fd: int, stderr_fd: int, *, stdin_source: int | None = None) -> None:
        if min(stdout_fd, stderr_fd) <= 2 or stdout_fd == stderr_fd:
            raise ValueError(
                f"capture files need two distinct fds above 2, got {stdout_fd} and {stderr_fd}: "
                "fds 0-2 are the ones being redirected"
            )
        self.stdout_fd = stdout_fd
        self.stderr_fd = stderr_fd
        self._targets = [(1, stdout_fd), (2, stderr_fd)]
        """``(fd, what it must point at)`` for :meth:`repair`; fd 0 too with ``stdin_source``."""
        if stdin_source is not None:
            self._targets.insert(0, (0, stdin_source))
        self._identities = [_identity(source) for _, source in self._targets]
        self._saved: tuple[int | None, int | None, TextIO, TextIO] | None = None
        self._streams: tuple[io.TextIOWrapper, io.TextIOWrapper] | None = None

    @property
    def installed(self) -> bool:
        """True between :meth:`install` and :meth:`uninstall`."""
        return self._saved is not None

    def install(self, *, save: bool = True) -> None:
        """Flush, ``dup2`` the files onto fds 1 and 2, and replace sys.stdout/sys.stderr.

        ``save=False`` (a worker, which never uninstalls) keeps no copy of the old fds.
        """
        if self._saved is not None:
            raise RuntimeError("OutputCapture.install() called twice; uninstall() first")
        _flush(sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
        saved_out = _dup_or_none(1) if save else None
        saved_err = _dup_or_none(2) if save else None
        try:
            os.dup2(self.stdout_fd, 1)
            os.dup2(self.stderr_fd, 2)
        except OSError:
            _restore_fd(saved_out, 1)
            _restore_fd(saved_err, 2)
            raise
        self._saved = (saved_out, saved_err, sys.stdout, sys.stderr)
        self._streams = (_text_writer(1), _text_writer(2))
        sys.stdout, sys.stderr = self._streams

    def repair(self) -> None:
        """Point fds 0-2 back where they belong if a test closed or replaced them.

        Called before each test: a test that closed its stdout must not cost the next
        test its output (under unittest it would, but there the next test is not ours).
        """
        for (fd, source), identity in zip(self._targets, self._identities):
            if _identity(fd) != identity:
                with contextlib.suppress(OSError):
                    os.dup2(source, fd)

    def take(self) -> tuple[bytes, bytes]:
        """Flush Python's streams and return ``(stdout, stderr)`` written since the last take."""
        ours = self._streams or ()
        stdout, stderr = sys.stdout, sys.stderr
        if stdout not in ours:  # ours are write-through: nothing to flush
            _flush_one(stdout)
        if stderr not in ours:
            _flush_one(stderr)
        _flush_one(sys.__stdout__)  # code may print to the original streams: fd 1 and 2 too
        _flush_one(sys.__stderr__)
        return _drain(self.stdout_fd), _drain(self.stderr_fd)

    def uninstall(self) -> None:
        """Restore the original fds 1 and 2 and sys.stdout/sys.stderr (idempotent).

        Output not yet taken stays in the files for a later :meth:`take`.
        """
        if self._saved is None:
            return
        saved_out, saved_err, stdout, stderr = self._saved
        self._saved = self._streams = None
        _flush(sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
        _restore_fd(saved_out, 1)
        _restore_fd(saved_err, 2)
        sys.stdout, sys.stderr = stdout, stderr

    def __enter__(self) -> OutputCapture:
        self.install()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.uninstall()


def _identity(fd: int) -> tuple[int, int] | None:
    """``(device, inode)`` of what ``fd`` points at, or None when it is closed."""
    try:
        stat = os.fstat(fd)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _dup_or_none(fd: int) -> int | None:
    """Duplicate ``fd`` into the private range (non-inheritable), or None when it is not open.

    Private: with fd 2 closed, a plain ``dup(1)`` would return 2 and be overwritten, and a
    low number would be in the way of the tests' own descriptors.
    """
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, PRIVATE_FD_MIN)
    except OSError:
        return None


def _restore_fd(saved: int | None, fd: int) -> None:
    """Put a saved fd back in place (or close ``fd`` if it was not open before)."""
    if saved is None:
        with contextlib.suppress(OSError):
            os.close(fd)
        return
    os.dup2(saved, fd)
    os.close(saved)
