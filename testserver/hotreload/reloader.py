"""Hot reload between batches: make the warm server equal to a fresh process, or restart.

The server calls :meth:`Reloader.apply` before every ``list-tests``, ``run-tests`` and
``reload`` command, never while a batch runs (in forked children). One apply:

1. **Find changes** (:mod:`testserver.hotreload.watcher`): if the synchronous inotify signal says
   nothing happened in the tracked directories and the watchdog thread recorded nothing,
   return ``None`` at once. Otherwise (and always with ``--poll``) stat every tracked source
   file and directory and hash what looks different.
2. **Refuse what cannot be done in place**, returning a report whose ``restart`` says why
   (the server then re-executes itself on the same pipes): a compiled extension added,
   changed or removed; testserver's own source changed; a changed file that belongs to a
   loaded module that is not a project module (an installed package, a virtualenv under the
   root); a new file that shadows a loaded module.
3. **Purge** from ``sys.modules`` (and their package's attributes) the changed project
   modules, their importers, transitively, and every submodule of a purged package
   (:mod:`testserver.hotreload.modulegraph`). Each changed file's ``.pyc`` goes first: mtime
   *seconds* and size validate a pyc, so a file saved twice in one second could look fresh.
4. **Rediscover** with :func:`testserver.engine.loading.load` and a fresh loader: purged modules are
   imported again in the order discovery needs them, exactly as a cold process imports
   them. So a syntax or import error becomes unittest's failing ``_FailedTest`` for that
   module (and the module is not left in ``sys.modules``), unchanged modules are reused,
   new test modules are found and deleted ones are gone. Test objects of classes that did
   not change are reused, and so is unittest's per-file check of modules it already
   verified (:class:`_CachingLoader`).
5. **Follow the state that imports leave in other modules.** A module's import can change
   another module: a registry it appends to, a counter it bumps, the ``__init_subclass__``
   list of a base class. :class:`testserver.hotreload.modulegraph.StateTracker` measures this for
   every module executed during a reload (the globals and class attributes of the project modules
   it imports, before and after), and for the modules loaded at startup a forked child
   replays the project's import with the tracker on (or :func:`track_startup` measured the
   first load itself). Before purging, the modules the purged ones changed are purged too,
   with their importers, so that a deleted module's registration disappears; after
   rediscovery, a module that the new code changed is purged and rediscovered again.
6. **Check that nothing stale survived**, and widen or restart when something did:

   - every class, function and module object of the purged modules must be garbage. A
     quick proof (:mod:`testserver.hotreload.staleness`) does what the cyclic collector does on just
     the objects reachable from them: a reference count above the references from inside
     that set means a holder outside it. When that proves nothing, a full collection decides; an
     object that survives it is still referenced, by a registry, a list kept by
     ``__init_subclass__``... If the holder is an unaffected project module, it is purged as
     well and discovery runs again (at most :data:`MAX_ROUNDS` rounds); otherwise the server
     restarts and names the holder.
   - the project modules that the re-executed code imports (statically, transitively, and
     their parent packages) must have the same globals and class attributes as before (a
     safety net under the tracker: a change widens the reload to that module).
   - ``sys.path``, ``sys.meta_path``, ``sys.path_hooks`` and ``os.environ`` must be as they
     were: a re-import that changes process-wide state restarts the server.

Not detected (limits): state that the old version of a module put outside the project and
the new version no longer puts there (an environment variable it stopped setting); side
effects of C code; data read at import time other than through the audited ``open``,
``os.listdir`` and ``os.scandir`` (:mod:`testserver.hotreload.importreads`); what modules imported
outside a reload (lazily by a test under ``--isolation none``) or by a non-standard loader
(an import hook) changed at import. ``reload`` rescans and rehashes everything and rebuilds
every test object, but reimports only what changed; restart the server for the rest.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import time
import traceback
import typing
import unittest
import weakref
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from testserver.engine.loading import LoadSpec, TestIndex, flatten, load
from testserver.hotreload.changesignal import ChangeSignal
from testserver.hotreload.importreads import LOADER
from testserver.hotreload.modulegraph import (
    SERVER_DIR,
    ImportGraph,
    ModuleMap,
    forget_paths,
    is_below,
    module_names,
    namespace_of,
)
from testserver.hotreload.modulestate import Replay, StateTracker, spawn_replay, state_fingerprint
from testserver.hotreload.staleness import (
    failed_index,
    forget_bytecode,
    process_state,
    provably_garbage,
    purge,
    release,
    stale_holders,
)
from testserver.hotreload.watcher import SourceTree, TreeChanges, Watcher, file_kind

__all__ = ["ReloadReport", "Reloader", "track_startup"]

MAX_ROUNDS = 3
"""Purge-and-rediscover rounds per apply before restarting instead: each extra round widens
the reload to modules whose state the previous one touched; needing more than a couple means
import-time side effects too tangled to chase."""

FULL_COLLECTION_EVERY = 16
"""Reloads settled by the quick proof before a full collection frees their cyclic garbage
(the server freezes the heap after each reload, so it is never collected otherwise)."""

STARTUP_MARGIN_NS = 200_000_000
"""A file modified later than this before the process started may have been imported in an
older version; 0.2 s covers the 10 ms resolution of the process start time with room."""

RESTART_ENV_MARKERS = (b"TESTSERVER_GENERATION=", b"TESTSERVER_RESUME=")
"""In the initial environment of a server that another server re-executed."""


_startup: tuple[StateTracker, AbstractContextManager[None]] | None = None
"""The tracker :func:`track_startup` started, until a :class:`Reloader` adopts it."""


def track_startup(roots: Sequence[str]) -> None:
    """Measure module contributions during the first load (call just before it).

    Optional: without it, :meth:`Reloader.start` forks a child that imports the project a
    second time to measure them. With it, the measurement happens during the load the
    server does anyway, and the first reload need not wait for that child.
    """
    global _startup
    modules = ModuleMap(_existing_roots(roots))
    tracker = StateTracker(modules, ImportGraph(lambda path: None))
    tracking = tracker.tracking()
    tracking.__enter__()
    _startup = (tracker, tracking)


def _adopt_startup() -> StateTracker | None:
    """Stop the startup tracker (if any) and return it, with what it measured."""
    global _startup
    if _startup is None:
        return None
    tracker, tracking = _startup
    _startup = None
    tracking.__exit__(None, None, None)
    return tracker


@dataclass
class ReloadReport:
    """What one apply did, for the ``testserver.reload`` event.

    ``changed``: absolute paths of the files added, modified or removed. ``reloaded``:
    module names imported again, dependencies first. ``added``/``removed``: test ids.
    ``restart``: why the server must restart instead (then ``index`` is meaningless).
    """

    index: TestIndex
    changed: list[str] = field(default_factory=list)
    reloaded: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    restart: str | None = None


class Reloader:
    """Watches the project under ``roots`` and reloads it at batch boundaries.

    ``observer``: an unstarted watchdog observer to use instead of the default one.
    """

    def __init__(
        self,
        spec: LoadSpec,
        roots: Sequence[str],
        *,
        poll: bool = False,
        observer: object = None,
    ) -> None:
        self.spec = spec
        self.roots = _existing_roots(roots)
        self.poll = poll
        self.watcher = Watcher(self.roots, poll=poll, observer=observer)
        self.tree = SourceTree(self.roots, suspect_after_ns=_suspect_after_ns())
        self.modules = ModuleMap(self.roots)
        self.graph = ImportGraph(self._digest_of)
        self.tracker = StateTracker(self.modules, self.graph)
        self.replay: Replay | None = None
        self.tests = _TestCache()
        self.watch_error: str | None = None
        self.signal = None if poll else ChangeSignal()
        self._scan_next = True  # the first apply scans: changes before the watches count
        self._quick_proofs = 0

    def start(self, index: TestIndex) -> None:
        """Record the loaded state, start the replay child and start watching.

        ``index`` is what was loaded. The replay child (see :func:`spawn_replay`) measures
        what each project module's import changed in other modules, unless
        :func:`track_startup` measured it already during that load; it is forked before the
        watcher thread starts, so no thread is running when it forks.
        """
        startup = _adopt_startup()  # before the scan below reads every file
        self.tree.scan()
        if startup is not None:
            self.tracker.contributions.update(startup.contributions)
            self.tracker.reads.merge(startup.reads.export())
        self._track_loaded_files()
        self._sync_signal()
        if set(self.modules.project()) - set(self.tracker.contributions):
            self.replay = spawn_replay(lambda: load(self.spec), self.tracker)
        self.watch_error = self.watcher.start()
        if self.watch_error:  # fd 2 is captured: this reaches the client with the hello
            print(f"testserver: {self.watch_error}", file=sys.stderr)

    def close(self) -> None:
        """Stop watching (and the replay child, if it is still running)."""
        self.watcher.close()
        if self.signal is not None:
            self.signal.close()
        if self.replay is not None:
            self.replay.close()
            self.replay = None

    def apply(
        self,
        index: TestIndex,
        *,
        force: bool = False,
        record: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> ReloadReport | None:
        """Apply the changes made since the last call; ``None`` when there were none.

        ``force`` (the ``reload`` command): rescan and rehash everything, rebuild every test
        object, and report even when nothing changed. When a report without ``restart`` is
        returned, ``index`` has been emptied (its tests released, so that stale classes can
        be collected): the caller must switch to ``report.index``. ``record()`` is entered
        around the re-imports only (e.g. ``SuiteFds.during``), not when nothing changed.
        """
        if self.replay is not None:
            self._contributions()  # wait for the startup replay: it knows the data files
        hints = self.watcher.take()
        if not (force or hints or self._scan_next or self._signalled()):
            return None  # nothing was written in a tracked directory since the last apply
        changes = self.tree.poll(hints, full=force)
        try:
            if not changes and not force:
                return None
            with record():
                return self._apply(index, changes, force)
        except Exception as error:  # noqa: BLE001 - half-reloaded is worse than restarted
            detail = "".join(traceback.format_exception_only(type(error), error)).strip()
            return ReloadReport(
                index,
                changed=changes.paths(),
                restart=f"reloading failed unexpectedly ({detail}); restarting to be safe",
            )
        finally:
            self._sync_signal()

    # -- the steps -----------------------------------------------------------------------

    def _apply(self, index: TestIndex, changes: TreeChanges, force: bool) -> ReloadReport | None:
        self.modules.refresh()
        self.graph.invalidate()
        forget_paths()
        paths = changes.paths()
        reason = self._restart_reason(changes)
        if reason is not None:
            return ReloadReport(index, changed=paths, restart=reason)
        if not paths and not force:
            return None  # only hints about files nobody imported
        if force:
            self.tests.clear()
        changed: set[str] = set()
        for path in paths:
            changed.update(self.modules.names_for(path), self.tracker.reads.readers(path))
            if file_kind(path) is not None:
                changed.update(module_names(path))
        changed.discard(LOADER)  # a read of the load itself: rediscovery is enough
        affected = self.graph.importers_closure(changed, self.modules.project())
        old_ids = list(index.ids)
        release(index)
        for path in [*changes.modified, *changes.added]:
            forget_bytecode(path)
        new_index, affected, restart = self._reimport(affected, [*changes.added, *changes.modified])
        if restart is not None:
            return ReloadReport(new_index, changed=paths, restart=restart)
        self._track_loaded_files()
        project = self.modules.project()
        before, after = set(old_ids), set(new_index.ids)
        return ReloadReport(
            new_index,
            changed=paths,
            reloaded=[n for n in self.graph.dependency_order(affected, project) if n in project],
            added=[i for i in new_index.ids if i not in before],
            removed=[i for i in old_ids if i not in after],
        )

    def _restart_reason(self, changes: TreeChanges) -> str | None:
        for verb, paths in (
            ("added", changes.added),
            ("changed", changes.modified),
            ("removed", changes.removed),
        ):
            for path in paths:
                if file_kind(path) == "extension":
                    return (
                        f"the compiled extension {_show(path)} was {verb}: extension modules "
                        "cannot be reloaded in place"
                    )
                if is_below(path, SERVER_DIR):
                    return f"testserver's own code changed ({_show(path)})"
        for path in [*changes.modified, *changes.removed, *changes.foreign]:
            for name in self.modules.names_for(path):
                if not self.modules.is_project(name) or path in changes.foreign:
                    return (
                        f"{_show(path)} changed, and its module {name} is not a project "
                        "module (installed, or imported from outside the watched roots): "
                        "it cannot be reloaded in place"
                    )
        reads = self.tracker.reads
        for path in changes.paths():
            for name in sorted(reads.readers(path) & reads.foreign):
                return (
                    f"{_show(path)} changed, and module {name}, which read it while it was "
                    "imported, is not a project module: it cannot be reloaded in place"
                )
        for path in changes.added:
            if file_kind(path) is None:
                continue
            for name in module_names(path):
                loaded = self.modules.file_of(name)
                if loaded is not None and loaded != path and name in sys.modules:
                    return f"the new file {_show(path)} shadows the loaded module {name}"
        return None

    def _reimport(
        self, affected: set[str], sources: list[str]
    ) -> tuple[TestIndex, set[str], str | None]:
        """Purge ``affected`` and rediscover, widening until nothing stale is left.

        ``sources``: changed and added files, whose code runs during the rediscovery.
        """
        stale: list[tuple[str, weakref.ref]] = []
        for _ in range(MAX_ROUNDS):
            affected = self._with_contributions(affected)
            project = self.modules.project()
            reach = self.graph.dependencies_closure(affected, sources, project) - affected
            fingerprints = {name: state_fingerprint(sys.modules.get(name)) for name in reach}
            state_before = process_state()
            stale += purge(affected)
            with self.tracker.tracking():
                index = self._load()
            if process_state() != state_before:
                reason = (
                    "re-importing changed modules altered sys.path, sys.meta_path, "
                    "sys.path_hooks or os.environ; restarting so that this happens once"
                )
                return index, affected, reason
            self.modules.refresh()
            widen = {n for n in reach if state_fingerprint(sys.modules.get(n)) != fingerprints[n]}
            for name in self.tracker.executed:
                widen |= self.tracker.contributions.get(name, set()) - affected
            holders, reason = self._stale_check(stale, affected)
            if reason is not None:
                return index, affected, reason
            widen = (widen | holders) & set(self.modules.project())
            if not widen:
                return index, affected, None
            affected = affected | self.graph.importers_closure(widen, self.modules.project())
        reason = f"module-level state kept changing after {MAX_ROUNDS} reload rounds"
        return index, affected, reason

    def _stale_check(
        self, stale: list[tuple[str, weakref.ref]], affected: set[str]
    ) -> tuple[set[str], str | None]:
        """Nothing stale survived (quick proof, or a full collection every so often, or when
        the proof fails); else who holds it (see :func:`_stale_holders`)."""
        for cleanup in getattr(typing, "_cleanups", ()):  # typing's caches hold classes
            cleanup()
        if self._quick_proofs < FULL_COLLECTION_EVERY and provably_garbage(stale, affected):
            self._quick_proofs += 1
            return set(), None
        self._quick_proofs = 0
        return stale_holders(stale, set(self.modules.project()) - affected)

    def _with_contributions(self, affected: set[str]) -> set[str]:
        """``affected`` plus the modules whose state their last executions changed (those
        changes must go), plus those modules' importers, until nothing more is added."""
        contributions = self._contributions()
        while True:
            project = self.modules.project()
            targets = {t for m in affected for t in contributions.get(m, ())}
            targets = (targets & set(project)) - affected
            if not targets:
                return affected
            affected = affected | self.graph.importers_closure(targets, project)

    def _contributions(self) -> dict[str, set[str]]:
        """The measured relation, completed by the startup replay (waited for, once)."""
        if self.replay is not None:
            measured = self.replay.result()
            self.replay = None
            if measured is not None:
                for name, targets in measured[0].items():
                    self.tracker.contributions.setdefault(name, targets)
                self.tracker.reads.merge(measured[1])
                self._track_loaded_files(late=True)
                self._scan_next = True
        return self.tracker.contributions

    def _load(self) -> TestIndex:
        """Rediscover. No bytecode is written meanwhile: workers fork with the modules in
        memory, and a ``.pyc`` written now would only wake the watcher threads (contending
        for the GIL with this reload) and the next cold process can write its own."""
        importlib.invalidate_caches()
        write_bytecode = sys.dont_write_bytecode
        sys.dont_write_bytecode = True
        try:
            return load(self.spec, loader=_CachingLoader(self.tests))
        except Exception as error:  # noqa: BLE001 - e.g. the start directory is gone
            return failed_index(self.spec, error)
        finally:
            sys.dont_write_bytecode = write_bytecode
            self.tests.prune()

    # -- bookkeeping ---------------------------------------------------------------------

    def _track_loaded_files(self, *, late: bool = False) -> None:
        """Track the directories of loaded project modules, the files of loaded modules
        below the roots that are not project modules (a change to those means a restart),
        and the files and directories that modules read while they were imported (``late``:
        measured by the replay child, so possibly changed since: reported once)."""
        self.modules.refresh()
        files, dirs = self.tracker.reads.all_files(), self.tracker.reads.all_dirs()
        self.tree.track_data(files, dirs, unknown=late)
        self.watcher.watch_data(files, dirs)
        for name, path in self.modules.below_roots().items():
            if self.tree.is_tracked_file(path):
                continue
            if self.modules.is_project(name):
                self.tree.track_dir(os.path.dirname(path))
            if not self.tree.is_tracked_file(path):
                self.tree.record(path)

    def _signalled(self) -> bool:
        """Whether the change signal saw anything (always true without a usable signal)."""
        return self.signal is None or self.signal.pending()

    def _sync_signal(self) -> None:
        """Watch every tracked directory (and those of individually tracked files). A watch
        added now may have missed a change made while its directory was being listed, so
        the next apply scans regardless."""
        self._scan_next = False
        if self.signal is None or not self.signal.usable:
            return
        wanted = set(self.tree.dirs) | {os.path.dirname(path) for path in self.tree.files}
        wanted |= self.tree.data_watch_dirs()
        self.signal.forget(self.signal.watched - wanted)
        new = wanted - self.signal.watched
        if new:
            self.signal.watch(sorted(new))
            self._scan_next = True

    def _digest_of(self, path: str) -> bytes | None:
        state = self.tree.files.get(path)
        return state.digest if state is not None else None


