"""``--format json``: the JSON lines of spec/json-output.md, and file/line location.

End to end through ``python -m testserver run|list --format json`` on
``tests/projects/cli_demo``; :class:`Locator` is checked on real files in a temporary tree.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from serverproc import PROJECTS, copy_project

from testserver.clients.jsonout import Locator

DEMO = PROJECTS / "cli_demo"


@pytest.fixture(scope="module", autouse=True)
def demo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of ``cli_demo`` for this module: ``testserver run`` keeps its memory of the
    last run in the project, which must stay out of the source tree."""
    global DEMO
    DEMO = copy_project("cli_demo", tmp_path_factory.mktemp("jsonout"))
    return DEMO


TIMEOUT = 60


def json_lines(*args: str) -> tuple[int, list[dict]]:
    result = subprocess.run(
        [sys.executable, "-m", "testserver", *args, "-t", ".", "-s", "cdemo", "--format", "json"],
        cwd=DEMO,
        capture_output=True,
        timeout=TIMEOUT,
    )
    text = result.stdout.decode("utf-8")  # strict: the output must be valid UTF-8
    events = [json.loads(line) for line in text.splitlines()]
    assert all(isinstance(event, dict) and "event" in event for event in events)
    return result.returncode, events


def def_line(path: Path, text: str) -> int:
    """The 1-based line of ``path`` that contains ``text``."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


@pytest.fixture(scope="module")
def demo():
    return json_lines("run")


def finals(events: list[dict]) -> dict[str, dict]:
    return {e["test_id"]: e for e in events if e["event"] == "test" and e["status"] != "inprogress"}


def test_a_run_is_start_tests_summary(demo):
    code, events = demo
    assert code == 1
    assert events[0] == {"event": "start", "format": 1, "run": 1, "tests": 11, "changed": []}
    assert events[-1]["event"] == "summary"
    assert {e["event"] for e in events[1:-1]} == {"test"}


def test_each_test_starts_then_finishes(demo):
    _, events = demo
    seen: dict[str, str] = {}
    for event in events[1:-1]:
        previous = seen.get(event["test_id"])
        if event["status"] == "inprogress":
            assert previous is None
        else:
            assert previous == "inprogress"
        seen[event["test_id"]] = event["status"]
    assert "inprogress" not in seen.values()


def test_test_events_carry_status_kind_and_parent(demo):
    tests = finals(demo[1])
    outcomes = "cdemo.test_outcomes.Outcomes.test_"
    assert {name: tests[outcomes + name]["status"] for name in ("pass", "fail", "skip")} == {
        "pass": "success",
        "fail": "fail",
        "skip": "skip",
    }
    assert tests[outcomes + "xfail"]["status"] == "xfail"
    assert tests[outcomes + "uxsuccess"]["status"] == "uxsuccess"
    subtest = tests["cdemo.test_sub.Sub.test_numbers (i=1)"]
    assert (subtest["kind"], subtest["parent_id"], subtest["status"]) == (
        "subtest",
        "cdemo.test_sub.Sub.test_numbers",
        "fail",
    )
    fixture = tests["setUpClass (cdemo.test_sub.BrokenFixture)"]
    assert (fixture["kind"], fixture["parent_id"]) == ("fixture", None)
    assert tests[outcomes + "pass"]["kind"] == "test"


def test_file_and_line_of_the_test_method(demo):
    tests = finals(demo[1])
    outcomes = DEMO / "cdemo" / "test_outcomes.py"
    sub = DEMO / "cdemo" / "test_sub.py"
    expected = {
        "cdemo.test_outcomes.Outcomes.test_fail": (outcomes, "def test_fail"),
        "cdemo.test_outcomes.Outcomes.test_skip": (outcomes, "def test_skip"),  # decorated
        "cdemo.test_sub.Child.test_inherited": (sub, "def test_inherited"),  # from Base
        "cdemo.test_sub.Sub.test_numbers (i=1)": (sub, "def test_numbers"),  # its parent's
        "setUpClass (cdemo.test_sub.BrokenFixture)": (sub, "def setUpClass"),
    }
    for test_id, (path, text) in expected.items():
        assert (tests[test_id]["file"], tests[test_id]["line"]) == (
            str(path),
            def_line(path, text),
        ), test_id


def test_attachments_are_text(demo):
    tests = finals(demo[1])
    fail = tests["cdemo.test_outcomes.Outcomes.test_fail"]["attachments"]
    assert fail["stdout"] == "printed before failing\n"
    assert fail["stderr"] == "warned before failing\n"
    assert fail["traceback"].endswith("AssertionError: 2 != 3\n")
    raw = tests["cdemo.test_outcomes.Outcomes.test_bytes"]["attachments"]
    assert raw["stdout"] == "bad \ufffd byte\n"
    assert tests["cdemo.test_outcomes.Outcomes.test_skip"]["attachments"] == {"reason": "not today"}
    assert tests["cdemo.test_outcomes.Outcomes.test_pass"]["attachments"] == {}
    assert isinstance(tests["cdemo.test_outcomes.Outcomes.test_pass"]["duration"], float)


def test_summary(demo):
    summary = demo[1][-1]
    assert summary["ok"] is False
    assert summary["status"] == "incomplete"  # a requested test did not run
    assert summary["ran"] == 10
    assert summary["outcomes"] == {"success": 3, "fail": 4, "skip": 1, "xfail": 1, "uxsuccess": 1}
    assert summary["errors"] == 2  # test_error raises KeyError; setUpClass failed
    assert summary["failures"] == 3
    # The test of the class whose setUpClass failed never ran, and is said so.
    never = ["cdemo.test_sub.BrokenFixture.test_never"]
    assert (summary["unknown"], summary["not_run"], summary["crashes"]) == ([], never, [])
    assert summary["text"].startswith("Ran 10 tests in ")


def test_unmatched_selector_is_a_message_event():
    code, events = json_lines("run", "Outcomes.test_pass", "nope_nothing")
    assert code == 1
    assert {"event": "message", "text": "no test matches 'nope_nothing'"} in events
    summary = events[-1]
    assert (summary["ok"], summary["ran"], summary["unmatched"]) == (False, 1, ["nope_nothing"])


def test_list_json_gives_file_and_line():
    code, events = json_lines("list", "Outcomes")
    assert code == 0
    assert [e["status"] for e in events] == ["exists"] * 7
    first = events[0]
    path = DEMO / "cdemo" / "test_outcomes.py"
    assert first["test_id"] == "cdemo.test_outcomes.Outcomes.test_bytes"
    assert (first["file"], first["line"]) == (str(path), def_line(path, "def test_bytes"))


# -- Locator -----------------------------------------------------------------------------

SOURCE = """\
import unittest


