"""What a batch may leave behind in a reused worker, and the cheap checks that find it.

With ``--isolation worker`` one forked worker runs batch after batch. Before its first batch
it takes a :class:`WorkerState` snapshot of the process-wide state that a test can change and
that a check at batch end can read in a few syscalls; after each batch it compares
(:meth:`WorkerState.changed_since`) and reports the first difference in words. The server
then retires the worker instead of reusing it (``protocol.md`` §4.3.2 lists what these
checks cannot see: module globals, class attributes, caches, random state).
"""

from __future__ import annotations

import _signal  # getsignal without signal's enum conversion: 60 calls per check
import os
import resource
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from testserver.serve import reaping

__all__ = ["RSS_GROWTH_LIMIT", "WorkerState", "rss_bytes"]

RSS_GROWTH_LIMIT = 256 << 20
"""Bytes a reused worker's resident memory may grow past its first snapshot before it is
retired: a leak in the tests (or a cache that grows) must not grow a worker for ever."""

_SIGNALS = tuple(s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP))
"""Every signal whose handler a test can change."""


def rss_bytes() -> int:
    """This process's peak resident set size (one syscall; growth of the peak is growth)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _threads() -> int:
    """Threads of this process, C threads included."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def _fds() -> frozenset[int]:
    """The open descriptors, without the one the listing itself used (the lowest free
    number then, and again once it is closed: a test's closed fd must not hide behind it)."""
    try:
        listed = {int(fd) for fd in os.listdir("/proc/self/fd")}
        own = os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return frozenset()
    os.close(own)
    listed.discard(own)
    return frozenset(listed)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _handlers() -> tuple[object, ...]:
    getsignal = _signal.getsignal
    return tuple(getsignal(number) for number in _SIGNALS)


def _environ() -> tuple[tuple[object, object], ...]:
    """The environment as ``os.environ`` holds it (undecoded, where it can: cheaper)."""
    data = getattr(os.environ, "_data", os.environ)
    return tuple(data.items())


def _timer() -> bool:
    """True while an alarm or an interval timer of this process is armed."""
    return any(
        signal.getitimer(which) != (0.0, 0.0)
        for which in (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF)
    )


@dataclass(frozen=True)
class WorkerState:
    """The process-wide state of a worker that its checks compare between batches."""

    fds: frozenset[int]
    threads: int
    cwd: str
    environ: tuple[tuple[object, object], ...]
    path: tuple[str, ...]
    modules: frozenset[str]
    handlers: tuple[object, ...]
    umask: int
    rss: int

    @classmethod
    def capture(cls) -> WorkerState:
        """The state now."""
        return cls(
            fds=_fds(),
            threads=_threads(),
            cwd=_cwd(),
            environ=_environ(),
            path=tuple(sys.path),
            modules=frozenset(sys.modules),
            handlers=_handlers(),
            umask=_umask(),
            rss=rss_bytes(),
        )

    def changed_since(self, before: WorkerState) -> str | None:
        """The first difference from ``before`` that makes the worker unfit, in words."""
        for check in _CHECKS:
            reason = check(before, self)
            if reason is not None:
                return reason
        return None


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # the directory was removed
        return ""


def _listed(names: object, limit: int = 5) -> str:
    items = sorted(str(n) for n in names)  # type: ignore[attr-defined]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


Check = Callable[["WorkerState", "WorkerState"], "str | None"]
"""Compares two snapshots: why the later one makes the worker unfit, or None."""


def _changed(field: str, say: Callable[[Any, Any], str]) -> Check:
    """A check that says ``say(old, new)`` when ``field`` differs."""

    def check(before: WorkerState, after: WorkerState) -> str | None:
        old, new = getattr(before, field), getattr(after, field)
        return None if old == new else say(old, new)

    return check


def _set_changed(field: str, added: str, removed: str) -> Check:
    """A check of a set ``field``: what was ``added`` to it comes first, then ``removed``."""

    def say(old: frozenset, new: frozenset) -> str:
        more, fewer = new - old, old - new
        return f"{added} ({_listed(more)})" if more else f"{removed} ({_listed(fewer)})"

    return _changed(field, say)


def _environ_changed(old: tuple, new: tuple) -> str:
    before, after = dict(old), dict(new)
    keys = {os.fsdecode(k) for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    return f"a test changed the environment ({_listed(keys)})"


def _check_handlers(before: WorkerState, after: WorkerState) -> str | None:
    changed = [
        signal.Signals(number).name
        for number, old, new in zip(_SIGNALS, before.handlers, after.handlers)
        if old != new
    ]
    if changed:
        return f"a test changed signal handlers ({_listed(changed)})"
    if _timer():
        return "a test left an alarm or interval timer armed"
    return None


def _check_rss(before: WorkerState, after: WorkerState) -> str | None:
    if after.rss - before.rss > RSS_GROWTH_LIMIT:
        grown = (after.rss - before.rss) >> 20
        return f"its resident memory grew by {grown} MiB (limit {RSS_GROWTH_LIMIT >> 20} MiB)"
    return None


def _check_children(before: WorkerState, after: WorkerState) -> str | None:
    """One ``waitpid``: raises when this process (any of its threads) has no child left."""
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return None
    if pid:
        return f"a test left a child process it did not wait for (pid {pid})"
    return f"a test left child processes running ({_listed(reaping.children())})"


_CHECKS: tuple[Check, ...] = (
    _check_children,
    _changed("threads", lambda old, new: f"a test left threads running ({new - old:+d})"),
    _set_changed(
        "fds",
        "a test left file descriptors open",
        "a test closed file descriptors it did not open",
    ),
    _changed("cwd", lambda old, new: f"a test changed the working directory to {new!r}"),
    _changed("environ", _environ_changed),
    _changed("path", lambda old, new: "a test changed sys.path"),
    _check_handlers,
    _changed("umask", lambda old, new: f"a test changed the umask to {new:03o}"),
    _set_changed(
        "modules",
        "a test imported modules not imported at load time",
        "a test removed modules from sys.modules",
    ),
    _check_rss,
)
"""In order: what the server must act on first (processes) comes first."""
