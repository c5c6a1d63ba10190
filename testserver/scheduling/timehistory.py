"""The project's timing history: how long each test took when it last ran.

The scheduler runs the longest tests first and ``--shard`` balances machines by these
durations. Three sources, read-only except our own, each tolerated when missing or corrupt
(a history only speeds things up; it never decides whether a test runs):

- ``<project>/.testserver/times.json`` (ours): ``{"version": 1, "times": {id: seconds}}``,
  written atomically (a temporary file renamed over it) and kept to :data:`MAX_ENTRIES`
  tests, the least recently run dropped first;
- ``<project>/.testrepository/times.dbm`` (testrepository) and ``<project>/.stestr/times.dbm``
  (stestr): ``dbm`` files of test id to seconds, which both tools update after every run.

Where several know a test, ours wins, then stestr's, then testr's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from testserver.scheduling.groups import is_duration

HISTORY_FILE = os.path.join(".testserver", "times.json")
"""Our store, relative to the project root (the daemon's own git-ignored directory)."""

TOOL_FILES = (os.path.join(".testrepository", "times.dbm"), os.path.join(".stestr", "times.dbm"))
"""testr's and stestr's stores, relative to the project root, weakest first."""

FORMAT_VERSION = 1
"""``version`` of ``times.json``; a file of another version is ignored (and replaced)."""

MAX_ENTRIES = 200_000
"""Tests remembered at most: twenty times a 10,000-test suite, about 20 MB of JSON at worst."""


def read_history(path: str) -> dict[str, float]:
    """The durations in our ``times.json`` at ``path``; ``{}`` when missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        return {}
    times = data.get("times")
    if not isinstance(times, dict):
        return {}
    return {str(k): float(v) for k, v in times.items() if is_duration(v)}


def read_dbm_times(path: str) -> dict[str, float]:
    """The durations in a testr/stestr ``times.dbm``; ``{}`` when missing or unreadable."""
    import dbm  # only a sharded run reads these: `testserver run` starts without it

    try:
        if dbm.whichdb(path) is None:  # missing, or not a dbm at all
            return {}
        with dbm.open(path, "r") as db:
            pairs = [(key, db[key]) for key in db.keys()]  # noqa: SIM118 - gdbm: no iter
    except Exception:  # noqa: BLE001 - another tool's corrupt file is never our failure
        return {}
    times = {}
    for key, value in pairs:
        try:
            seconds = float(value)
            test_id = key.decode("utf-8") if isinstance(key, bytes) else str(key)
        except (ValueError, UnicodeDecodeError):
            continue
        if is_duration(seconds):
            times[test_id] = seconds
    return times


def project_times(root: str) -> dict[str, float]:
    """Every duration known for the project at ``root``, ours winning."""
    times: dict[str, float] = {}
    for relative in TOOL_FILES:
        times.update(read_dbm_times(os.path.join(root, relative)))
    times.update(read_history(os.path.join(root, HISTORY_FILE)))
    return times


def record(root: str, durations: Mapping[str, float]) -> None:
    """Merge ``durations`` of a finished run into the project's ``times.json``.

    Newer values replace older ones and move to the end; beyond :data:`MAX_ENTRIES` the
    front (least recently run) is dropped. Best effort: a read-only project keeps its old
    history. The directory is created with a ``.gitignore`` of ``*`` if it is missing.
    """
    fresh = {str(k): float(v) for k, v in durations.items() if is_duration(v)}
    if not fresh:
        return
    path = os.path.join(root, HISTORY_FILE)
    times = read_history(path)
    for test_id in fresh:
        times.pop(test_id, None)
    times.update(fresh)
    kept = dict(list(times.items())[-MAX_ENTRIES:])
    try:
        _write_atomically(path, {"version": FORMAT_VERSION, "times": kept})
    except OSError:
        pass


def _write_atomically(path: str, data: object) -> None:
    import tempfile

    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, ".gitignore"), "a", encoding="utf-8") as handle:
            handle.write("*\n")
    fd, temporary = tempfile.mkstemp(prefix=".times-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, separators=(",", ":"))
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
