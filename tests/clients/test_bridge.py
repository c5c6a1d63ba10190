"""``testserver bridge``: JSON commands in, JSON events out, on one warm server, for editors.

End to end: ``python -m testserver bridge`` runs as a subprocess in a temporary copy of
``tests/projects/editor_demo``, fed JSON lines on its stdin; a reader thread collects the
JSON lines it writes. The request parser and the test selection are also checked alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from processes import session_processes
from serverproc import CommandProcess, copy_project

from testserver.clients.bridge import BadRequest, Request, parse_request, select_tests

PROJECT = Path(__file__).parent.parent / "projects" / "editor_demo"
TIMEOUT = 60

CALC = ["edemo.test_calc.Calc.test_add", "edemo.test_calc.Calc.test_sub"]
PRINTS = "edemo.test_calc.Calc.test_prints"
BREAKPOINT = "edemo.test_debug.Debug.test_breakpoint"
INPUT = "edemo.test_debug.Debug.test_input"


def json_line(line: bytes) -> dict:
    """One line the bridge wrote, as strict UTF-8 JSON."""
    return json.loads(line.decode("utf-8"))


class BridgeProcess(CommandProcess):
    """``testserver bridge`` in a project copy: ``send`` commands, ``expect`` events."""

    name = "the bridge"
    what = "events"

    def __init__(self, root: Path, *args: str) -> None:
        argv = [sys.executable, "-m", "testserver", "bridge", "-t", ".", "-s", "edemo", *args]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONBREAKPOINT"}
        super().__init__(argv, root, json_line, stdin=subprocess.PIPE, env=env)
        self.ready = self.event("ready")
        """The bridge's first event: its server has loaded the tests."""

    def send(self, command: dict | str) -> None:
        """Write one line: ``command`` as JSON, or a raw string."""
        line = command if isinstance(command, str) else json.dumps(command)
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode("utf-8") + b"\n")
        self.process.stdin.flush()

    def event(self, name: str, **fields) -> dict:
        """The next event called ``name`` with these field values."""
        return self.expect(
            lambda e: e["event"] == name and all(e.get(k) == v for k, v in fields.items())
        )

    def until_complete(self, request_id) -> list[dict]:
        """Every event up to and including the completion of command ``request_id``."""
        start = len(self.seen)
        self.event("complete", id=request_id)
        return self.seen[start:]

    def edit(self, relative: str, old: str, new: str) -> None:
        path = self.root / relative
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))

    def wait(self) -> int:
        """Wait for the exit; check stderr has no traceback and no process is left."""
        code, _ = self.finish()
        assert session_processes(self.process.pid) == [], "the bridge left processes behind"
        return code


@pytest.fixture
def project(tmp_path):
    return copy_project(PROJECT, tmp_path, "project")


@pytest.fixture
def bridge(project):
    process = BridgeProcess(project)
    try:
        yield process
        if process.process.poll() is None:  # every test ends with end of input: a clean exit
            assert process.process.stdin is not None
            process.process.stdin.close()
            assert process.wait() == 0
    finally:
        process.kill()


def finals(events: list[dict]) -> dict[str, dict]:
    return {e["test_id"]: e for e in events if e["event"] == "test" and e["status"] != "inprogress"}


# -- end to end --------------------------------------------------------------------------


def test_the_bridge_says_ready_first_once_the_tests_are_loaded(bridge):
    ready = bridge.ready
    assert bridge.seen == [ready]  # the very first line
    assert ready["load_errors"] == [] and ready["reload"] is True
    assert ready["generation"] == 0 and ready["server"].startswith("testserver ")
    bridge.send({"id": 1, "command": "list"})
    assert bridge.until_complete(1)[-1]["tests"] == ready["tests"] > 0
    assert [e["event"] for e in bridge.seen].count("ready") == 1


def test_ready_carries_the_load_errors(project):
    (project / "edemo" / "test_broken_import.py").write_text("import no_such_module_here\n")
    bridge = BridgeProcess(project, "--no-reload")
    try:
        ready = bridge.ready
        assert ready["reload"] is False
        [error] = ready["load_errors"]
        assert error == {
            "test_id": "unittest.loader._FailedTest.edemo.test_broken_import",
            "module": "edemo.test_broken_import",
            "message": "ModuleNotFoundError: No module named 'no_such_module_here'",
        }
        bridge.send({"id": 1, "command": "quit"})
        assert bridge.wait() == 0
    finally:
        bridge.kill()


