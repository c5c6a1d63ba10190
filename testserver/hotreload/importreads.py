"""The files a module reads and the directories it lists while it is being imported.

A test module may build its tests from data: one test method per file of a directory, a
table read from a JSON file. Those files are sources of the module as much as its ``.py``:
when one changes, is added or is deleted, the module must be imported again, or the warm
server lists tests that a fresh process would not.

:class:`ImportReads` records them with an audit hook (:func:`sys.addaudithook`) on the
events ``open`` (``open()``, ``io.open``, ``os.open``, ``pathlib.Path.open``/``read_text``),
``os.listdir`` and ``os.scandir`` (``os.walk``, ``glob.glob``, ``pathlib.Path.iterdir`` and
``glob`` use one of the two; the same events exist in Python 3.10 to 3.13). Each event is
credited to the innermost module being imported: the innermost ``<module>`` frame on the
stack whose ``__spec__._initializing`` is set (true exactly while the import system executes
that module). A read made during a load outside any import (a ``load_tests`` function that
builds a ``doctest.DocFileSuite``) is credited to :data:`LOADER`: a change to it calls for a
new discovery, which calls ``load_tests`` again, but purges no module. Ignored: the import
system's own listings, reads of module files (sources, bytecode, extensions: tracked as
sources anyway; the import system's ``get_data`` of other files, which ``DocFileSuite`` and
``pkgutil.get_data`` use, counts), unittest discovery listing directories, files opened
for writing (and reading back what the same load wrote), and paths below the interpreter's
prefixes, ``site-packages``/``dist-packages``, testserver's own package, ``/proc``, ``/sys``
and ``/dev``. A module that is not a project module is only recorded when it reads below a
root (then a change to that file means a restart).

Audit hooks cannot be removed, so the hook is installed once, at the first
:meth:`ImportReads.recording`, and does nothing (one global lookup and one comparison)
while no recording is active: in the workers that run tests, say.
"""

from __future__ import annotations

import contextlib
import os
import sys
import unittest.loader
from _thread import get_ident
from collections.abc import Callable, Iterable, Iterator

from testserver.hotreload.modulegraph import INSTALL_DIR_NAMES, PREFIXES, SERVER_DIR, is_below
from testserver.hotreload.watcher import EXTENSION_SUFFIXES

__all__ = ["LOADER", "ImportReads"]

LOADER = ""
"""The name reads made by a load outside any import are credited to (no module has it)."""

RECORDED_EVENTS = frozenset({"open", "os.listdir", "os.scandir"})
"""Audit events that read a file or a directory listing."""

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
"""An ``open`` with any of these flags writes: its file is output, not a source."""

SYSTEM_DIRS = ("/proc", "/sys", "/dev")
"""Kernel views, never data files of a project."""

IMPORT_SYSTEM_PREFIX = "<frozen importlib"
"""Code file name of the import system's frames (finding and reading modules)."""

CODE_SUFFIXES = (".py", ".pyc", *EXTENSION_SUFFIXES)
"""Module files (the import system's, ``linecache``'s and ``inspect``'s reads): tracked as
sources anyway."""

DISCOVERY_FILE = unittest.loader.__file__
"""unittest's discovery lists the packages it walks: the source tree tracks those."""

DISABLE_VARIABLE = "TESTSERVER_NO_IMPORT_READS"
"""Set to a non-empty value in the server's environment, nothing is recorded and no hook is
installed: an escape hatch, and the control arm of ``bench/replay_history.py``."""

_active: ImportReads | None = None
"""The recording in progress, if any: the switch the audit hook reads first."""

_installed = False


def _audit_hook(event: str, args: tuple[object, ...]) -> None:
    recorder = _active
    if recorder is None or event not in RECORDED_EVENTS or get_ident() != recorder._thread:
        return  # off, another event, or another thread (the watchdog observer's scans)
    recorder._on_event(event, args)