# ---------------------------------------------------------------------------------------------
# Test objects and discovery work reused across loads


class _TestCache:
    """Test instances per TestCase class object, reused while the class object is the same,
    and per test file, the tests of its module while the module object is the same.

    A class loaded twice in one discovery (imported into two modules) gets two lists, as
    unittest creates two sets of instances. Classes not seen in a load are dropped after it,
    so the cache never keeps a purged class alive.
    """

    def __init__(self) -> None:
        self._tests: dict[type, list[list[unittest.TestCase]]] = {}
        self._used: dict[type, int] = {}
        self.modules: dict[str, tuple[str, int, list[unittest.TestCase] | None]] = {}
        """Test file -> (module name, id of the module object unittest accepted for it, its
        tests unless the module has ``load_tests``, which must run each time)."""
        self.modules_used: set[str] = set()

    def take(self, cls: type) -> list[unittest.TestCase] | None:
        count = self._used.get(cls, 0)
        variants = self._tests.get(cls, [])
        if count >= len(variants):
            return None
        self._used[cls] = count + 1
        return variants[count]

    def put(self, cls: type, tests: list[unittest.TestCase]) -> None:
        self._tests.setdefault(cls, []).append(tests)
        self._used[cls] = self._used.get(cls, 0) + 1

    def prune(self) -> None:
        """Forget what the last load did not use (so nothing purged is kept alive)."""
        self._tests = {c: v[: self._used[c]] for c, v in self._tests.items() if c in self._used}
        self._used = {}
        self.modules = {p: v for p, v in self.modules.items() if p in self.modules_used}
        self.modules_used = set()

    def clear(self) -> None:
        self._tests, self._used, self.modules, self.modules_used = {}, {}, {}, set()