def test_list_gives_every_test_with_file_and_line(bridge):
    bridge.send({"id": "l1", "command": "list"})
    events = bridge.until_complete("l1")
    tests = {e["test_id"]: e for e in events if e["event"] == "test"}
    assert sorted(tests) == sorted([*CALC, PRINTS, BREAKPOINT, INPUT])
    assert {e["status"] for e in tests.values()} == {"exists"}
    add = tests["edemo.test_calc.Calc.test_add"]
    assert (add["file"], add["line"]) == (str(bridge.root / "edemo" / "test_calc.py"), 7)
    assert events[-1] == {
        "event": "complete",
        "id": "l1",
        "command": "list",
        "status": "ok",
        "tests": 5,
        "unmatched": [],
    }


def test_run_a_module_reports_each_test_with_its_location(bridge):
    bridge.send({"id": 1, "command": "run", "tests": ["edemo.test_calc"]})
    events = bridge.until_complete(1)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-2:] == ["summary", "complete"]
    assert events[0]["tests"] == 3
    results = finals(events)
    assert {k: v["status"] for k, v in results.items()} == {
        "edemo.test_calc.Calc.test_add": "success",
        "edemo.test_calc.Calc.test_sub": "fail",
        PRINTS: "success",
    }
    failure = results["edemo.test_calc.Calc.test_sub"]
    test_file = str(bridge.root / "edemo" / "test_calc.py")
    assert (failure["file"], failure["line"]) == (test_file, 10)
    assert f'File "{test_file}", line 11, in test_sub' in failure["attachments"]["traceback"]
    assert "AssertionError: 2 != 3" in failure["attachments"]["traceback"]
    output = [e for e in events if e["event"] == "test-output"]
    assert [(e["test_id"], e["name"], e["text"]) for e in output] == [
        (PRINTS, "stdout", "hello from test_prints\n")
    ]
    summary, complete = events[-2:]
    assert summary["outcomes"]["success"] == 2 and summary["outcomes"]["fail"] == 1
    assert not summary["ok"] and summary["text"].startswith("Ran 3 tests")
    assert (complete["command"], complete["status"], complete["ok"]) == ("run", "ok", False)
    assert complete["ran"] == 3


def test_selectors_are_ids_prefixes_or_patterns(bridge):
    selectors = ["edemo.test_calc.Calc.test_add", "Debug"]
    bridge.send({"id": 1, "command": "run", "tests": selectors, "input": False})
    bridge.send({"id": 2, "command": "run", "tests": ["no_such_thing"]})
    first = bridge.until_complete(1)
    assert sorted(finals(first)) == sorted(["edemo.test_calc.Calc.test_add", BREAKPOINT, INPUT])
    second = bridge.until_complete(2)
    assert {"event": "message", "text": "no test matches 'no_such_thing'"} in second
    summary = next(e for e in second if e["event"] == "summary")
    assert summary["unmatched"] == ["no_such_thing"] and not summary["ok"]
    assert second[-1]["ok"] is False


def test_pdb_session_through_stdin_commands(bridge):
    bridge.send({"id": "dbg", "command": "run", "tests": [BREAKPOINT]})
    wanted = bridge.event("stdin-wanted")
    assert (wanted["id"], wanted["test_id"], wanted["prompt"]) == ("dbg", BREAKPOINT, "(Pdb) ")
    shown = "".join(e["text"] for e in bridge.seen if e["event"] == "test-output")
    assert "-> self.assertEqual(secret, 42)" in shown
    bridge.send({"id": "in1", "command": "stdin", "data": "p secret\n"})
    assert bridge.event("complete", id="in1")["bytes"] == 9
    bridge.event("stdin-wanted")
    shown = "".join(e["text"] for e in bridge.seen if e["event"] == "test-output")
    assert shown.endswith("(Pdb) 42\n(Pdb) ")
    bridge.send({"command": "stdin", "data": "c\n"})
    events = bridge.until_complete("dbg")
    assert finals(events)[BREAKPOINT]["status"] == "success"
    assert events[-1]["ok"] is True


