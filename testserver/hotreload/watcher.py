"""What changed on disk: a watchdog recorder plus a stat-and-hash scan of the source tree.

Two parts, both used by :mod:`testserver.hotreload.reloader` at a batch boundary and never while a
test runs:

- :class:`Watcher` runs a watchdog observer (inotify on Linux, polling with ``--poll``) whose
  handler, :class:`ChangeRecorder`, does nothing but add paths to a locked set. Nothing is
  reloaded from the observer's thread. The observer is injectable, so tests can dispatch
  events by hand instead of waiting on the file system.
- :class:`SourceTree` is the source of truth. It knows every ``.py`` and extension-module
  file in the *deep* directories (the roots, the packages below them, the directories of
  loaded project modules) with its stat key and the SHA-256 of its content, and the stat key
  of every directory it tracks. :meth:`SourceTree.poll` stats all of them (a few microseconds
  each), re-lists a directory whose key changed, and hashes a file whose key changed. Watcher
  events are only hints: paths to look at as well. It also tracks *data*: the files that
  modules read while they were imported (any name, hashed like sources) and the directories
  they listed (statted, and re-listed when their key changes: an entry added, removed or
  renamed is a change of the directory), recorded by :mod:`testserver.hotreload.importreads`.

Why not trust the watcher thread: a client that saves a file and sends ``run-tests`` at once
expects the new content, and the observer thread may not have seen the event yet (the kernel
has queued it, but the thread has not run). Two synchronous ways see every write that
finished before the command arrived:

- :class:`testserver.hotreload.changesignal.ChangeSignal` (Linux): our own non-blocking inotify
  descriptor on the tracked directories. The kernel queues an event inside the writer's
  ``write``/``rename`` call, so "nothing queued" at a command means "nothing changed": the
  scan is skipped, and a command costs one ``read`` that fails with ``EAGAIN``.
- the stat scan, which runs whenever the signal says something happened, when it is not
  available (other systems, no inotify watches left), and always with ``--poll`` (network
  and container mounts do not deliver inotify events for changes made elsewhere).

Why hash, and why not trust stat alone: a stat key that changed without the content changing
(``touch``, a checkout of the same text) reloads nothing; a content change that left the key
alone is caught by the *racy* rule borrowed from git's index: a file whose mtime was less
than :data:`RACY_WINDOW_NS` old when it was statted is re-hashed on every poll until it is
older, because a second write inside the file system's timestamp granularity can leave
mtime and size unchanged. Bytecode caches are not this module's business (see reloading).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler

__all__ = [
    "ChangeRecorder",
    "FileState",
    "SourceTree",
    "TreeChanges",
    "Watcher",
    "file_kind",
    "is_ignored_name",
]

RACY_WINDOW_NS = 2_000_000_000
"""A file whose mtime is younger than this when statted is re-hashed on the next poll: 2 s
covers the coarsest common timestamp granularity (FAT), 1 s ones (HFS+, some NFS) and the
kernel tick of ext4/xfs/btrfs (coarse clock, a few ms)."""

POLL_INTERVAL = 1.0
"""Seconds between two snapshots of the ``--poll`` observer: latency only, the stat scan at
each command does not depend on it."""

SOURCE_SUFFIX = ".py"

EXTENSION_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)
"""Compiled extension modules (``.so``, ``.pyd``): cannot be reloaded, only restarted."""

IGNORED_DIR_NAMES = frozenset({"__pycache__", "node_modules", "site-packages", "dist-packages"})
"""Directories never scanned (besides hidden ones): bytecode caches and installed packages."""

EDITOR_TEMP_SUFFIXES = (".swp", ".swx", ".swo", ".tmp", ".bak", ".orig", "~")
"""Names editors write while saving (vim swap files, backups, atomic-save temporaries)."""

IGNORED_EVENT_TYPES = frozenset({"opened", "closed_no_write"})
"""Reading a file (our own hashing, imports) is not a change."""

READ_CHUNK = 1 << 20
"""Files are hashed in 1 MiB reads, so a big extension module never sits in memory whole."""

UNREADABLE = b"unreadable"
"""Digest recorded for a file that exists but cannot be read (the import will report why)."""

Key = tuple[int, int, int, int]
"""What a stat says about a file or directory: (mtime_ns, size, inode, ctime_ns)."""


def is_ignored_name(name: str) -> bool:
    """True for names that are never sources: hidden, caches, editor temporaries."""
    return (
        name.startswith(".")
        or name in IGNORED_DIR_NAMES
        or name.endswith(EDITOR_TEMP_SUFFIXES)
        or name == "4913"  # vim probes a directory by creating and deleting this file
    )


def file_kind(path: str) -> str | None:
    """``"source"`` for ``.py``, ``"extension"`` for compiled modules, else ``None``."""
    name = os.path.basename(path)
    if is_ignored_name(name):
        return None
    if name.endswith(SOURCE_SUFFIX):
        return "source"
    if name.endswith(EXTENSION_SUFFIXES):
        return "extension"
    return None


_PREFIXES = frozenset(
    os.path.realpath(p)
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)
)


def is_venv_dir(path: str) -> bool:
    """A virtual environment (``pyvenv.cfg``) or this interpreter's prefix: never scanned."""
    return path in _PREFIXES or os.path.isfile(os.path.join(path, "pyvenv.cfg"))