class _CachingLoader(unittest.TestLoader):
    """A ``TestLoader`` that reuses :class:`_TestCache`.

    ``loadTestsFromTestCase`` returns the cached instances of an unchanged class.
    ``_find_test_path`` (unittest's private per-path step of discovery), for a file whose
    module object is the very one it accepted last time, skips the import-and-``realpath``
    check (two ``realpath`` calls per file) and returns that module's tests again (unless
    the module has ``load_tests``, which is called again).
    """

    def __init__(self, cache: _TestCache) -> None:
        super().__init__()
        self._cache = cache

    def loadTestsFromTestCase(self, testCaseClass: type) -> unittest.TestSuite:
        tests = self._cache.take(testCaseClass)
        if tests is None:
            tests = list(super().loadTestsFromTestCase(testCaseClass))
            self._cache.put(testCaseClass, tests)
        return self.suiteClass(tests)

    def _find_test_path(self, full_path: str, pattern: str, *args: object, **kwargs: object):
        known = self._cache.modules.get(full_path)
        if known is not None:
            name, module_id, tests = known
            module = sys.modules.get(name)
            if module is not None and id(module) == module_id:
                self._cache.modules_used.add(full_path)
                if tests is not None:
                    return self.suiteClass(tests), False
                return self.loadTestsFromModule(module, pattern=pattern), False
        found, recurse = super()._find_test_path(full_path, pattern, *args, **kwargs)
        if found is not None and not recurse and full_path.endswith(".py"):
            name = self._get_name_from_path(full_path)
            module = sys.modules.get(name)
            if module is not None and namespace_of(module).get("__file__"):
                reusable = None if hasattr(module, "load_tests") else list(flatten(found))
                self._cache.modules[full_path] = (name, id(module), reusable)
                self._cache.modules_used.add(full_path)
        return found, recurse