class Mixin:
    def test_shared(self):
        pass


class Outer(Mixin, unittest.TestCase):
    @unittest.skip("x")
    def test_decorated(self):
        pass

    class Inner(unittest.TestCase):
        def test_nested(self):
            pass


def setUpModule():
    pass
"""


@pytest.fixture
def tree(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "test_m.py").write_text(SOURCE)
    sub = package / "sub"
    sub.mkdir()
    (sub / "__init__.py").write_text("class T:\n    def test_x(self): pass\n")
    (package / "test_bad.py").write_text("def (:\n")
    return tmp_path


def test_locator_methods_classes_and_fixtures(tree):
    locator = Locator([str(tree)])
    path = str(tree / "pkg" / "test_m.py")
    assert locator.locate("pkg.test_m.Outer.test_decorated") == (path, 11)
    assert locator.locate("pkg.test_m.Outer.test_shared") == (path, 5)
    assert locator.locate("pkg.test_m.Outer.Inner.test_nested") == (path, 15)
    assert locator.locate("pkg.test_m.Outer.test_generated") == (path, 9)
    assert locator.locate("setUpModule (pkg.test_m)") == (path, 19)
    assert locator.locate("setUpClass (pkg.test_m.Outer)") == (path, 9)
    assert locator.locate("pkg.test_m.Outer.test_shared (i=1)") == (path, 5)
    assert locator.locate("x (i=1)", "pkg.test_m.Outer.test_decorated") == (path, 11)


def test_locator_packages_failures_and_unknowns(tree):
    locator = Locator([str(tree)])
    assert locator.locate("pkg.sub.T.test_x") == (str(tree / "pkg" / "sub" / "__init__.py"), 2)
    assert locator.locate("unittest.loader._FailedTest.pkg.test_m") == (
        str(tree / "pkg" / "test_m.py"),
        None,
    )
    assert locator.locate("pkg.test_bad.T.test_x") == (str(tree / "pkg" / "test_bad.py"), None)
    assert locator.locate("other.mod.T.test_x") == (None, None)


def test_locator_sees_edits(tree):
    locator = Locator([str(tree)])
    path = tree / "pkg" / "test_m.py"
    assert locator.locate("pkg.test_m.Outer.test_decorated")[1] == 11
    path.write_text("\n\n" + SOURCE)
    assert locator.locate("pkg.test_m.Outer.test_decorated")[1] == 13
