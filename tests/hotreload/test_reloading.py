"""Unit tests for hot reload: the watcher, the source tree scan, the import graph, the reloader.

Everything runs on real files in ``tmp_path`` and real imports in this process (each test
gets a package with a unique name, removed from ``sys.modules`` afterwards). The e2e
differential suite is ``tests/test_reload_differential.py``.
"""

from __future__ import annotations

import ast
import contextlib
import gc
import importlib.machinery
import importlib.util
import os
import py_compile
import sys
import sysconfig
import time
import unittest
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from watchdog.events import (
    DirCreatedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from testserver.engine.loading import LoadSpec, TestIndex, load
from testserver.hotreload.changesignal import ChangeSignal
from testserver.hotreload.modulegraph import (
    SERVER_DIR,
    ImportGraph,
    ModuleMap,
    extract_imports,
    resolve_imports,
)
from testserver.hotreload.modulestate import StateTracker
from testserver.hotreload.reloader import Reloader, _CachingLoader, _TestCache, track_startup
from testserver.hotreload.staleness import provably_garbage, purge
from testserver.hotreload.watcher import ChangeRecorder, SourceTree, TreeChanges, Watcher
from testserver.wire.constants import FAILED_TEST_PREFIX

WAIT = 20.0
"""Seconds to wait for a watchdog thread to notice a write (a deadline, not a measurement)."""

EXTENSION = importlib.machinery.EXTENSION_SUFFIXES[0]


def wait_for(predicate, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------
# ChangeRecorder and Watcher


def test_recorder_keeps_sources_and_directories_only(tmp_path: Path) -> None:
    root = str(tmp_path)
    recorder = ChangeRecorder([root])
    kept = [f"{root}/pkg/mod.py", f"{root}/pkg/new.py", f"{root}/pkg/fast{EXTENSION}"]
    recorder.dispatch(FileModifiedEvent(kept[0]))
    recorder.dispatch(FileMovedEvent(f"{root}/pkg/old.py", kept[1]))
    recorder.dispatch(FileCreatedEvent(kept[2]))
    recorder.dispatch(DirCreatedEvent(f"{root}/pkg/sub"))
    for ignored in (
        FileCreatedEvent(f"{root}/pkg/notes.txt"),
        FileModifiedEvent(f"{root}/pkg/__pycache__/mod.cpython-311.pyc"),
        FileModifiedEvent(f"{root}/pkg/__pycache__/weird.py"),
        FileModifiedEvent(f"{root}/.git/hooks/pre-commit.py"),
        FileCreatedEvent(f"{root}/pkg/.mod.py.swp"),
        FileCreatedEvent(f"{root}/pkg/mod.py~"),
        FileCreatedEvent(f"{root}/pkg/4913"),
        FileOpenedEvent(f"{root}/pkg/mod.py"),
        FileClosedNoWriteEvent(f"{root}/pkg/mod.py"),
    ):
        recorder.dispatch(ignored)
    assert recorder.take() == {*kept, f"{root}/pkg/old.py", f"{root}/pkg/sub"}
    assert recorder.take() == set()


def test_recorder_allows_a_root_inside_a_hidden_directory(tmp_path: Path) -> None:
    root = tmp_path / ".cache" / "project"
    recorder = ChangeRecorder([str(root)])
    recorder.dispatch(FileModifiedEvent(str(root / "mod.py")))
    assert recorder.take() == {str(root / "mod.py")}


@pytest.mark.parametrize("make_observer", [lambda: PollingObserver(timeout=0.05), Observer])
def test_watcher_records_a_write(tmp_path: Path, make_observer) -> None:
    watcher = Watcher([str(tmp_path)], observer=make_observer())
    assert watcher.start() is None
    try:
        target = write(tmp_path / "pkg" / "mod.py", "x = 1\n")
        seen: set[str] = set()
        assert wait_for(lambda: seen.update(watcher.take()) or str(target) in seen), seen
    finally:
        watcher.close()
    assert not watcher.observer.is_alive()


def test_watcher_reports_a_failure_to_start_instead_of_raising(tmp_path: Path) -> None:
    observer = PollingObserver(timeout=0.05)
    observer.start()
    observer.stop()
    observer.join()  # a thread cannot be started twice
    watcher = Watcher([str(tmp_path)], observer=observer)
    assert "file watching is off" in (watcher.start() or "")
    watcher.close()


def test_watcher_takes_the_poll_option(tmp_path: Path) -> None:
    watcher = Watcher([str(tmp_path)], poll=True)
    assert isinstance(watcher.observer, PollingObserver)
    watcher.close()


# ---------------------------------------------------------------------------------------------
# SourceTree


@pytest.fixture
def tree_root(tmp_path: Path) -> Path:
    write(tmp_path / "pkg" / "__init__.py", "")
    write(tmp_path / "pkg" / "mod.py", "VALUE = 1\n")
    write(tmp_path / "pkg" / "sub" / "__init__.py", "")
    write(tmp_path / "pkg" / "sub" / "deep.py", "DEEP = 1\n")
    write(tmp_path / "top.py", "TOP = 1\n")
    write(tmp_path / "pkg" / "__pycache__" / "ghost.py", "")
    write(tmp_path / ".hidden" / "secret.py", "")
    write(tmp_path / "venv" / "pyvenv.cfg", "home = /usr\n")
    write(tmp_path / "venv" / "lib" / "site.py", "")
    write(tmp_path / "docs" / "conf.py", "")
    return tmp_path


def scanned(root: Path, **kwargs) -> SourceTree:
    tree = SourceTree([str(root)], **kwargs)
    tree.scan()
    return tree


def real(path: Path) -> str:
    return os.path.realpath(path)


def test_tree_tracks_packages_and_root_modules_only(tree_root: Path) -> None:
    tree = scanned(tree_root)
    assert sorted(tree.files) == sorted(
        real(tree_root / p)
        for p in (
            "pkg/__init__.py",
            "pkg/mod.py",
            "pkg/sub/__init__.py",
            "pkg/sub/deep.py",
            "top.py",
        )
    )
    assert not tree.poll()


def test_tree_reports_content_changes_not_touches(tree_root: Path) -> None:
    tree = scanned(tree_root)
    os.utime(tree_root / "pkg" / "mod.py", ns=(1, 1))
    assert not tree.poll()
    write(tree_root / "pkg" / "mod.py", "VALUE = 2\n")
    assert tree.poll().modified == [real(tree_root / "pkg" / "mod.py")]
    assert not tree.poll()


def test_tree_reports_added_and_removed_files_and_packages(tree_root: Path) -> None:
    tree = scanned(tree_root)
    write(tree_root / "pkg" / "new.py", "")
    write(tree_root / "pkg" / "fresh" / "__init__.py", "")
    write(tree_root / "pkg" / "fresh" / "test_fresh.py", "")
    (tree_root / "pkg" / "sub" / "deep.py").unlink()
    changes = tree.poll()
    assert sorted(changes.added) == sorted(
        real(tree_root / p)
        for p in ("pkg/new.py", "pkg/fresh/__init__.py", "pkg/fresh/test_fresh.py")
    )
    assert changes.removed == [real(tree_root / "pkg" / "sub" / "deep.py")]


def test_tree_notices_a_directory_becoming_a_package(tree_root: Path) -> None:
    tree = scanned(tree_root)
    write(tree_root / "pkg" / "later" / "test_later.py", "")
    assert not tree.poll().added  # not a package: unittest would not look inside
    write(tree_root / "pkg" / "later" / "__init__.py", "")
    assert sorted(tree.poll().added) == sorted(
        real(tree_root / "pkg" / "later" / n) for n in ("__init__.py", "test_later.py")
    )


def test_tree_rehashes_a_racy_file_even_when_its_stat_did_not_change(tree_root: Path) -> None:
    """A second save within the timestamp granularity can leave mtime and size alone."""
    tree = scanned(tree_root)
    path = real(tree_root / "pkg" / "mod.py")
    assert not tree.files[path].settled  # written moments ago
    write(tree_root / "pkg" / "mod.py", "VALUE = 9\n")  # same size
    state = tree.files[path]
    state.key = os.stat(path).st_mtime_ns, *state.key[1:]  # pretend the stat is unchanged
    state.key = tuple(
        getattr(os.stat(path), f) for f in ("st_mtime_ns", "st_size", "st_ino", "st_ctime_ns")
    )
    assert tree.poll().modified == [path]


def test_tree_trusts_a_settled_unchanged_stat_but_a_full_poll_rehashes(tree_root: Path) -> None:
    tree = scanned(tree_root)
    path = real(tree_root / "pkg" / "mod.py")
    write(tree_root / "pkg" / "mod.py", "VALUE = 9\n")
    stat = os.stat(path)
    state = tree.files[path]
    state.key = (stat.st_mtime_ns, stat.st_size, stat.st_ino, stat.st_ctime_ns)
    state.settled = True
    assert not tree.poll()
    assert tree.poll(full=True).modified == [path]


def test_files_settle_once_older_than_the_racy_window(tree_root: Path) -> None:
    later = time.time_ns() + 10 * 10**9
    tree = scanned(tree_root, clock=lambda: later)
    assert all(state.settled for state in tree.files.values())


def test_files_modified_after_the_process_started_are_reported_once(tree_root: Path) -> None:
    tree = scanned(tree_root, suspect_after_ns=0)
    assert len(tree.poll().modified) == len(tree.files)
    assert not tree.poll()


def test_tree_passes_on_hints_outside_tracked_directories(tree_root: Path) -> None:
    tree = scanned(tree_root)
    outside = write(tree_root / "docs" / "conf.py", "changed = True\n")
    inside = write(tree_root / "pkg" / "hinted.py", "")
    changes = tree.poll([str(outside), str(inside), str(tree_root / "docs" / "notes.txt")])
    assert changes.foreign == [real(outside)]
    assert changes.added == [real(inside)]


def test_tree_tracks_extension_modules(tree_root: Path) -> None:
    tree = scanned(tree_root)
    ext = write(tree_root / "pkg" / f"fast{EXTENSION}", "not really ELF")
    assert tree.poll().added == [real(ext)]
    ext.write_text("still not ELF")
    assert tree.poll().modified == [real(ext)]


# ---------------------------------------------------------------------------------------------
# Import extraction and the graph


TRICKY = """
import a.b as c, d
from . import x, y as z
from ..p.q import (r,
   s,  # comment
   t)
from .import w
from x.y import *
if True: import deep.mod
mod = importlib.import_module("dyn.mod")
from m import \\
    n
def f():
    import inner
"""


def test_extract_imports_handles_the_odd_forms() -> None:
    assert extract_imports(TRICKY) == [
        (0, "a.b", ()),
        (0, "d", ()),
        (1, "", ("x", "y")),
        (2, "p.q", ("r", "s", "t")),
        (1, "", ("w",)),
        (0, "x.y", ("*",)),
        (0, "deep.mod", ()),
        (0, "dyn.mod", ()),
        (0, "m", ("n",)),
        (0, "inner", ()),
    ]


def test_resolve_imports_makes_names_absolute() -> None:
    resolved = resolve_imports(extract_imports(TRICKY), "pkg.sub.mod", is_package=False)
    assert {"pkg.sub.x", "pkg.sub.w", "pkg.p.q.r", "a", "a.b", "x.y.*", "m.n"} <= resolved
    assert resolve_imports([(1, "", ("x",))], "pkg", is_package=True) == {"pkg", "pkg.x"}
    assert resolve_imports([(2, "", ("x",))], "top", is_package=False) == set()


def _ast_names(tree: ast.AST, name: str, is_package: bool) -> set[str]:
    entries = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            entries += [(0, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            entries.append((node.level, node.module or "", names))
    return resolve_imports(entries, name, is_package)


def test_text_scan_finds_every_import_ast_finds_in_the_standard_library() -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    packages = ("json", "email", "unittest", "importlib", "asyncio", "logging", "concurrent")
    checked = 0
    for package in packages:
        for path in sorted((stdlib / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8", errors="replace")
            try:
                tree = ast.parse(text)
            except SyntaxError:
                continue
            parts = path.relative_to(stdlib).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            expected = _ast_names(tree, name, is_package)
            found = resolve_imports(extract_imports(text), name, is_package)
            assert expected <= found, (path, expected - found)
            checked += 1
    assert checked > 100


def test_module_map_says_what_is_a_project_module(tmp_path: Path) -> None:
    root = real(tmp_path)
    modules = ModuleMap([root])
    assert modules.in_project(os.path.join(root, "pkg", "mod.py"))
    assert not modules.in_project(os.path.join(root, ".venv", "x.py"))
    assert not modules.in_project(os.path.join(root, "lib", "site-packages", "x.py"))
    assert not modules.in_project(os.path.join(SERVER_DIR, "server.py"))
    assert not modules.in_project("/somewhere/else/mod.py")


def test_graph_closures_follow_importers_packages_and_dependencies(tmp_path: Path) -> None:
    files = {
        "app.base": "X = 1\n",
        "app.helper": "from app import base\n",
        "app.tests.test_a": "from app.helper import thing\n",
        "app.tests.test_b": "import app.base\n",
        "app.tests": "",
        "app": "",
        "app.lone": "import os\n",
    }
    project = {}
    for name, text in files.items():
        parts = name.split(".")
        is_package = name in ("app", "app.tests")
        path = (
            tmp_path.joinpath(*parts, "__init__.py")
            if is_package
            else tmp_path.joinpath(*parts[:-1], parts[-1] + ".py")
        )
        write(path, text)
        project[name] = str(path)
    graph = ImportGraph(lambda path: None)
    assert graph.importers_closure({"app.base"}, project) == {
        "app.base",
        "app.helper",
        "app.tests.test_a",
        "app.tests.test_b",
    }
    assert graph.importers_closure({"app.tests"}, project) == {
        "app.tests",
        "app.tests.test_a",
        "app.tests.test_b",
    }
    assert graph.dependencies_closure({"app.tests.test_a"}, [], project) == {
        "app",
        "app.tests",
        "app.tests.test_a",
        "app.helper",
        "app.base",
    }
    order = graph.dependency_order({"app.base", "app.helper", "app.tests.test_a"}, project)
    assert order.index("app.base") < order.index("app.helper") < order.index("app.tests.test_a")


# ---------------------------------------------------------------------------------------------
# In-process reloads


class Project:
    """A package with a unique name under ``tmp_path``, loaded with unittest discovery."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = f"rp_{uuid.uuid4().hex[:10]}"
        self.package = root / self.name
        self.spec = LoadSpec(start=str(self.package), top=str(root))
        self.reloader: Reloader | None = None

    def write(self, rel: str, text: str) -> Path:
        return write(self.package / rel, text.replace("PKG", self.name))

    def load(self) -> TestIndex:
        """Load, then start a reloader. Files are first dated an hour back, like a project
        edited before the server started (newer ones are reported once, in case they changed
        after being imported)."""
        old = time.time_ns() - 3600 * 10**9
        for path in self.root.rglob("*"):
            os.utime(path, ns=(old, old))
        index = load(self.spec)
        self.reloader = Reloader(self.spec, [str(self.root)], observer=PollingObserver(timeout=60))
        self.reloader.start(index)
        return index

    def cleanup(self) -> None:
        if self.reloader is not None:
            self.reloader.close()
        for name in [n for n in sys.modules if n == self.name or n.startswith(self.name + ".")]:
            del sys.modules[name]
        while str(self.root) in sys.path:
            sys.path.remove(str(self.root))


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    proj = Project(tmp_path)
    proj.write("__init__.py", "")
    proj.write("helper.py", "VALUE = 1\n\n\ndef value():\n    return VALUE\n")
    proj.write(
        "test_one.py",
        module_source("One", "self.assertEqual(value(), 1)", "from PKG.helper import value"),
    )
    yield proj
    proj.cleanup()


def module_source(cls: str, body: str = "pass", imports: str = "") -> str:
    """Source of a test module with one test class holding one test method."""
    return (
        f"import unittest\n{imports}\n\n\nclass {cls}(unittest.TestCase):\n"
        f"    def test_it(self):\n        {body}\n"
    )


def outcomes(index: TestIndex) -> dict[str, bool]:
    result = {}
    for test_id, test in index.tests:
        outcome = unittest.TestResult()
        test.run(outcome)
        result[test_id] = outcome.wasSuccessful()
    return result


def test_nothing_changed_means_no_report(project: Project) -> None:
    index = project.load()
    assert project.reloader.apply(index) is None
    assert len(index) == 1  # untouched


def test_a_helper_change_reloads_the_helper_and_its_importers(project: Project) -> None:
    index = project.load()
    project.write("helper.py", "VALUE = 2\n\n\ndef value():\n    return VALUE\n")
    report = project.reloader.apply(index)
    assert report is not None and report.restart is None
    assert report.reloaded == [f"{project.name}.helper", f"{project.name}.test_one"]
    assert report.changed == [real(project.package / "helper.py")]
    assert outcomes(report.index) == {f"{project.name}.test_one.One.test_it": False}
    assert len(index) == 0, "the old index is released"


def test_a_syntax_error_is_a_failing_test_until_fixed(project: Project) -> None:
    index = project.load()
    good = (project.package / "test_one.py").read_text()
    project.write("test_one.py", good.replace("def test_it(self):", "def test_it(self)"))
    report = project.reloader.apply(index)
    failed = f"{FAILED_TEST_PREFIX}{project.name}.test_one"
    assert report.index.ids == (failed,)
    assert report.removed == [f"{project.name}.test_one.One.test_it"]
    assert f"{project.name}.test_one" not in sys.modules
    assert [e.module for e in report.index.errors] == [f"{project.name}.test_one"]
    project.write("test_one.py", good)
    healed = project.reloader.apply(report.index)
    assert healed.index.ids == (f"{project.name}.test_one.One.test_it",)
    assert outcomes(healed.index) == {f"{project.name}.test_one.One.test_it": True}


def test_deleted_and_added_modules(project: Project) -> None:
    index = project.load()
    (project.package / "test_one.py").unlink()
    project.write("test_two.py", module_source("Two"))
    report = project.reloader.apply(index)
    assert report.added == [f"{project.name}.test_two.Two.test_it"]
    assert report.removed == [f"{project.name}.test_one.One.test_it"]
    assert f"{project.name}.test_one" not in sys.modules


def test_a_second_same_size_save_with_the_same_mtime_is_seen(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bytecode cache checks mtime seconds and size only: it must not be trusted."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # PYTHONDONTWRITEBYTECODE may be on
    index = project.load()
    project.write("helper.py", "VALUE = 3\n\n\ndef value():\n    return VALUE\n")
    report = project.reloader.apply(index)
    helper = str(project.package / "helper.py")
    py_compile.compile(helper, cfile=importlib.util.cache_from_source(helper))  # another tool
    mtime = (project.package / "helper.py").stat().st_mtime_ns
    project.write("helper.py", "VALUE = 1\n\n\ndef value():\n    return VALUE\n")
    os.utime(project.package / "helper.py", ns=(mtime, mtime))
    report = project.reloader.apply(report.index)
    assert outcomes(report.index) == {f"{project.name}.test_one.One.test_it": True}


def test_a_registry_in_an_unchanged_module_is_reloaded_with_its_users(project: Project) -> None:
    project.write(
        "registry.py", "ITEMS = []\n\n\ndef register(cls):\n    ITEMS.append(cls)\n    return cls\n"
    )
    project.write(
        "plugin.py", "from PKG.registry import register\n\n\n@register\nclass A:\n    pass\n"
    )
    project.write(
        "test_reg.py",
        module_source(
            "Reg",
            "self.assertEqual(len(ITEMS), 1)",
            "import PKG.plugin  # noqa\nfrom PKG.registry import ITEMS",
        ),
    )
    index = project.load()
    registry = f"{project.name}.registry"
    assert project.reloader._contributions()[f"{project.name}.plugin"] == {registry}
    project.write(
        "plugin.py", "from PKG.registry import register\n\n\n@register\nclass B:\n    pass\n"
    )
    report = project.reloader.apply(index)
    assert report.restart is None
    assert registry in report.reloaded
    assert outcomes(report.index)[f"{project.name}.test_reg.Reg.test_it"]


@contextlib.contextmanager
def installed_module(project: Project, tmp_path: Path, text: str) -> Iterator[None]:
    """Module ``<package>_lib`` (``text``, PKG replaced) in a ``site-packages`` on the path."""
    lib = tmp_path / "lib" / "site-packages" / f"{project.name}_lib.py"
    write(lib, text.replace("PKG", project.name))
    sys.path.insert(0, str(lib.parent))
    try:
        yield
    finally:
        sys.path.remove(str(lib.parent))
        sys.modules.pop(f"{project.name}_lib", None)


HOLDER = "import PKG_lib\n\n\nclass Held:\n    pass\n\n\nPKG_lib.HELD.append(Held)\n"


@pytest.mark.parametrize(
    ("library", "files", "edited", "expected"),
    [
        (  # a class of the project appended to a list of an installed library
            "HELD = []\n",
            {"holder.py": HOLDER, "test_hold.py": module_source("H", imports="import PKG.holder")},
            "holder.py",
            ["class PKG.holder.Held", "module PKG_lib"],
        ),
        (  # a project module kept as a global of an installed library
            "import PKG.helper\n\nHELPER = PKG.helper\n",
            {"test_lib.py": module_source("L", imports="import PKG_lib")},
            "helper.py",
            ["the old module PKG.helper", "the global 'HELPER' of module PKG_lib"],
        ),
    ],
    ids=["object", "module"],
)
def test_an_object_held_outside_the_project_means_a_restart(
    project: Project,
    tmp_path: Path,
    library: str,
    files: dict[str, str],
    edited: str,
    expected: list[str],
) -> None:
    with installed_module(project, tmp_path, library):
        for rel, text in files.items():
            project.write(rel, text)
        index = project.load()
        project.write(edited, (project.package / edited).read_text() + "# edited\n")
        report = project.reloader.apply(index)
        assert report.restart is not None
        for text in expected:
            assert text.replace("PKG", project.name) in report.restart


def test_changing_the_environment_at_import_means_a_restart(project: Project) -> None:
    project.write(
        "envy.py",
        "import os\n\nos.environ['PKG_LOADS'] = str(int(os.environ.get('PKG_LOADS', '0')) + 1)\n",
    )
    project.write("test_env.py", module_source("E", imports="import PKG.envy  # noqa"))
    index = project.load()
    try:
        project.write("envy.py", (project.package / "envy.py").read_text() + "# edited\n")
        report = project.reloader.apply(index)
        assert report.restart is not None and "os.environ" in report.restart
    finally:
        os.environ.pop(f"{project.name}_LOADS", None)


def test_extension_and_own_code_changes_mean_a_restart(project: Project) -> None:
    index = project.load()
    project.write(f"fast{EXTENSION}", "not really a shared object")
    report = project.reloader.apply(index)
    assert report.restart is not None and "compiled extension" in report.restart
    own = os.path.join(SERVER_DIR, "server.py")
    reason = project.reloader._restart_reason(TreeChanges(modified=[own]))
    assert reason is not None and "testserver's own code" in reason


def test_force_reports_even_without_changes(project: Project) -> None:
    index = project.load()
    report = project.reloader.apply(index, force=True)
    assert report is not None and report.restart is None
    assert report.changed == [] and report.reloaded == []
    assert report.index.ids == (f"{project.name}.test_one.One.test_it",)


def test_a_vanished_start_directory_is_reported_in_band(project: Project) -> None:
    index = project.load()
    for path in sorted(project.package.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    project.package.rmdir()
    report = project.reloader.apply(index)
    assert report.restart is None
    assert len(report.index) == 1 and report.index.ids[0].startswith(FAILED_TEST_PREFIX)
    assert report.index.errors


# ---------------------------------------------------------------------------------------------
# The caching loader and the state tracker


def test_caching_loader_loads_what_unittest_loads_and_reuses_unchanged_tests(
    project: Project,
) -> None:
    project.write(
        "test_reuse.py",
        "from PKG.test_one import One  # noqa: F401  (loaded twice, as unittest does)\n",
    )
    plain = load(project.spec)
    cache = _TestCache()
    first = load(project.spec, loader=_CachingLoader(cache))
    cache.prune()
    second = load(project.spec, loader=_CachingLoader(cache))
    assert first.ids == second.ids == plain.ids
    assert [t for _, t in first.tests] == [t for _, t in second.tests]
    assert all(a is b for (_, a), (_, b) in zip(first.tests, second.tests))
    duplicated = [t for _, t in first.tests]
    assert len(duplicated) == 2 and duplicated[0] is not duplicated[1]


def test_tracker_credits_each_module_with_its_own_changes(project: Project) -> None:
    project.write("registry.py", "ITEMS = []\n")
    project.write("plugin.py", "from PKG import registry\n\nregistry.ITEMS.append('p')\n")
    project.write("user.py", "import PKG.plugin  # noqa\nimport PKG.registry\n")
    modules = ModuleMap([real(project.root)])
    tracker = StateTracker(modules, ImportGraph(lambda path: None))
    sys.path.insert(0, str(project.root))
    with tracker.tracking():
        __import__(f"{project.name}.user")
    assert tracker.contributions[f"{project.name}.plugin"] == {f"{project.name}.registry"}
    assert tracker.contributions[f"{project.name}.user"] == set()
    loader = sys.modules[f"{project.name}.user"].__loader__
    assert isinstance(loader, importlib.machinery.SourceFileLoader)


def test_startup_tracking_makes_the_replay_child_unnecessary(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pytest's assertion rewriter imports test_*.py with its own loader: not tracked
    hooks = [f for f in sys.meta_path if type(f).__name__ != "AssertionRewritingHook"]
    monkeypatch.setattr(sys, "meta_path", hooks)
    project.write("registry.py", "ITEMS = []\n")
    project.write("plugin.py", "from PKG import registry\n\nregistry.ITEMS.append('p')\n")
    project.write("test_use.py", module_source("Use", imports="import PKG.plugin  # noqa"))
    old = time.time_ns() - 3600 * 10**9
    for path in project.root.rglob("*"):
        os.utime(path, ns=(old, old))
    track_startup([str(project.root)])
    index = load(project.spec)
    project.reloader = Reloader(
        project.spec, [str(project.root)], observer=PollingObserver(timeout=60)
    )
    project.reloader.start(index)
    assert project.reloader.replay is None
    contributions = project.reloader.tracker.contributions
    assert contributions[f"{project.name}.plugin"] == {f"{project.name}.registry"}


def test_quick_garbage_proof_agrees_with_a_full_collection(project: Project) -> None:
    held: list[object] = []
    for keep in (False, True):
        name = f"{project.name}.gone{int(keep)}"
        project.write(f"gone{int(keep)}.py", "class A:\n    def m(self):\n        return A\n")
        sys.path.insert(0, str(project.root))
        module = importlib.import_module(name)
        if keep:
            held.append(module.A)
        stale = purge({name})
        del module
        assert provably_garbage(stale, {name}) is not keep
        gc.collect()
        assert (stale[1][1]() is not None) is keep  # [0] is the module, [1] the class


def test_a_lazy_module_is_not_loaded_by_a_reload(project: Project, tmp_path: Path) -> None:
    lazy_path = write(tmp_path / "elsewhere" / "lazy_one.py", "import sys\nsys.LAZY_RAN = True\n")
    spec = importlib.util.spec_from_file_location(f"{project.name}_lazy", lazy_path)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    lazy = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = lazy
    spec.loader.exec_module(lazy)
    try:
        index = project.load()
        project.write("helper.py", "VALUE = 2\n\n\ndef value():\n    return VALUE\n")
        assert project.reloader.apply(index).restart is None
        assert not hasattr(sys, "LAZY_RAN")
    finally:
        del sys.modules[spec.name]


# ---------------------------------------------------------------------------------------------
# The synchronous change signal


def test_change_signal_sees_writes_in_watched_directories_at_once(tmp_path: Path) -> None:
    signal = ChangeSignal()
    if not signal.usable:
        pytest.skip("no inotify here")
    try:
        write(tmp_path / "sub" / "inner.py", "")
        signal.watch([str(tmp_path)])
        assert not signal.pending()
        write(tmp_path / "mod.py", "x = 1\n")
        assert signal.pending()  # no waiting: queued by the write itself
        assert not signal.pending()
        (tmp_path / "sub" / "inner.py").write_text("changed")
        assert not signal.pending()  # not recursive: each tracked directory gets a watch
        os.utime(tmp_path / "mod.py")
        assert signal.pending()
    finally:
        signal.close()
    assert signal.pending(), "a closed signal says: scan"


def test_without_a_signal_event_the_scan_is_skipped(project: Project) -> None:
    index = project.load()
    assert project.reloader.apply(index) is None  # the first apply scans
    path = real(project.package / "helper.py")
    project.reloader.tree.files[path].digest = b"pretend"  # only a scan would notice
    if project.reloader.signal is not None and project.reloader.signal.usable:
        assert project.reloader.apply(index) is None
    report = project.reloader.apply(index, force=True)
    assert report.changed == [path]


def test_poll_mode_scans_on_every_command(tmp_path: Path) -> None:
    reloader = Reloader(LoadSpec(start=str(tmp_path)), [str(tmp_path)], poll=True)
    assert reloader.signal is None
    reloader.watcher.close()
