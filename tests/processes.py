"""The processes a test left behind, read from ``/proc``, and a wait for their exit.

:func:`wait_gone` blocks on a pidfd per process, so it wakes when the last one exits
instead of polling ``/proc`` on a timer.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterable, Iterator

DEAD_STATES = ("Z", "X")
"""``/proc/PID/stat`` states of a process that has exited (a zombie nobody reaped yet)."""


def process_stats() -> Iterator[tuple[int, list[str]]]:
    """``(pid, fields)`` for every process now: ``/proc/PID/stat`` after the command name,
    so ``fields[0]`` is the state, ``fields[1]`` the parent and ``fields[3]`` the session."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        yield int(entry), fields


def session_processes(sid: int) -> list[int]:
    """Processes still alive in session ``sid`` (a command started a new session)."""
    return [pid for pid, fields in process_stats() if int(fields[3]) == sid and fields[0] != "Z"]


def gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie nobody reaped counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in DEAD_STATES


def describe(pid: int) -> str:
    """A process's parent, state, group and command line, for a failure message."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return f"{pid}: gone"
    return f"{pid}: ppid {fields[1]} state {fields[0]} pgid {fields[2]}: {cmdline.strip()}"


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``."""
    children: dict[int, list[int]] = {}
    for child, fields in process_stats():
        if fields[0] not in DEAD_STATES:
            children.setdefault(int(fields[1]), []).append(child)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until every process in ``pids`` has exited; those still alive after ``timeout``
    seconds (sorted). A pidfd turns readable when its process exits, zombie or not."""
    fds: dict[int, int] = {}
    try:
        for pid in pids:
            try:
                fds[os.pidfd_open(pid)] = pid
            except ProcessLookupError:  # already gone and reaped
                continue
        waiting = set(fds)
        deadline = time.monotonic() + timeout
        while waiting and (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select(sorted(waiting), [], [], remaining)
            waiting.difference_update(ready)
        return sorted(fds[fd] for fd in waiting)
    finally:
        for fd in fds:
            os.close(fd)