# ---------------------------------------------------------------------------------------------
# The watchdog part: record, never act


class ChangeRecorder(FileSystemEventHandler):
    """A watchdog handler that adds the paths of relevant events to a thread-safe set.

    Relevant: a directory, a ``.py`` file or an extension module, with no hidden or
    ``__pycache__`` component below its root (``.git`` churn is dropped here, not later).
    """

    def __init__(self, roots: Iterable[str] = ()) -> None:
        super().__init__()
        self.roots = [os.path.join(os.path.realpath(r), "") for r in roots]
        self._lock = threading.Lock()
        self._paths: set[str] = set()
        self.data: frozenset[str] = frozenset()
        """Data files and listed directories: relevant whatever their name, and so is every
        entry of a listed directory (replaced whole, never mutated: read without the lock)."""

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.event_type in IGNORED_EVENT_TYPES:
            return
        paths = [os.fsdecode(event.src_path)]
        if event.dest_path:
            paths.append(os.fsdecode(event.dest_path))
        keep = [p for p in paths if self._relevant(p, event.is_directory)]
        if keep:
            with self._lock:
                self._paths.update(keep)

    def take(self) -> set[str]:
        """Return and forget the recorded paths."""
        with self._lock:
            paths, self._paths = self._paths, set()
        return paths

    def _relevant(self, path: str, is_directory: bool) -> bool:
        if path in self.data or os.path.dirname(path) in self.data:
            return True
        below = path
        for root in self.roots:
            if path.startswith(root):
                below = path[len(root) :]
                break
        parts = below.split(os.sep)
        if any(is_ignored_name(part) for part in parts[:-1]):
            return False
        if is_directory:
            return not is_ignored_name(parts[-1])
        return file_kind(path) is not None