def test_cancel_a_test_blocked_on_input(bridge):
    bridge.send({"id": "r", "command": "run", "tests": [BREAKPOINT, INPUT]})
    wanted = bridge.event("stdin-wanted", test_id=BREAKPOINT)
    assert wanted["prompt"] == "(Pdb) "
    bridge.send({"id": "c", "command": "cancel"})
    events = bridge.until_complete("r")
    failure = finals(events)[BREAKPOINT]
    assert failure["status"] == "fail" and "cancelled" in failure["attachments"]["traceback"]
    summary, complete = events[-2:]
    assert summary["status"] == "cancelled" and summary["not_run"] == [INPUT]
    assert (complete["status"], complete["ok"]) == ("cancelled", False)
    cancel = bridge.event("complete", id="c")
    assert (cancel["command"], cancel["cancelled"]) == ("cancel", "r")
    # The server is still warm: the next command runs.
    bridge.send({"id": "again", "command": "run", "tests": [CALC[0]]})
    assert bridge.until_complete("again")[-1]["ok"] is True


def test_malformed_lines_get_errors_and_the_bridge_goes_on(bridge):
    bridge.send("this is not json")
    bridge.send("[1, 2]")
    bridge.send({"id": 7, "command": "frobnicate"})
    bridge.send({"id": 8, "command": "run", "tests": "edemo"})
    bridge.send({"id": 9, "command": "stdin"})  # nothing runs: the server says so
    codes = [bridge.event("error")["code"] for _ in range(4)]
    assert codes == ["bad-json", "bad-command", "unknown-command", "bad-command"]
    assert [e.get("id") for e in bridge.seen[1:]] == [None, None, 7, 8]
    assert bridge.seen[1]["line"] == "this is not json"
    stdin = bridge.event("complete", id=9)
    assert (stdin["status"], stdin["code"]) == ("error", "not-running")
    bridge.send({"id": 10, "command": "list"})
    assert bridge.until_complete(10)[-1]["tests"] == 5


def test_edited_code_is_reloaded_before_the_next_run(bridge):
    bridge.send({"id": 1, "command": "run", "tests": [CALC[1]]})
    assert finals(bridge.until_complete(1))[CALC[1]]["status"] == "fail"
    bridge.edit("edemo/calc.py", "return a - b", "return a - b + 1")
    bridge.send({"id": 2, "command": "run", "tests": [CALC[1]]})
    events = bridge.until_complete(2)
    reload = next(e for e in events if e["event"] == "reload")
    assert reload["changed"] == [str(bridge.root / "edemo" / "calc.py")]
    assert "edemo.calc" in reload["reloaded"] and not reload["restarted"]
    assert [e["event"] for e in events].index("reload") < [e["event"] for e in events].index(
        "start"
    )
    assert finals(events)[CALC[1]]["status"] == "success"
    # An explicit reload applies changes at once and reports them.
    bridge.edit(
        "edemo/test_calc.py",
        "    def test_prints",
        "    def test_new(self):\n        pass\n\n    def test_prints",
    )
    bridge.send({"id": 3, "command": "reload"})
    events = bridge.until_complete(3)
    assert events[0]["event"] == "reload" and events[0]["added"] == [
        "edemo.test_calc.Calc.test_new"
    ]
    assert (events[-1]["command"], events[-1]["status"]) == ("reload", "ok")


def test_a_server_restart_is_transparent(bridge):
    bridge.send({"id": 1, "command": "list"})
    bridge.until_complete(1)
    (bridge.root / "edemo" / "native.so").write_bytes(b"")  # cannot be reloaded in place
    bridge.send({"id": 2, "command": "run", "tests": ["edemo.test_calc"]})
    events = bridge.until_complete(2)
    reload = next(e for e in events if e["event"] == "reload")
    assert reload["restarted"] and "native.so" in reload["reason"]
    assert len(finals(events)) == 3 and events[-1]["status"] == "ok"


