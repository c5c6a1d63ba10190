"""Unit tests for data read at import time: the recording, the tree, the watcher, the reload.

Real files in ``tmp_path`` and real imports in this process (each test's package has a
unique name and is removed from ``sys.modules`` afterwards). The end-to-end checks through a
``--serve`` process are the data scenarios of ``tests/test_reload_differential.py`` and the
synthetic git history of ``tests/test_replay_history.py``.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import threading
import time
import unittest
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverproc import ServerProcess, subunit_events
from watchdog.events import FileCreatedEvent, FileModifiedEvent
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from testserver.engine.loading import LoadSpec, TestIndex, load
from testserver.hotreload.importreads import LOADER, ImportReads
from testserver.hotreload.reloader import Reloader, track_startup
from testserver.hotreload.watcher import ChangeRecorder, SourceTree, Watcher
from testserver.wire.commands import ListTests
from testserver.wire.control import RELOAD

WAIT = 20.0
"""Seconds to wait for a watchdog thread to notice a write (a deadline, not a measurement)."""

DATA_MODULE = """\
import glob
import os
import pathlib

HERE = os.path.dirname(__file__)
with open(os.path.join(HERE, "table.txt")) as handle:
    TABLE = handle.read()
NAMES = os.listdir(os.path.join(HERE, "listed"))
GLOBBED = glob.glob(os.path.join(HERE, "globbed", "*.txt"))
TEXT = pathlib.Path(HERE, "via_pathlib.txt").read_text()
with open(os.path.join(HERE, "out.txt"), "w") as handle:
    handle.write("output, not a source")
with open(os.path.join(HERE, "out.txt")) as handle:  # read back: still this load's output
    handle.read()
with open(os.__file__) as handle:  # the standard library: never a project's data
    handle.read(1)
try:
    open(os.path.join(HERE, "missing.txt"))
except OSError:
    pass
from PKG import inner  # noqa: E402,F401
"""

CASES_TEST = """\
import os
import unittest

CASES = os.path.join(os.path.dirname(__file__), "cases")


class CaseTests(unittest.TestCase):
    pass


for _name in sorted(os.listdir(CASES)) if os.path.isdir(CASES) else []:
    setattr(CaseTests, "test_" + _name.split(".")[0], lambda self: None)