class Watcher:
    """Runs an observer over ``roots`` that feeds a :class:`ChangeRecorder`.

    ``observer`` (an unstarted watchdog observer) replaces the default one: watchdog's
    ``Observer`` (inotify on Linux), or a ``PollingObserver`` when ``poll`` is true.
    """

    def __init__(self, roots: Iterable[str], *, poll: bool = False, observer: Any = None) -> None:
        real = (os.path.realpath(r) for r in roots)
        self.roots = [r for r in dict.fromkeys(real) if os.path.isdir(r)]
        self.recorder = ChangeRecorder(self.roots)
        self.observer = observer if observer is not None else _default_observer(poll)
        self.error: str | None = None
        self._started = False
        self._extra: set[str] = set()
        self._data_dirs: set[str] = set()

    def start(self) -> str | None:
        """Schedule every root and start the observer; return why that failed, or ``None``.

        A failure (no inotify watches left, a root that vanished) is not fatal: the stat
        scan still sees every edit of a known file; only brand-new directories outside the
        tracked packages go unnoticed until a ``reload`` command.
        """
        try:
            for root in self.roots:
                self.observer.schedule(self.recorder, root, recursive=True)
            self.observer.start()
            self._started = True
            self._schedule_data()
        except Exception as error:  # noqa: BLE001 - any watchdog failure only costs latency
            self.error = f"file watching is off ({type(error).__name__}: {error})"
            self._stop()
        return self.error

    def take(self) -> set[str]:
        """The paths recorded since the last call."""
        return self.recorder.take()

    def watch_data(self, files: Iterable[str], dirs: Iterable[str]) -> None:
        """Also record events on these data files and listed directories; watch the
        directories holding them that lie outside the roots (those not watched yet)."""
        files, dirs = set(files), set(dirs)
        self.recorder.data = frozenset(files | dirs)
        self._data_dirs = {os.path.dirname(p) for p in files | dirs} | dirs
        if self._started:
            self._schedule_data()

    def _schedule_data(self) -> None:
        for path in sorted(self._data_dirs - self._extra):
            if any(path == r or path.startswith(r + os.sep) for r in self.roots):
                continue
            if not os.path.isdir(path):
                continue  # its parent's event (if watched) or the stat scan sees it later
            try:
                self.observer.schedule(self.recorder, path, recursive=False)
            except Exception:  # noqa: BLE001, S112 - a hint lost: the stat scan still runs
                continue
            self._extra.add(path)

    def close(self) -> None:
        """Stop the observer thread and wait for it."""
        self._stop()

    def _stop(self) -> None:
        if self._started:
            self._started = False
            self.observer.stop()
            self.observer.join()
        else:
            self.observer.unschedule_all()


def _default_observer(poll: bool) -> Any:
    if poll:
        from watchdog.observers.polling import PollingObserver

        return PollingObserver(timeout=POLL_INTERVAL)
    from watchdog.observers import Observer

    return Observer()


# ---------------------------------------------------------------------------------------------
# The stat-and-hash scan


@dataclass
class FileState:
    """What we know about one tracked file."""

    key: Key
    digest: bytes | None
    """SHA-256 of the content, read before any import of it; ``None``: unknown, so the
    next poll reports the file as modified."""
    settled: bool
    """The stat was taken long enough after the mtime that a rewrite must change the key."""


@dataclass
class TreeChanges:
    """One poll's findings: absolute real paths."""

    modified: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    """Event paths outside the tracked directories (the caller checks them against the
    files of loaded modules)."""

    def __bool__(self) -> bool:
        return bool(self.modified or self.added or self.removed or self.foreign)

    def paths(self) -> list[str]:
        """Every changed path (foreign hints excluded), sorted."""
        return sorted({*self.modified, *self.added, *self.removed})


