"""Did anything change in these directories since I last asked? Answered at once (Linux).

:mod:`testserver.hotreload.reloader` asks before every command, so that a command costs one failed
``read`` when nothing was written, and a write that finished before the command arrived is
never missed (the kernel queues the inotify event inside the writer's call). The stat scan
of :mod:`testserver.hotreload.watcher` runs when this says "something happened" or cannot answer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["ChangeSignal"]

INOTIFY_MASK = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800
"""IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE, IN_MOVED_FROM/TO, IN_CREATE, IN_DELETE, and the
directory itself deleted or moved: every way a source file can change; not reads."""

INOTIFY_ONLYDIR = 0x01000000

SIGNAL_READ_SIZE = 1 << 16
"""Bytes drained from the inotify descriptor per read; the events themselves are not parsed."""


class ChangeSignal:
    """ "Did anything change in these directories since I last asked?", answered at once.

    A private inotify descriptor (``IN_NONBLOCK``) with one watch per directory. Linux only;
    elsewhere, or when a watch cannot be added (the per-user limit), :attr:`usable` is
    false and the caller scans every time. Events are drained, never parsed: any event, an
    overflow included, means "scan".
    """

    def __init__(self) -> None:
        self.fd = -1
        self.usable = False
        self.watched: set[str] = set()
        self._libc = _libc()
        if self._libc is not None:
            fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0:
                self.fd, self.usable = fd, True

    def watch(self, directories: Iterable[str]) -> None:
        """Watch the directories not watched yet (a vanished one drops its own watch)."""
        if not self.usable:
            return
        for path in directories:
            if path in self.watched:
                continue
            wd = self._libc.inotify_add_watch(  # type: ignore[union-attr]
                self.fd, os.fsencode(path), INOTIFY_MASK | INOTIFY_ONLYDIR
            )
            if wd < 0 and ctypes.get_errno() != errno.ENOENT:
                self.close()  # out of watches: the caller falls back to scanning
                return
            self.watched.add(path)

    def forget(self, directories: Iterable[str]) -> None:
        """Stop counting ``directories`` as watched (they vanished; watch them again if they
        come back)."""
        self.watched.difference_update(directories)

    def pending(self) -> bool:
        """True when an event arrived since the last call (or the signal is not usable)."""
        if not self.usable:
            return True
        seen = False
        while True:
            try:
                data = os.read(self.fd, SIGNAL_READ_SIZE)
            except BlockingIOError:
                return seen
            except OSError:
                self.close()
                return True
            if not data:
                return seen
            seen = True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd, self.usable = -1, False


def _libc() -> Any:
    """The C library, if it has inotify (Linux glibc and musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        return None
    return libc
