"""``testserver watch``: reruns affected tests on save, on one warm server.

End to end: ``python -m testserver watch`` runs as a subprocess in a temporary copy of
``tests/projects/cli_watch`` and the tests edit its files for real; a reader thread collects
the output lines. The import graph, affected-test selection and debouncing are also checked
on their own (on real files in a temporary tree).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from processes import session_processes
from serverproc import CommandProcess, copy_project, save_as_editors_do

from testserver.clients.runs import Outcome
from testserver.clients.watch import (
    ProjectModules,
    failing_ids,
    module_name,
    module_tests,
    wait_for_changes,
)

PROJECT = Path(__file__).parent.parent / "projects" / "cli_watch"


class WatchProcess(CommandProcess):
    """``testserver watch`` in a project copy; its output lines are the items."""

    def __init__(self, root: Path, *args: str) -> None:
        argv = [sys.executable, "-m", "testserver", "watch", "-t", ".", "-s", "wproj", *args]
        super().__init__(argv, root, lambda line: line.decode("utf-8").rstrip("\n"))
        self.stderr = b""

    def ended(self) -> str:
        return f"watch ended; output: {self.seen} {self.stderr!r}"

    def event(self, name: str, **fields) -> dict:
        """The next JSON event called ``name`` (with these field values)."""

        def wanted(line: str) -> bool:
            event = json.loads(line)
            return event["event"] == name and all(event.get(k) == v for k, v in fields.items())

        return json.loads(self.expect(wanted))

    def run_events(self) -> tuple[dict, list[dict], dict]:
        """The next run: its start event, its final test events, its summary."""
        start = self.event("start")
        tests = []
        while True:
            event = json.loads(self.expect(lambda line: True))
            if event["event"] == "summary":
                return start, tests, event
            if event["event"] == "test" and event["status"] != "inprogress":
                tests.append(event)

    def edit(self, relative: str, old: str, new: str) -> None:
        """Save a file of the project the way editors do."""
        save_as_editors_do(self.root / relative, old, new)

    def interrupt(self, *, group: bool) -> int:
        """Ctrl-C: SIGINT to the process group (a terminal) or to watch alone."""
        if group:
            os.killpg(self.process.pid, signal.SIGINT)
        else:
            self.process.send_signal(signal.SIGINT)
        code, self.stderr = self.finish()
        self.process.stdout.close()  # type: ignore[union-attr]
        return code


@pytest.fixture
def project(tmp_path):
    return copy_project(PROJECT, tmp_path, "project")


@pytest.fixture
def start(project):
    started: list[WatchProcess] = []

    def start(*args: str) -> WatchProcess:
        watch = WatchProcess(project, *args)
        started.append(watch)
        return watch

    yield start
    for watch in started:
        watch.kill()
        assert session_processes(watch.process.pid) == [], "watch left processes behind"


CALC = ["wproj.test_calc.CalcTest.test_add", "wproj.test_calc.CalcTest.test_add_negative"]
HELPERS = ["wproj.test_helpers.HelpersTest.test_double"]
OTHER = ["wproj.test_other.OtherTest.test_truth"]


def ids(tests: list[dict]) -> list[str]:
    return sorted(test["test_id"] for test in tests)


def test_affected_tests_and_last_failures_are_rerun(start):
    watch = start("--format", "json", "--no-reload")
    first, tests, summary = watch.run_events()
    assert (first["run"], first["tests"], first["changed"]) == (1, 4, [])
    assert summary["ok"] and ids(tests) == sorted(CALC + HELPERS + OTHER)
    watch.event("message", text="watching for changes (Ctrl-C to stop)")

    # calc.py is imported by test_calc, and by helpers, which test_helpers imports.
    watch.edit("wproj/calc.py", "a + b", "a - b")
    start_event, tests, summary = watch.run_events()
    assert start_event["changed"] == [str(watch.root / "wproj" / "calc.py")]
    assert ids(tests) == sorted(CALC + HELPERS)
    assert {test["status"] for test in tests} == {"fail"}
    assert not summary["ok"]

    # A changed test module reruns its tests, and the failing ones again.
    watch.edit("wproj/test_other.py", "self.assertTrue(True)", "self.assertFalse(False)")
    _, tests, summary = watch.run_events()
    assert ids(tests) == sorted(CALC + HELPERS + OTHER)
    assert summary["outcomes"]["fail"] == 3

    # Fixing calc.py makes them pass; they are not rerun after that.
    watch.edit("wproj/calc.py", "a - b", "a + b")
    _, tests, summary = watch.run_events()
    assert ids(tests) == sorted(CALC + HELPERS) and summary["ok"]
    watch.edit("wproj/test_other.py", "assertFalse(False)", "assertTrue(True)")
    _, tests, summary = watch.run_events()
    assert ids(tests) == OTHER and summary["ok"]
    assert watch.interrupt(group=False) == 0


def test_human_output_is_concise_and_ctrl_c_exits_0(start):
    watch = start("--no-reload", "--no-color")
    assert watch.expect(lambda line: "running" in line).endswith("running 4 tests")
    assert watch.expect(lambda line: line.startswith("Ran ")).endswith("4 passed — OK")
    watch.expect(lambda line: line.startswith("watching for changes"))
    watch.edit("wproj/calc.py", "a + b", "a * b")
    header = watch.expect(lambda line: "running" in line)
    assert header.endswith("wproj/calc.py changed: running 3 tests")
    summary = watch.expect(lambda line: line.startswith("Ran "))
    failures = watch.seen[watch.seen.index(header) + 1 : -1]
    test_file = watch.root / "wproj" / "test_calc.py"
    assert failures == [  # the first with its traceback, the others on one line
        "FAIL wproj.test_calc.CalcTest.test_add (wproj/test_calc.py:8)",
        "    Traceback (most recent call last):",
        f'      File "{test_file}", line 8, in test_add',
        "        self.assertEqual(calc.add(1, 2), 3)",
        "    AssertionError: 2 != 3",
        "FAIL wproj.test_calc.CalcTest.test_add_negative (wproj/test_calc.py:11): "
        "AssertionError: 1 != -2",
    ]
    assert summary.endswith("1 passed, 2 failed — FAILED (failures=2)")
    assert watch.interrupt(group=True) == 0


def test_one_run_per_burst_of_saves(start):
    watch = start("--format", "json", "--no-reload")
    watch.run_events()
    watch.event("message", text="watching for changes (Ctrl-C to stop)")
    for _ in range(3):  # an editor's save: several events, several writes
        watch.edit("wproj/test_other.py", "True", "True")
    start_event, tests, _ = watch.run_events()
    assert start_event["run"] == 2 and ids(tests) == OTHER
    watch.edit("wproj/helpers.py", "add(x, x)", "add(x, x) ")
    start_event, tests, _ = watch.run_events()
    assert start_event["run"] == 3 and ids(tests) == HELPERS  # no run from the burst was left
    assert watch.interrupt(group=False) == 0


def test_unrelated_change_runs_nothing_and_broken_module_is_reported(start):
    watch = start("--format", "json", "--no-reload")
    watch.run_events()
    watch.event("message", text="watching for changes (Ctrl-C to stop)")
    (watch.root / "wproj" / "unused.py").write_text("VALUE = 1\n")
    message = watch.event("message")
    assert message["text"] == "wproj/unused.py changed: no tests affected"
    watch.edit("wproj/test_other.py", "import unittest", "import unittest\nimport nowhere_at_all")
    _, tests, summary = watch.run_events()
    assert ids(tests) == ["unittest.loader._FailedTest.wproj.test_other"]
    assert "nowhere_at_all" in tests[0]["attachments"]["traceback"]
    assert tests[0]["file"] == str(watch.root / "wproj" / "test_other.py")
    assert not summary["ok"]
    assert watch.interrupt(group=True) == 0


def test_with_hot_reload_the_server_is_kept(start):
    watch = start("--format", "json")
    watch.run_events()
    watch.event("message", text="watching for changes (Ctrl-C to stop)")
    watch.edit("wproj/calc.py", "a + b", "a - b")
    reload = watch.event("reload")
    assert str(watch.root / "wproj" / "calc.py") in reload["changed"]
    _, tests, summary = watch.run_events()
    assert ids(tests) == sorted(CALC + HELPERS)
    assert summary["outcomes"]["fail"] == 3
    assert watch.interrupt(group=False) == 0


# -- the pieces --------------------------------------------------------------------------


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_module_name_starts_at_the_first_non_package(tmp_path):
    write(tmp_path, {"pkg/__init__.py": "", "pkg/sub/__init__.py": "", "src/lib/__init__.py": ""})
    root = str(tmp_path)
    assert module_name(f"{root}/pkg/sub/mod.py", root) == "pkg.sub.mod"
    assert module_name(f"{root}/pkg/__init__.py", root) == "pkg"
    assert module_name(f"{root}/src/lib/core.py", root) == "lib.core"
    assert module_name(f"{root}/script.py", root) == "script"
    assert module_name(f"{root}/pkg/data.txt", root) is None
    assert module_name("/elsewhere/mod.py", root) is None


def test_project_modules_finds_importers_transitively(tmp_path):
    write(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/core.py": "",
            "app/mid.py": "from app import core\n",
            "app/top.py": "from .mid import something\n",
            "app/alone.py": "import json\n",
            "app/star.py": "from app import *\n",
            "tests/__init__.py": "",
            "tests/test_top.py": "def f():\n    import app.top\n",
            "tests/test_alone.py": "from app.alone import x\n",
            ".hidden/skip.py": "import app.core\n",
        },
    )
    modules = ProjectModules([str(tmp_path)])
    assert sorted(modules.scan()) == [
        "app",
        "app.alone",
        "app.core",
        "app.mid",
        "app.star",
        "app.top",
        "tests",
        "tests.test_alone",
        "tests.test_top",
    ]
    core = str(tmp_path / "app" / "core.py")
    assert modules.affected_modules([core]) == {
        "app.core",
        "app.mid",
        "app.top",
        "app.star",  # from app import *
        "tests.test_top",
    }
    # a package's __init__ runs before everything below it
    assert "tests.test_alone" in modules.affected_modules([str(tmp_path / "app/__init__.py")])
    # an edit is seen at once; a deleted module still affects the modules that import it
    (tmp_path / "app" / "alone.py").write_text("from app import core\n")
    assert "tests.test_alone" in modules.affected_modules([core])
    (tmp_path / "app" / "mid.py").unlink()
    assert modules.affected_modules([str(tmp_path / "app" / "mid.py")]) == {
        "app.mid",
        "app.top",
        "app.star",  # through app.top
        "tests.test_top",
    }


def test_tests_of_modules_and_their_import_failures():
    ids_ = ["a.test_x.T.test_1", "a.test_xy.T.test_2", "unittest.loader._FailedTest.a.test_x"]
    assert module_tests(ids_, {"a.test_x"}) == {ids_[0], ids_[2]}
    assert module_tests(ids_, {"a"}) == {ids_[0], ids_[1]}
    assert module_tests(ids_, set()) == set()


def test_failing_ids_map_subtests_and_fixtures_to_runnable_tests():
    known = ["m.C.test_a", "m.C.test_b", "m.D.test_c", "n.E.test_d"]
    problems = [
        Outcome("m.D.test_c (i=1)", "fail", parent_id="m.D.test_c", runnable=False),
        Outcome("setUpClass (m.C)", "fail", runnable=False),
        Outcome("n.E.test_d", "uxsuccess"),
    ]
    assert failing_ids(problems, known) == set(known)


def test_wait_for_changes_gathers_a_burst():
    now = [0.0]
    arrivals = {0.1: {"a.py"}, 0.2: {"b.py"}, 0.3: {"a.py"}, 1.0: {"late.py"}}

    def sleep(seconds: float) -> None:
        now[0] = round(now[0] + seconds, 3)

    def take() -> set[str]:
        return arrivals.pop(now[0], set())

    changes = wait_for_changes(take, quiet=0.2, poll=0.1, clock=lambda: now[0], sleep=sleep)
    assert changes == {"a.py", "b.py"}
    assert now[0] == 0.5  # 0.2 s without news after the last change
    assert wait_for_changes(take, poll=0.1, clock=lambda: now[0], sleep=sleep) == {"late.py"}


def test_wait_for_changes_stops_gathering_at_the_limit():
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] = round(now[0] + seconds, 3)

    changes = wait_for_changes(
        lambda: {f"{now[0]}.py"}, quiet=0.2, limit=1.0, poll=0.1, clock=lambda: now[0], sleep=sleep
    )
    assert len(changes) == 11 and now[0] == 1.1