class SourceTree:
    """Tracks the source files under ``roots``: see the module docstring.

    ``suspect_after_ns``: a file whose mtime is not older than this at the first scan may
    have changed after it was imported, so its digest is recorded as unknown (it is
    reloaded once). ``clock`` returns wall time in ns (injectable for tests).
    """

    def __init__(
        self,
        roots: Iterable[str],
        *,
        suspect_after_ns: int | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.roots = [r for r in dict.fromkeys(os.path.realpath(r) for r in roots)]
        self.suspect_after_ns = suspect_after_ns
        self.clock = clock
        self._initial = False
        self._data_tracked = False
        self.files: dict[str, FileState] = {}
        self.dirs: dict[str, tuple[Key, bool, bool]] = {}
        """Directory -> (stat key, settled, deep). Deep directories have their files
        tracked and their subdirectories listed; shallow ones are only statted, to notice
        when they become packages."""
        self.data_files: set[str] = set()
        """Data files read at import: in :attr:`files` while they exist."""
        self.listings: dict[str, tuple[Key | None, bool, frozenset[str] | None]] = {}
        """Directory listed at import -> (stat key, settled, entry names); ``None`` when
        it does not exist."""

    # -- building ------------------------------------------------------------------------

    def scan(self) -> None:
        """Walk the roots and record every directory and file (the initial state)."""
        self._initial = True
        try:
            for root in self.roots:
                if os.path.isdir(root):
                    self._add_dir(root, deep=True, changes=None)
        finally:
            self._initial = False

    def track_dir(self, path: str) -> list[str]:
        """Track the directory of a loaded module too; return its files new to us."""
        path = os.path.realpath(path)
        state = self.dirs.get(path)
        if state is not None and state[2]:
            return []
        changes = TreeChanges()
        self._add_dir(path, deep=True, changes=changes)
        return changes.added

    def is_tracked_file(self, path: str) -> bool:
        return path in self.files

    def record(self, path: str) -> None:
        """Hash ``path`` now (a file we learned about after it was imported)."""
        self._hash_into(path, changes=None)

    def track_data(self, files: set[str], dirs: set[str], *, unknown: bool = False) -> None:
        """Track exactly these data files and listed directories from now on (those new to
        us are recorded as they are now; a missing file is looked for at every poll).

        ``unknown``: the new ones were read some time ago, so they may have changed since;
        the next poll reports them as changed.
        """
        self._initial, self._data_tracked = not self._data_tracked, True
        try:
            for path in self.data_files - files:
                if file_kind(path) is None or not self._in_deep_dir(path):
                    self.files.pop(path, None)
            for path in files - self.data_files:
                if path not in self.files and os.path.isfile(path):
                    self._hash_into(path, changes=None)
                    if unknown:  # as if edited after it was read: hashed and reported
                        self.files[path] = FileState(self.files[path].key, None, False)
            self.data_files = set(files)
            for path in set(self.listings) - dirs:
                del self.listings[path]
            for path in dirs - set(self.listings):
                key = _stat_key(path, directory=True)
                names = _entry_names(path) if key is not None else None
                if key is not None and (unknown or (self._initial and self._suspect(key))):
                    key, names = None, frozenset({"\0unknown"})  # reported by the next poll
                self.listings[path] = (key, key is not None and self._settled(key), names)
        finally:
            self._initial = False

    def data_watch_dirs(self) -> set[str]:
        """Directories to watch for data changes: the existing listed directories and the
        parents of data files and listed directories (where they appear and vanish)."""
        wanted = {p for p, (_, _, names) in self.listings.items() if names is not None}
        for path in self.data_files | set(self.listings):
            wanted.add(os.path.dirname(path))
        return {p for p in wanted if os.path.isdir(p)}

    # -- polling -------------------------------------------------------------------------

    def poll(self, hints: Iterable[str] = (), *, full: bool = False) -> TreeChanges:
        """Find what changed since the last poll, update the recorded state, report it.

        ``hints`` are paths from the watcher. ``full`` re-lists every directory and
        re-hashes every file whatever its stat says (the ``reload`` command).
        """
        changes = TreeChanges()
        for path in list(self.dirs):
            self._poll_dir(path, changes, full)
        for path in sorted(set(hints)):
            self._hint(os.path.realpath(path), changes)
        for path in list(self.files):
            self._poll_file(path, changes, full)
        self._poll_data(changes, full)
        return changes

    def _poll_data(self, changes: TreeChanges, full: bool) -> None:
        """Data files that (re)appeared, and listed directories whose entries changed."""
        for path in sorted(self.data_files):
            if path not in self.files and os.path.isfile(path):
                self._hash_into(path, changes)
        for path, (old_key, settled, old_names) in list(self.listings.items()):
            key = _stat_key(path, directory=True)
            if key is not None and key == old_key and settled and not full:
                continue
            names = _entry_names(path) if key is not None else None
            self.listings[path] = (key, key is not None and self._settled(key), names)
            if names == old_names:
                continue
            if old_names is None:
                changes.added.append(path)
            elif names is None:
                changes.removed.append(path)
            else:
                changes.modified.append(path)

    def _poll_dir(self, path: str, changes: TreeChanges, full: bool) -> None:
        state = self.dirs.get(path)
        if state is None:  # dropped while polling a parent
            return
        key = _stat_key(path, directory=True)
        if key is None:
            self._drop_dir(path)
            return
        old_key, settled, deep = state
        if key == old_key and settled and not full:
            return
        self.dirs[path] = (key, self._settled(key), deep)
        if not deep and _is_package(path):
            deep = True
        self._list_dir(path, deep, changes)

    def _hint(self, path: str, changes: TreeChanges) -> None:
        parent = os.path.dirname(path)
        state = self.dirs.get(parent)
        if path in self.files or path in self.dirs:
            return  # polled anyway
        if state is not None and state[2]:
            if os.path.isdir(path):
                self._add_dir(path, deep=_is_package(path), changes=changes)
            elif file_kind(path) is not None and os.path.isfile(path):
                self._hash_into(path, changes)
            return
        if file_kind(path) is not None:
            changes.foreign.append(path)

    def _poll_file(self, path: str, changes: TreeChanges, full: bool) -> None:
        state = self.files.get(path)
        if state is None:
            return
        key = _stat_key(path, directory=False)
        if key is None:
            del self.files[path]
            changes.removed.append(path)
            return
        if key == state.key and state.settled and not full:
            return
        self._hash_into(path, changes)

    # -- helpers -------------------------------------------------------------------------

    def _add_dir(self, path: str, *, deep: bool, changes: TreeChanges | None) -> None:
        key = _stat_key(path, directory=True)
        if key is None:
            return
        self.dirs[path] = (key, self._settled(key), deep)
        self._list_dir(path, deep, changes)

    def _list_dir(self, path: str, deep: bool, changes: TreeChanges | None) -> None:
        """Record the entries of ``path`` we do not know yet (all of them, at the start)."""
        key, settled, _ = self.dirs[path]
        self.dirs[path] = (key, settled, deep)
        try:
            entries = list(os.scandir(path))
        except OSError:
            return
        for entry in entries:
            child = os.path.join(path, entry.name)
            if is_ignored_name(entry.name):
                continue
            if entry.is_dir(follow_symlinks=False):
                if child in self.dirs or is_venv_dir(child):
                    continue
                if deep:  # below a shallow directory we only wait for an __init__.py
                    self._add_dir(child, deep=_is_package(child), changes=changes)
            elif deep and child not in self.files and file_kind(child) is not None:
                self._hash_into(child, changes)

    def _drop_dir(self, path: str) -> None:
        """Forget a vanished directory and everything below it (files show up as removed)."""
        prefix = path + os.sep
        for other in [d for d in self.dirs if d == path or d.startswith(prefix)]:
            del self.dirs[other]

    def _hash_into(self, path: str, changes: TreeChanges | None) -> None:
        key = _stat_key(path, directory=False)
        if key is None:
            return
        digest = _digest(path)
        old = self.files.get(path)
        if self._initial and self._suspect(key):  # maybe edited after it was imported:
            self.files[path] = FileState(key, None, False)  # reported by the next poll
        else:
            self.files[path] = FileState(key, digest, self._settled(key))
        if changes is None:
            return
        if old is None:
            changes.added.append(path)
        elif old.digest != digest:
            changes.modified.append(path)

    def _in_deep_dir(self, path: str) -> bool:
        state = self.dirs.get(os.path.dirname(path))
        return state is not None and state[2]

    def _settled(self, key: Key) -> bool:
        return self.clock() - key[0] > RACY_WINDOW_NS

    def _suspect(self, key: Key) -> bool:
        return self.suspect_after_ns is not None and key[0] >= self.suspect_after_ns


def _is_package(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "__init__.py"))


def _entry_names(path: str) -> frozenset[str] | None:
    try:
        return frozenset(os.listdir(path))
    except OSError:
        return None


def _stat_key(path: str, *, directory: bool) -> Key | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    is_dir = (st.st_mode & 0o170000) == 0o040000
    if is_dir != directory:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


def _digest(path: str) -> bytes:
    sha = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(READ_CHUNK):
                sha.update(chunk)
    except OSError:
        return UNREADABLE
    return sha.digest()
