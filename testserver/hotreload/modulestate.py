"""Which module's import changed which other module's state: the dynamic import edges.

A module's import can change another module: append to a registry, bump a counter, add to a
list that a base class's ``__init_subclass__`` keeps. The static graph
(:mod:`testserver.hotreload.modulegraph`) cannot see this, and a reload must know it: when a module
is purged, what its last execution added elsewhere must go too.

- :func:`state_fingerprint` captures a module's state cheaply: the identity (and, for small
  containers, the items) of its globals and of its classes' attributes.
- :class:`StateTracker`, while active, hands project source modules a loader whose
  ``exec_module`` compares the fingerprints of the project modules they import before and
  after they run. ``contributions[m]`` is the set of modules whose state the last execution
  of ``m`` changed (a failed execution counts, up to where it failed). Its ``reads``
  (:class:`testserver.hotreload.importreads.ImportReads`) record, over the same imports, the files
  each module read and the directories it listed: the module's data sources.
- :func:`spawn_replay` measures this for the modules loaded at startup, before any tracker
  existed: a forked child purges the project, imports it again with a tracker on, and sends
  the relation (and the reads) back as JSON through a pipe (:class:`Replay`).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import json
import os
import select
import signal
import sys
import time
import types
from collections.abc import Callable, Iterator

from testserver.hotreload.importreads import LOADER, ImportReads
from testserver.hotreload.modulegraph import ImportGraph, ModuleMap, namespace_of

__all__ = ["Replay", "StateTracker", "spawn_replay", "state_fingerprint"]

SMALL_CONTAINER = 64
"""Containers up to this size are fingerprinted item by item, bigger ones by id and length
(a 320,000-entry table must not cost every import milliseconds)."""

REPLAY_TIMEOUT = 120.0
"""Seconds the first reload waits for the startup replay; a project whose import takes longer
has its startup contributions treated as unknown (see :class:`Replay`)."""


def state_fingerprint(module: object) -> dict[str, object]:
    """Identity and shallow content of a module's globals and of its classes' attributes.

    Submodule attributes and dunder names are left out (importing a submodule rebinds its
    parent's attribute; that is not state).
    """
    namespace = namespace_of(module)
    name = namespace.get("__name__", "")
    result: dict[str, object] = {}
    for key, value in list(namespace.items()):
        if key.startswith("__") or isinstance(value, types.ModuleType):
            continue
        result[key] = _shallow(value)
        if isinstance(value, type) and value.__module__ == name:
            for attr, item in list(vars(value).items()):
                if not (attr.startswith("__") and attr.endswith("__")):
                    result[f"{key}.{attr}"] = _shallow(item)
    return result


def _shallow(value: object) -> object:
    try:
        if type(value) in (dict, list, tuple, set, frozenset) and len(value) > SMALL_CONTAINER:
            return (id(value), len(value))
        if type(value) is dict:
            return (id(value), tuple((id(k), id(v)) for k, v in list(value.items())))
        if type(value) in (list, tuple, set, frozenset):
            return (id(value), tuple(map(id, list(value))))
    except Exception:  # noqa: BLE001 - odd containers: identity only
        pass
    return id(value)


class StateTracker:
    """Measures, per project module execution, which imported project modules it changed.

    Active only inside :meth:`tracking`: a meta path finder then hands project source
    modules a loader whose ``exec_module`` is wrapped (a subclass of the real loader class, so
    ``isinstance`` checks on ``__loader__`` still pass). Outside, the wrapper does nothing.
    """

    def __init__(self, modules: ModuleMap, graph: ImportGraph) -> None:
        self.modules = modules
        self.graph = graph
        self.contributions: dict[str, set[str]] = {}
        """Module name -> project modules whose state its last tracked execution changed."""
        self.executed: list[str] = []
        """Modules executed during the current (or last) :meth:`tracking` block."""
        self.reads = ImportReads(modules.roots, modules.is_project)
        """The files and directories each module read while it was imported."""
        self.active = False
        self._finder = _TrackingFinder(self)
        self._stack: list[dict[str, object]] = []
        self._baselines: dict[str, object] = {}

    @contextlib.contextmanager
    def tracking(self) -> Iterator[None]:
        """Track the imports made inside the ``with`` block."""
        self.executed = []
        self.reads.reset(LOADER)  # the load runs again: what it reads is recorded anew
        sys.meta_path.insert(0, self._finder)
        self.active = True
        try:
            with self.reads.recording():
                yield
        finally:
            self.active = False
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(self._finder)
            self._stack.clear()
            self._baselines.clear()

    def before(self, name: str, path: str) -> None:
        if self.active:
            self.reads.reset(name)
            deps = self._deps(name, path)
            self._stack.append({d: state_fingerprint(sys.modules.get(d)) for d in deps})

    def after(self, name: str, path: str) -> None:
        if not self.active or not self._stack:
            return
        before = self._stack.pop()
        changed = set()
        for dep in self._deps(name, path):
            reference = before.get(dep, self._baselines.get(dep))
            now = state_fingerprint(sys.modules.get(dep))
            if reference is not None and now != reference:
                changed.add(dep)
                for outer in self._stack:  # this change is not the enclosing modules' doing
                    if dep in outer:
                        outer[dep] = now
            self._baselines[dep] = now
        self.contributions[name] = changed
        self.executed.append(name)
        self._baselines[name] = state_fingerprint(sys.modules.get(name))

    def _deps(self, name: str, path: str) -> set[str]:
        """Loaded project modules that ``name`` imports, and its parent packages."""
        candidates = set(self.graph.candidates(name, path))
        parent = name.rpartition(".")[0]
        while parent:
            candidates.add(parent)
            parent = parent.rpartition(".")[0]
        return {c for c in candidates if c != name and self.modules.is_project(c)}


class _TrackingFinder:
    """Finds specs like the rest of ``sys.meta_path`` does, then wraps project loaders."""

    def __init__(self, tracker: StateTracker) -> None:
        self.tracker = tracker
        self._busy = False

    def find_spec(self, name: str, path: object = None, target: object = None) -> object:
        if not self.tracker.active or self._busy:
            return None
        self._busy = True
        try:
            spec = None
            for finder in list(sys.meta_path):
                find = getattr(finder, "find_spec", None)
                if finder is self or find is None:
                    continue
                spec = find(name, path, target)
                if spec is not None:
                    break
        finally:
            self._busy = False
        loader = getattr(spec, "loader", None)
        origin = getattr(spec, "origin", None)
        if isinstance(loader, importlib.machinery.SourceFileLoader) and origin:
            real = os.path.realpath(origin)
            if self.tracker.modules.in_project(real):
                spec.loader = _tracking_loader(loader, self.tracker, real)  # type: ignore[union-attr]
        return spec


_TRACKING_TYPES: dict[type, type] = {}


def _tracking_loader(loader: object, tracker: StateTracker, path: str) -> object:
    """A copy of ``loader`` whose class is a subclass that reports to ``tracker``."""
    base = type(loader)
    cls = _TRACKING_TYPES.get(base)
    if cls is None:

        def exec_module(self: object, module: types.ModuleType) -> None:
            owner = self._testserver_tracker  # type: ignore[attr-defined]
            where = self._testserver_path  # type: ignore[attr-defined]
            owner.before(module.__name__, where)
            try:
                base.exec_module(self, module)  # type: ignore[attr-defined]
            finally:
                owner.after(module.__name__, where)

        cls = type(base.__name__, (base,), {"exec_module": exec_module})
        cls.__module__ = base.__module__
        _TRACKING_TYPES[base] = cls
    wrapped = cls.__new__(cls)
    wrapped.__dict__.update(vars(loader))
    wrapped._testserver_tracker = tracker
    wrapped._testserver_path = path
    return wrapped


ReplayResult = tuple[dict[str, set[str]], dict[str, dict[str, list[str]]]]
"""What the replay child measured: contributions, and reads as :meth:`ImportReads.export`."""


class Replay:
    """A forked child measuring the contributions of the modules loaded at startup."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd

    def finished(self) -> bool:
        """True once the child has exited (it is reaped then; never signalled again)."""
        if self.pid <= 0:
            return True
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid = self.pid
        if pid == 0:
            return False
        self.pid = -1
        return True

    def result(self, timeout: float = REPLAY_TIMEOUT) -> ReplayResult | None:
        """Wait for the child; its contributions and reads (see :meth:`ImportReads.export`),
        or ``None`` if it failed or took too long."""
        data = bytearray()
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                    return None
                chunk = os.read(self.fd, 1 << 16)
                if not chunk:
                    break
                data += chunk
        finally:
            self.close()
        try:
            decoded = json.loads(bytes(data))
            contributions = {k: set(v) for k, v in decoded["contributions"].items()}
            return contributions, dict(decoded["reads"])
        except (ValueError, AttributeError, TypeError, KeyError):
            return None

    def close(self) -> None:
        """Kill the child if needed, reap it and close the pipe."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.pid > 0:  # not reaped yet, so the pid is still the child's
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.waitpid(self.pid, 0)
            self.pid = -1


def spawn_replay(load_project: Callable[[], object], tracker: StateTracker) -> Replay | None:
    """Fork a child that purges the project modules and loads them again with ``tracker``
    on, then writes ``tracker.contributions`` as JSON to a pipe the returned :class:`Replay`
    reads. The child's stdio is ``/dev/null`` and it closes every other inherited fd."""
    project = list(tracker.modules.project())
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        return None
    if pid == 0:  # pragma: no cover - runs in the child
        _replay_child(load_project, tracker, project, write_fd)
    os.close(write_fd)
    return Replay(pid, read_fd)


def _replay_child(
    load_project: Callable[[], object], tracker: StateTracker, project: list[str], fd: int
) -> None:  # pragma: no cover - runs in the child
    code = 1
    try:
        null = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(null, target)
        os.closerange(3, fd)
        os.closerange(fd + 1, max(fd + 2, os.sysconf("SC_OPEN_MAX")))
        sys.dont_write_bytecode = True
        for name in project:
            sys.modules.pop(name, None)
        importlib.invalidate_caches()
        with tracker.tracking():
            load_project()
        contributions = {k: sorted(v) for k, v in tracker.contributions.items()}
        reads = tracker.reads.export()
        data = json.dumps({"contributions": contributions, "reads": reads}).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        code = 0
    except BaseException:  # noqa: BLE001, S110 - the parent sees no result and copes
        pass
    finally:
        os._exit(code)