"""


@pytest.fixture
def package(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    name = f"ir_{uuid.uuid4().hex[:10]}"
    root = tmp_path / name
    root.mkdir()
    sys.path.insert(0, str(tmp_path))
    yield root, name
    sys.path.remove(str(tmp_path))
    for module in [n for n in sys.modules if n == name or n.startswith(name + ".")]:
        del sys.modules[module]


def real(path: Path) -> str:
    return os.path.realpath(path)


def test_reads_are_credited_to_the_innermost_module_being_imported(
    package: tuple[Path, str],
) -> None:
    root, name = package
    (root / "__init__.py").write_text("")
    (root / "data.py").write_text(DATA_MODULE.replace("PKG", name))
    (root / "inner.py").write_text("open(__file__.replace('inner.py', 'inner.txt')).close()\n")
    for rel in ("table.txt", "via_pathlib.txt", "inner.txt", "globbed/a.txt", "listed/x"):
        (root / rel).parent.mkdir(exist_ok=True)
        (root / rel).write_text("x")
    reads = ImportReads([real(root)], lambda module: module.startswith(name))
    with reads.recording():
        importlib.import_module(f"{name}.data")
    assert reads.files[f"{name}.data"] == {
        real(root / "table.txt"),
        real(root / "via_pathlib.txt"),
        real(root / "missing.txt"),  # looked for: its appearing is a change
    }
    assert reads.dirs[f"{name}.data"] == {real(root / "listed"), real(root / "globbed")}
    assert reads.files[f"{name}.inner"] == {real(root / "inner.txt")}
    assert reads.readers(real(root / "listed")) == {f"{name}.data"}
    assert not reads.foreign
    assert LOADER not in reads.files  # the import system's own reads are not recorded


def test_nothing_is_recorded_outside_a_recording(package: tuple[Path, str]) -> None:
    root, name = package
    (root / "__init__.py").write_text("open(__file__.replace('__init__.py', 'd.txt')).close()\n")
    (root / "d.txt").write_text("x")
    reads = ImportReads([real(root)], lambda module: True)
    with reads.recording():
        pass
    importlib.import_module(name)
    assert reads.files == {} and reads.dirs == {}


def test_reads_of_a_load_outside_imports_go_to_the_loader_not_discovery_listings(
    package: tuple[Path, str],
) -> None:
    root, name = package
    (root / "__init__.py").write_text("")
    (root / "test_x.py").write_text(
        "import doctest\n\ndef load_tests(loader, tests, pattern):\n"
        "    tests.addTests(doctest.DocFileSuite('x.txt'))\n    return tests\n"
    )
    (root / "x.txt").write_text(">>> 1\n1\n")
    reads = ImportReads([real(root)], lambda module: module.startswith(name))
    with reads.recording():
        suite = unittest.TestLoader().discover(str(root), top_level_dir=str(root.parent))
    assert suite.countTestCases() == 1
    assert reads.files == {LOADER: {real(root / "x.txt")}}  # DocFileSuite's get_data
    assert reads.dirs == {}  # discovery's own walk is the source tree's business


def test_a_module_that_is_not_a_project_module_is_recorded_below_the_roots_only(
    package: tuple[Path, str], tmp_path: Path
) -> None:
    root, name = package
    outside = tmp_path.parent / f"outside-{name}.txt"
    outside.write_text("x")
    (root / "__init__.py").write_text(
        f"open({str(root / 'inside.txt')!r}).close()\nopen({str(outside)!r}).close()\n"
    )
    (root / "inside.txt").write_text("x")
    reads = ImportReads([real(root)], lambda module: False)
    try:
        with reads.recording():
            importlib.import_module(name)
    finally:
        outside.unlink()
    assert reads.files == {name: {real(root / "inside.txt")}}
    assert reads.foreign == {name}


def test_the_environment_variable_turns_recording_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TESTSERVER_NO_IMPORT_READS", "1")
    reads = ImportReads([str(tmp_path)], lambda module: True)
    with reads.recording():
        os.listdir(tmp_path)
    assert reads.dirs == {}


def test_other_threads_are_not_recorded(tmp_path: Path) -> None:
    reads = ImportReads([str(tmp_path)], lambda module: True)
    with reads.recording():
        scanner = threading.Thread(target=os.listdir, args=(str(tmp_path),))  # an observer
        scanner.start()
        scanner.join()
        os.listdir(tmp_path)  # this thread, outside any import: the load's own read
    assert reads.dirs == {LOADER: {real(tmp_path)}}


def test_a_path_that_vanished_stays_recorded_when_the_module_runs_again(tmp_path: Path) -> None:
    cases, table = tmp_path / "cases", tmp_path / "table.txt"
    reads = ImportReads([str(tmp_path)], lambda module: True)
    reads.files["m"] = {str(table), str(tmp_path / "kept.txt")}
    reads.dirs["m"] = {str(cases)}
    (tmp_path / "kept.txt").write_text("exists: read again or not, as the module decides")
    reads.reset("m")  # the module guards with os.path.isdir, which is not audited
    assert reads.files["m"] == {str(table)} and reads.dirs["m"] == {str(cases)}
    cases.mkdir()
    table.write_text("x")
    reads.reset("m")
    assert "m" not in reads.files and "m" not in reads.dirs


def test_export_and_merge_round_trip_without_overwriting() -> None:
    reads = ImportReads([], lambda module: True)
    reads.files["a"] = {"/p/a.txt"}
    reads.dirs["b"] = {"/p/cases"}
    reads.foreign.add("b")
    other = ImportReads([], lambda module: True)
    other.files["a"] = {"/p/newer.txt"}
    other.merge(reads.export())
    assert other.files == {"a": {"/p/newer.txt"}}
    assert other.dirs == {"b": {"/p/cases"}} and other.foreign == {"b"}


# ---------------------------------------------------------------------------------------------
# The source tree and the watcher


def test_tree_tracks_data_files_by_content_and_directories_by_entries(tmp_path: Path) -> None:
    data, cases = tmp_path / "table.json", tmp_path / "cases"
    data.write_text("{}")
    cases.mkdir()
    (cases / "a.txt").write_text("a")
    tree = SourceTree([str(tmp_path)])
    tree.scan()
    tree.track_data({real(data)}, {real(cases)})
    assert not tree.poll()
    data.write_text('{"x": 1}')
    assert tree.poll().modified == [real(data)]
    (cases / "a.txt").write_text("edited: only listed, so not a change")
    assert not tree.poll(full=True)
    (cases / "b.txt").write_text("b")
    assert tree.poll().modified == [real(cases)]
    data.unlink()
    shutil.rmtree(cases)
    found = tree.poll()
    assert found.removed == [real(data), real(cases)]
    data.write_text("{}")
    cases.mkdir()
    found = tree.poll()
    assert found.added == [real(data), real(cases)]
    assert real(cases) in tree.data_watch_dirs() and real(tmp_path) in tree.data_watch_dirs()


def test_tree_stops_tracking_data_nobody_reads_any_more(tmp_path: Path) -> None:
    data = tmp_path / "table.json"
    data.write_text("{}")
    tree = SourceTree([str(tmp_path)])
    tree.scan()
    tree.track_data({real(data)}, set())
    tree.track_data(set(), set())
    data.write_text("changed")
    assert not tree.poll()


def test_recorder_keeps_events_on_recorded_data_whatever_their_name(tmp_path: Path) -> None:
    recorder = ChangeRecorder([str(tmp_path)])
    cases = str(tmp_path / "cases")
    recorder.data = frozenset({cases, str(tmp_path / "table.json")})
    recorder.dispatch(FileCreatedEvent(cases + "/new.yaml"))
    recorder.dispatch(FileModifiedEvent(str(tmp_path / "table.json")))
    recorder.dispatch(FileModifiedEvent(str(tmp_path / "other.json")))
    assert recorder.take() == {cases + "/new.yaml", str(tmp_path / "table.json")}


@pytest.mark.parametrize("make_observer", [lambda: PollingObserver(timeout=0.05), Observer])
def test_watcher_watches_data_directories_outside_the_roots(tmp_path: Path, make_observer) -> None:
    root, data = tmp_path / "root", tmp_path / "data"
    root.mkdir()
    data.mkdir()
    watcher = Watcher([str(root)], observer=make_observer())
    watcher.watch_data(set(), {real(data)})  # known before the start, as at server startup
    assert watcher.start() is None
    try:
        target = data / "new.yaml"
        target.write_text("x")
        seen: set[str] = set()
        deadline = time.monotonic() + WAIT
        while real(target) not in seen and time.monotonic() < deadline:
            seen.update(os.path.realpath(p) for p in watcher.take())
            time.sleep(0.02)
        assert real(target) in seen
    finally:
        watcher.close()


# ---------------------------------------------------------------------------------------------
# The reloader


class DataProject:
    """A package whose test module makes one test per file of ``cases/``."""

    def __init__(self, tmp_path: Path, *, poll: bool, startup: bool = True) -> None:
        self.root = tmp_path
        self.name = f"rd_{uuid.uuid4().hex[:10]}"
        self.package = tmp_path / self.name
        (self.package / "cases").mkdir(parents=True)
        (self.package / "__init__.py").write_text("")
        (self.package / "test_cases.py").write_text(CASES_TEST)
        (self.package / "cases" / "one.txt").write_text("1")
        self.spec = LoadSpec(start=str(self.package), top=str(tmp_path))
        old = time.time_ns() - 3600 * 10**9
        for path in tmp_path.rglob("*"):
            os.utime(path, ns=(old, old))
        if startup:  # as the server does: measured during the first load
            track_startup([str(tmp_path)])
        self.index = load(self.spec)
        observer = PollingObserver(timeout=60)
        self.reloader = Reloader(self.spec, [str(tmp_path)], poll=poll, observer=observer)
        self.reloader.start(self.index)

    def apply(self) -> tuple[list[str], list[str]]:
        report = self.reloader.apply(self.index)
        assert report is not None and report.restart is None
        self.index = report.index
        return report.added, report.removed

    def ids(self) -> list[str]:
        return [i.rpartition(".")[2] for i in self.index.ids]

    def close(self) -> None:
        self.reloader.close()
        for name in [n for n in sys.modules if n == self.name or n.startswith(self.name + ".")]:
            del sys.modules[name]
        while str(self.root) in sys.path:
            sys.path.remove(str(self.root))


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "poll"])
def test_a_test_module_built_from_a_directory_follows_it(tmp_path: Path, poll: bool) -> None:
    project = DataProject(tmp_path, poll=poll)
    cases = project.package / "cases"
    try:
        assert project.ids() == ["test_one"]
        assert project.reloader.apply(project.index) is None
        (cases / "two.txt").write_text("2")
        added, removed = project.apply()
        assert [i.rpartition(".")[2] for i in added] == ["test_two"] and not removed
        assert project.ids() == ["test_one", "test_two"]
        shutil.rmtree(cases)
        added, removed = project.apply()
        assert project.ids() == [] and len(removed) == 2
        (cases / "three.txt").parent.mkdir()
        (cases / "three.txt").write_text("3")
        project.apply()
        assert project.ids() == ["test_three"]
    finally:
        project.close()


def test_data_measured_by_the_replay_child_is_reported_changed_once(tmp_path: Path) -> None:
    project = DataProject(tmp_path, poll=False, startup=False)
    try:
        first = project.reloader.apply(project.index)  # waits for the replay child
        assert first is not None and first.changed == [real(project.package / "cases")]
        project.index = first.index
        assert project.reloader.apply(project.index) is None
        (project.package / "cases" / "two.txt").write_text("2")
        project.apply()
        assert project.ids() == ["test_one", "test_two"]
    finally:
        project.close()


def test_data_read_by_a_module_that_is_not_a_project_module_means_a_restart(
    tmp_path: Path,
) -> None:
    vendor = tmp_path / "vendor" / "site-packages"
    library = f"lib_{uuid.uuid4().hex[:10]}"
    (vendor / library).mkdir(parents=True)
    (tmp_path / "settings.ini").write_text("a")
    (vendor / library / "__init__.py").write_text(
        f"SETTINGS = open({str(tmp_path / 'settings.ini')!r}).read()\n"
    )
    (tmp_path / "test_lib.py").write_text(f"import unittest\nimport {library}\n")
    sys.path.insert(0, str(vendor))
    spec = LoadSpec(start=str(tmp_path), top=str(tmp_path))
    reloader: Reloader | None = None
    old = time.time_ns() - 3600 * 10**9
    for path in tmp_path.rglob("*"):
        os.utime(path, ns=(old, old))
    try:
        track_startup([str(tmp_path)])
        index: TestIndex = load(spec)
        reloader = Reloader(spec, [str(tmp_path)], observer=PollingObserver(timeout=60))
        reloader.start(index)
        (tmp_path / "settings.ini").write_text("b")
        report = reloader.apply(index)
        assert report is not None and report.restart is not None
        assert "settings.ini" in report.restart and library in report.restart
    finally:
        if reloader is not None:
            reloader.close()
        sys.path.remove(str(vendor))
        for name in (library, "test_lib"):
            sys.modules.pop(name, None)
        while str(tmp_path) in sys.path:
            sys.path.remove(str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Through a real --serve process


@pytest.mark.parametrize("options", [(), ("--poll",)], ids=["inotify", "poll"])
def test_a_served_data_directory_is_followed(tmp_path: Path, options: tuple[str, ...]) -> None:
    package = tmp_path / "proj"
    (package / "cases").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "test_cases.py").write_text(CASES_TEST)
    (package / "cases" / "one.txt").write_text("1")
    old = time.time_ns() - 3600 * 10**9
    for path in tmp_path.rglob("*"):
        os.utime(path, ns=(old, old))
    server = ServerProcess(tmp_path, "discover", "-t", ".", "-s", "proj", *options)
    count = iter(range(1, 100))

    def listing() -> tuple[list[str], list[dict]]:
        transcript = server.request(ListTests(f"l{next(count)}"))
        assert subunit_events(transcript.raw)  # the stream parses whole with python-subunit
        ids = [p.test_id.rpartition(".")[2] for p in transcript.packets if p.status == "exists"]
        return ids, transcript.controls(RELOAD)

    try:
        assert listing() == (["test_one"], [])
        (package / "cases" / "two.txt").write_text("2")
        ids, reloads = listing()
        assert ids == ["test_one", "test_two"]
        assert reloads[0]["changed"] == [real(package / "cases")]
        assert reloads[0]["reloaded"] == ["proj.test_cases"]
        shutil.rmtree(package / "cases")
        assert listing()[0] == []
        (package / "cases").mkdir()
        (package / "cases" / "three.txt").write_text("3")
        assert listing()[0] == ["test_three"]
    finally:
        server.kill()


def test_without_the_recording_a_served_data_directory_is_not_followed(tmp_path: Path) -> None:
    """The control arm: the test above fails when nothing is recorded."""
    package = tmp_path / "proj"
    (package / "cases").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "test_cases.py").write_text(CASES_TEST)
    env = {"TESTSERVER_NO_IMPORT_READS": "1"}
    server = ServerProcess(tmp_path, "discover", "-t", ".", "-s", "proj", "--poll", env=env)
    try:
        server.request(ListTests("l1"))
        (package / "cases" / "two.txt").write_text("2")
        transcript = server.request(ListTests("l2"))
        assert not [p for p in transcript.packets if p.status == "exists"]
    finally:
        server.kill()