class ImportReads:
    """Per module name, what its last import read (see the module docstring).

    ``roots``: real paths of the watched roots. ``is_project``: whether the module loaded as
    a name is a project module right now.
    """

    def __init__(self, roots: Iterable[str], is_project: Callable[[str], bool]) -> None:
        self.roots = list(roots)
        self.is_project = is_project
        self.files: dict[str, set[str]] = {}
        """Module name -> real paths of the files it opened for reading."""
        self.dirs: dict[str, set[str]] = {}
        """Module name -> real paths of the directories it listed."""
        self.foreign: set[str] = set()
        """Recorded modules that were not project modules (cannot be reloaded in place)."""
        self._busy = False
        self._thread = 0
        """The thread that records: the one that loads."""
        self._real: dict[object, str | None] = {}
        """Path argument -> real path, for one recording (a directory listed by every module
        is resolved once)."""
        self._written: set[str] = set()
        """Files this recording's load opened for writing: never its inputs."""

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Record the reads of the imports made inside the ``with`` block."""
        global _active, _installed
        if os.environ.get(DISABLE_VARIABLE):
            yield
            return
        if not _installed:
            sys.addaudithook(_audit_hook)
            _installed = True
        previous, _active = _active, self
        self._thread = get_ident()
        self._real.clear()
        self._written.clear()
        try:
            yield
        finally:
            _active = previous
            self._real.clear()
            self._written.clear()

    def reset(self, name: str) -> None:
        """Forget what ``name`` read: it is being executed again. Paths that do not exist
        now are kept: a module that checks ``os.path.isdir`` (not audited) before listing
        would otherwise never be told that the directory came back."""
        for records in (self.files, self.dirs):
            absent = {p for p in records.pop(name, ()) if not os.path.lexists(p)}
            if absent:
                records[name] = absent
        self.foreign.discard(name)

    def merge(self, other: dict[str, dict[str, list[str]]]) -> None:
        """Add reads measured elsewhere (:meth:`export`), for modules not recorded here."""
        for name, reads in other.items():
            if name in self.files or name in self.dirs:
                continue
            if reads.get("files"):
                self.files[name] = set(reads["files"])
            if reads.get("dirs"):
                self.dirs[name] = set(reads["dirs"])
            if reads.get("foreign"):
                self.foreign.add(name)

    def export(self) -> dict[str, dict[str, list[str]]]:
        """The records as JSON-able data (the startup replay child sends them)."""
        names = set(self.files) | set(self.dirs)
        return {
            name: {
                "files": sorted(self.files.get(name, ())),
                "dirs": sorted(self.dirs.get(name, ())),
                "foreign": [name] if name in self.foreign else [],
            }
            for name in names
        }

    def all_files(self) -> set[str]:
        return set().union(*self.files.values()) if self.files else set()

    def all_dirs(self) -> set[str]:
        return set().union(*self.dirs.values()) if self.dirs else set()

    def readers(self, path: str) -> set[str]:
        """Modules that read the file ``path`` or listed the directory ``path``."""
        return {n for n, paths in self.files.items() if path in paths} | {
            n for n, paths in self.dirs.items() if path in paths
        }

    # -- the hook ------------------------------------------------------------------------

    def _on_event(self, event: str, args: tuple[object, ...]) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            self._record(event, args)
        except Exception:  # noqa: BLE001, S110 - recording must never break an import
            pass
        finally:
            self._busy = False

    def _record(self, event: str, args: tuple[object, ...]) -> None:
        raw = args[0] if args else None
        if event == "open" and isinstance(args[2], int) and args[2] & WRITE_FLAGS:
            if (path := self._resolve(raw)) is not None:
                self._written.add(path)  # output of this load: reading it back is no input
            return
        frame = sys._getframe(3)  # _record <- _on_event <- _audit_hook <- the caller
        caller = frame.f_code.co_filename
        if (caller.startswith(IMPORT_SYSTEM_PREFIX) and event != "open") or _is_code(raw):
            return
        name = _importing_module(frame)
        if name is None:
            if caller == DISCOVERY_FILE:
                return
            name = LOADER
        path = self._resolve(raw)
        if path is None or path in self._written or not _wanted(path):
            return
        project = name == LOADER or self.is_project(name)
        if not project and not any(is_below(path, root) for root in self.roots):
            return
        target = self.files if event == "open" else self.dirs
        target.setdefault(name, set()).add(path)
        if not project:
            self.foreign.add(name)

    def _resolve(self, raw: object) -> str | None:
        try:
            return self._real[raw]
        except (KeyError, TypeError):
            path = _real_path(raw)
            if isinstance(raw, (str, bytes)):
                self._real[raw] = path
            return path


def _importing_module(frame: object) -> str | None:
    """The name of the innermost module being imported on the stack from ``frame`` out."""
    while frame is not None:
        code = frame.f_code  # type: ignore[attr-defined]
        if code.co_name == "<module>":
            namespace = frame.f_globals  # type: ignore[attr-defined]
            spec = namespace.get("__spec__")
            if getattr(spec, "_initializing", False):
                name = namespace.get("__name__")
                return name if isinstance(name, str) else None
        frame = frame.f_back  # type: ignore[attr-defined]
    return None


def _is_code(path: object) -> bool:
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return isinstance(path, str) and path.endswith(CODE_SUFFIXES)


def _real_path(path: object) -> str | None:
    """The real absolute path an audit event's path argument names (``None``: an fd)."""
    if path is None:
        path = "."
    if isinstance(path, int):
        return None
    try:
        text = os.fsdecode(os.fspath(path))  # type: ignore[arg-type]
    except TypeError:
        return None
    return os.path.realpath(text)


def _wanted(path: str) -> bool:
    """Whether a read of ``path`` can be a project's data (see the module docstring)."""
    if path.endswith(".pyc") or f"{os.sep}__pycache__" in path:
        return False
    if any(path == d or is_below(path, d) for d in SYSTEM_DIRS):
        return False
    if path == SERVER_DIR or is_below(path, SERVER_DIR):
        return False
    if any(is_below(path, prefix) for prefix in PREFIXES):
        return False
    return not any(part in INSTALL_DIR_NAMES for part in path.split(os.sep))
