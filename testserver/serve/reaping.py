"""No process a test started outlives its batch: adopt orphans, then end them.

On Linux the serving process makes itself a *child subreaper* (``PR_SET_CHILD_SUBREAPER``):
a process that a test started and whose parent died (a daemonised child, one that called
``setsid``, the children of a killed worker) is re-parented to the server instead of init.
After each batch the server kills the worker's process group and then every child of its own
that is not one of its workers (:func:`sweep`), so nothing a test started survives the
batch, whatever session or process group it moved to.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Container

__all__ = [
    "FORWARDED_SIGNALS",
    "become_subreaper",
    "children",
    "forward_signals",
    "kill_group",
    "restore_handlers",
    "sweep",
]

FORWARDED_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGUSR1", "SIGUSR2", "SIGHUP", "SIGALRM", "SIGVTALRM", "SIGPROF")
    if hasattr(signal, name)
)
"""Signals a test may send to the pid its module saw at import time, which is the server's.

They are the test's: the server passes them on to the worker running the batch (where the
test's handler is) instead of dying of them or ignoring them. SIGINT and SIGTERM stay the
server's (cancel, stop)."""


def forward_signals(target: Callable[[], int | None]) -> dict[int, object]:
    """Pass :data:`FORWARDED_SIGNALS` on to the pid ``target()`` gives (None: drop them).

    Returns the previous handlers, for :func:`restore_handlers`.
    """

    def forward(number: int, frame: object) -> None:
        pid = target()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, number)

    return {number: signal.signal(number, forward) for number in FORWARDED_SIGNALS}


def restore_handlers(previous: dict[int, object]) -> None:
    """Put back the handlers :func:`forward_signals` replaced."""
    for number, handler in previous.items():
        signal.signal(number, handler)  # type: ignore[arg-type]


_PR_SET_CHILD_SUBREAPER = 36
"""Linux prctl option: orphaned descendants are re-parented to this process."""

SWEEP_ROUNDS = 20
"""Kill-and-look rounds before giving up: each round ends one more generation of orphans."""


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


PRCTL = _load_prctl()
"""libc's ``prctl`` on Linux, else None (loaded once, before any fork)."""


def become_subreaper() -> bool:
    """Adopt this process's orphaned descendants (Linux); True if that took effect."""
    return PRCTL is not None and PRCTL(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def children() -> set[int]:
    """The pids of this process's children (of every thread), zombies included."""
    found: set[int] = set()
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/children") as handle:
                found.update(int(pid) for pid in handle.read().split())
        except OSError:
            continue
    return found


def kill_group(pgid: int) -> None:
    """SIGKILL every process of group ``pgid`` (a worker's), if any is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def sweep(keep: Container[int], *, wait: bool = True) -> list[int]:
    """Kill and reap every child of this process whose pid is not in ``keep``.

    With ``wait`` it goes on until none is left (the children of a killed child are
    re-parented here and found in the next round); otherwise it makes one round without
    blocking. Returns the pids it killed.
    """
    killed: list[int] = []
    for _ in range(SWEEP_ROUNDS):
        strays = [pid for pid in children() if pid not in keep]
        if not strays:
            break
        for pid in strays:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        for pid in strays:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0 if wait else os.WNOHANG)
        if not wait:
            break
        time.sleep(0.001)  # let the kernel re-parent the grandchildren of the killed
    return killed
