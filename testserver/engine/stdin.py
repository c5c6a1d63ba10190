"""A test's standard input inside a worker: say when a test waits, then block for bytes.

In a worker, fd 0 is a pipe fed by the client's ``stdin`` commands. :class:`WaitingStdin`
is the raw stream under ``sys.stdin``: before a read would block, it calls ``on_wait`` so the
worker can flush the test's output so far (a pdb prompt, say) and emit
``testserver.stdin-wanted``; then it blocks until bytes or end of input arrive.
"""

from __future__ import annotations

import io
import os
import select
import sys
from collections.abc import Callable


def _would_block(fd: int) -> bool:
    try:
        ready, _, _ = select.select([fd], [], [], 0)
    except (OSError, ValueError):
        return False
    return not ready


class WaitingStdin(io.RawIOBase):
    """A raw, readable stream on ``fd`` that calls ``on_wait`` before blocking."""

    def __init__(self, fd: int, on_wait: Callable[[], None]) -> None:
        super().__init__()
        self._fd = fd
        self._on_wait = on_wait

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        try:
            return os.isatty(self._fd)
        except OSError:
            return False

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if _would_block(self._fd):
            self._on_wait()
        data = os.read(self._fd, len(buffer))
        buffer[: len(data)] = data
        return len(data)


def install_stdin(fd: int, on_wait: Callable[[], None]) -> None:
    """Make ``sys.stdin`` read ``fd`` through a :class:`WaitingStdin`."""
    raw = WaitingStdin(fd, on_wait)
    sys.stdin = io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8", errors="replace")