def test_a_dead_server_is_reported_and_replaced(project):
    (project / "edemo" / "test_crash.py").write_text(
        "import os\nimport unittest\n\n\nclass Crash(unittest.TestCase):\n"
        "    def test_exit(self):\n        os._exit(3)\n"
    )
    bridge = BridgeProcess(project, "--isolation", "none")
    try:
        first_pid = bridge.ready["pid"]
        bridge.send({"id": 1, "command": "run", "tests": ["edemo.test_crash"]})
        events = bridge.until_complete(1)
        assert [e["event"] for e in events if e["event"] in ("message", "error", "summary")] == [
            "message",
            "error",
        ]
        assert events[-1]["status"] == "error" and events[-1]["code"] == "server-died"
        bridge.send({"id": 2, "command": "run", "tests": [CALC[0]]})
        events = bridge.until_complete(2)
        assert events[0] == {"event": "message", "text": "starting a new server"}
        assert events[1]["event"] == "ready" and events[1]["pid"] != first_pid
        assert events[-1]["ok"] is True
        bridge.send({"id": 3, "command": "quit"})
        assert bridge.wait() == 0
    finally:
        bridge.kill()


def test_quit_exits_0_and_leaves_nothing_behind(bridge):
    bridge.send({"id": 1, "command": "run", "tests": [CALC[0]]})
    bridge.send({"id": "q", "command": "quit"})
    bridge.send({"id": "ignored", "command": "list"})  # after quit: not read
    bridge.until_complete(1)
    assert bridge.event("complete", id="q") == {
        "event": "complete",
        "id": "q",
        "command": "quit",
        "status": "ok",
    }
    assert bridge.wait() == 0
    assert bridge.items.get(timeout=TIMEOUT) is None  # nothing after the quit


def test_end_of_input_ends_a_test_waiting_for_input_and_exits_0(bridge):
    bridge.send({"id": 1, "command": "run", "tests": [INPUT]})
    assert bridge.event("stdin-wanted")["prompt"] == "name? "
    assert bridge.process.stdin is not None
    bridge.process.stdin.close()
    events = bridge.until_complete(1)
    assert "EOFError" in finals(events)[INPUT]["attachments"]["traceback"]
    assert bridge.wait() == 0


# -- the pieces --------------------------------------------------------------------------


def test_parse_request():
    assert parse_request(b'{"command": "run", "id": 3, "tests": ["a.b", " c "]}') == Request(
        "run", 3, ("a.b", "c")
    )
    assert parse_request('{"command": "stdin", "data": "é\\n"}'.encode()) == Request(
        "stdin", data="é\n"
    )
    for line, code in [
        (b"{", "bad-json"),
        (b"\xff", "bad-json"),
        (b'"list"', "bad-command"),
        (b'{"command": "LIST"}', "unknown-command"),
        (b'{"command": "run", "tests": [1]}', "bad-command"),
        (b'{"command": "run", "tests": [""]}', "bad-command"),
        (b'{"command": "stdin", "data": null}', "bad-command"),
        (b'{"command": "run", "input": "no"}', "bad-command"),
    ]:
        with pytest.raises(BadRequest) as caught:
            parse_request(line)
        assert caught.value.code == code, line


def test_select_tests_by_id_prefix_failed_module_and_pattern():
    ids = [
        "pkg.test_a.T.test_x",
        "pkg.test_a.T.test_y",
        "pkg.test_ab.U.test_z",
        "unittest.loader._FailedTest.pkg.test_broken",
    ]
    assert select_tests(ids, []) == (ids, [])
    assert select_tests(ids, ["pkg.test_a.T.test_x"]) == (ids[:1], [])
    assert select_tests(ids, ["pkg.test_a"]) == (ids[:2], [])  # not test_ab
    assert select_tests(ids, ["pkg.test_a.T"]) == (ids[:2], [])
    assert select_tests(ids, ["pkg"]) == (ids, [])
    # The test at point in a module that does not import: its import failure.
    assert select_tests(ids, ["pkg.test_broken.T.test_q"]) == (ids[3:], [])
    assert select_tests(ids, ["test_z", "*.T.test_y"]) == ([ids[1], ids[2]], [])
    assert select_tests(ids, ["nope", "pkg.test_a.T.test_x"]) == (ids[:1], ["nope"])
