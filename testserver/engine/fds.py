"""File descriptors: keep testserver's own out of the tests' way.

A test should see the descriptor table of a plain interpreter: fds 0, 1 and 2, whatever the
process inherited, and whatever the test suite opened while it was imported; low numbers
otherwise free, so that two fresh descriptors are consecutive. testserver's own descriptors
(the protocol channel, capture files, worker pipes) live at or above
:data:`PRIVATE_FD_MIN` with close-on-exec set, and a worker closes every descriptor that
the tests do not own before it runs one (:func:`close_all_except`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
from collections.abc import Iterable

__all__ = [
    "PRIVATE_FD_MIN",
    "SuiteFds",
    "close_all_except",
    "is_open",
    "make_private",
    "open_fds",
    "private_pipe",
]


def _private_fd_min() -> int:
    """512, or half the fd limit when that is lower: well above what tests use."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 512
    return max(64, min(512, soft // 2))


PRIVATE_FD_MIN = _private_fd_min()
"""testserver's own descriptors are at or above this number (tests count from 3)."""

_FD_DIRS = ("/proc/self/fd", "/dev/fd")


def make_private(fd: int) -> int:
    """Move ``fd`` to the private range with close-on-exec set; return its new number."""
    if fd >= PRIVATE_FD_MIN:
        os.set_inheritable(fd, False)
        return fd
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, PRIVATE_FD_MIN)
    os.close(fd)
    return moved


def private_pipe() -> tuple[int, int]:
    """``os.pipe()`` with both ends in the private range."""
    read_end, write_end = os.pipe()
    return make_private(read_end), make_private(write_end)


def open_fds() -> set[int]:
    """The descriptors open in this process now."""
    for directory in _FD_DIRS:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        found = {int(name) for name in names if name.isdigit()}
        return {fd for fd in found if is_open(fd)}  # minus the listing's own fd
    return {fd for fd in range(PRIVATE_FD_MIN * 2) if is_open(fd)}


def is_open(fd: int) -> bool:
    """True when ``fd`` is an open descriptor."""
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _is_watcher(fd: int) -> bool:
    """An inotify descriptor: the file watcher's (watchdog starts one per watched tree)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify"
    except OSError:
        return False


def close_all_except(keep: Iterable[int]) -> None:
    """Close every open descriptor not in ``keep`` (in a worker, before tests run)."""
    kept = set(keep)
    for fd in sorted(open_fds() - kept):
        with contextlib.suppress(OSError):
            os.close(fd)


class SuiteFds:
    """The descriptors that belong to the tests, not to testserver.

    Those the process inherited when it started (but 0-2, which the server takes over and
    gives back to tests as their stdin, stdout and stderr), and those left open by the test
    suite's own imports: :meth:`during` records them around loading and reloading.
    """

    def __init__(self, inherited: Iterable[int] = ()) -> None:
        self.fds: set[int] = {fd for fd in inherited if fd > 2}

    @classmethod
    def at_startup(cls) -> SuiteFds:
        """What is open now, before testserver opened anything of its own."""
        return cls(open_fds())

    @contextlib.contextmanager
    def during(self):
        """Record the descriptors that the body leaves open (imports of test code)."""
        before = open_fds()
        try:
            yield self
        finally:
            opened = open_fds() - before
            self.fds |= {fd for fd in opened if fd < PRIVATE_FD_MIN and not _is_watcher(fd)}

    def still_open(self) -> set[int]:
        """The recorded descriptors that are still open (a module may close its files)."""
        self.fds = {fd for fd in self.fds if is_open(fd)}
        return set(self.fds)