# ---------------------------------------------------------------------------------------------
# Small helpers


def _existing_roots(roots: Iterable[str]) -> list[str]:
    """Real paths of the roots; a dotted package name (``-s pkg``) becomes its directory."""
    result = []
    for root in roots:
        if os.path.isdir(root):
            result.append(root)
        elif root.replace(".", "").isidentifier():
            try:
                spec = importlib.util.find_spec(root)
            except (ImportError, ValueError):
                spec = None
            if spec is not None and spec.submodule_search_locations:
                result.extend(spec.submodule_search_locations)
    return list(dict.fromkeys(os.path.realpath(r) for r in result))


def _suspect_after_ns() -> int | None:
    """Files modified after this may have been imported in an older version.

    The process start time (Linux ``/proc``); ``None`` elsewhere, and in a server that a
    restart re-executed (its start time is its predecessor's).
    """
    try:
        with open("/proc/self/environ", "rb") as handle:
            environ = handle.read()
        if any(marker in environ for marker in RESTART_ENV_MARKERS):
            return None
        with open("/proc/self/stat", "rb") as handle:
            stat = handle.read()
        ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])  # field 22: starttime
        clock = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
        ticks_ns = ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
        elapsed = time.clock_gettime_ns(clock) - ticks_ns
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return time.time_ns() - elapsed - STARTUP_MARGIN_NS


def _show(path: str) -> str:
    relative = os.path.relpath(path)
    return path if relative.startswith(os.pardir) else relative
