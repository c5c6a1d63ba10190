"""End-to-end: a real ``python -m testserver --serve`` over real pipes, decoded twice."""

from __future__ import annotations

import pytest
from serverproc import ServerProcess, subunit_events

from testserver.wire.commands import Cancel, ListTests, Quit, RunTests, Stdin
from testserver.wire.control import COMPLETE, HELLO

OUT = "ebasic.test_outcomes."
FAILED_IMPORT = "unittest.loader._FailedTest.ebasic.test_broken_import"


@pytest.fixture(scope="module")
def server():
    """One warm server for the tests that leave it serving (each waits for its completions)."""
    proc = ServerProcess("e2e_basic", "-t", ".", "-s", "ebasic")
    yield proc
    alive = proc.proc.poll() is None
    proc.kill()
    assert alive, "a test stopped the shared server: give it own_server"


@pytest.fixture
def own_server(start_server):
    """A server for one test that stops it."""
    return start_server("e2e_basic", "-t", ".", "-s", "ebasic")


def final_statuses(events: list[dict]) -> dict[str, str]:
    """Final status per test id from python-subunit's parser events."""
    finals = {}
    for event in events:
        status = event.get("test_status")
        if event.get("test_id") and status not in (None, "exists", "inprogress"):
            finals[event["test_id"]] = status
    return finals


def test_hello_describes_the_server(server):
    hello = server.hello
    assert hello["protocol"] == 1
    assert hello["subunit"] == "2.1"
    assert hello["isolation"] == "worker"
    assert hello["tests"] == 16
    assert "run-tests" in hello["capabilities"]
    assert [e["module"] for e in hello["discovery_errors"]] == ["ebasic.test_broken_import"]
    assert "this_module_does_not_exist" in hello["discovery_errors"][0]["message"]
    assert hello["generation"] == 0


def test_list_tests_lists_every_runnable_test_once(server):
    transcript = server.request(ListTests("L1"))
    exists = [p.test_id for p in transcript.packets if p.status == "exists"]
    assert len(exists) == len(set(exists)) == 16
    assert FAILED_IMPORT in exists
    assert not any("(i=" in i for i in exists), "subtests are never listed"
    assert transcript.complete == {
        "id": "L1",
        "command": "list-tests",
        "status": "ok",
        "generation": 0,
        "tests": 16,
        "discovery_errors": [
            {
                "test_id": FAILED_IMPORT,
                "module": "ebasic.test_broken_import",
                "message": "ModuleNotFoundError: No module named 'this_module_does_not_exist'",
            }
        ],
    }
    parsed = subunit_events(transcript.raw)
    assert [e["test_id"] for e in parsed if e["test_status"] == "exists"] == exists


def test_run_reports_every_outcome(server):
    ids = [
        OUT + n
        for n in (
            "Outcomes.test_pass",
            "Outcomes.test_fail",
            "Outcomes.test_error",
            "Outcomes.test_skip",
            "Outcomes.test_xfail",
            "Outcomes.test_uxsuccess",
        )
    ]
    transcript = server.request(RunTests("r1", tuple(ids)))
    expected = ["success", "fail", "fail", "skip", "xfail", "uxsuccess"]
    assert [transcript.statuses()[i] for i in ids] == expected
    parsed = final_statuses(subunit_events(transcript.raw))
    assert [parsed[i] for i in ids] == expected
    assert b"AssertionError: 1 != 2" in transcript.files(ids[1], "traceback")
    assert b"RuntimeError: boom" in transcript.files(ids[2], "traceback")
    assert transcript.files(ids[3], "reason") == b"not today"
    complete = transcript.complete
    assert complete["status"] == "ok"
    assert complete["ran"] == 6
    assert complete["outcomes"]["fail"] == 2
    assert complete["unknown"] == [] and complete["not_run"] == []


def test_every_fail_has_an_attachment(server):
    transcript = server.request(RunTests("all"))
    fails = [i for i, s in transcript.statuses().items() if s == "fail"]
    assert fails
    for test_id in fails:
        assert any(p.test_id == test_id and p.file_name for p in transcript.packets), test_id


def test_output_is_captured_per_test_never_raw(server):
    ids = [
        OUT + "Output." + n
        for n in ("test_print", "test_fd_write", "test_child_process", "test_binary")
    ]
    transcript = server.request(RunTests("out", tuple(ids)))
    assert transcript.files(ids[0], "stdout") == b"hello from print\n"
    assert transcript.files(ids[0], "stderr") == b"hello from stderr\n"
    assert transcript.files(ids[1], "stdout") == b"hello from fd 1\n"
    assert transcript.files(ids[1], "stderr") == b"hello from fd 2\n"
    assert transcript.files(ids[2], "stdout") == b"hello from a child\n"
    assert transcript.files(ids[3], "stdout") == b"\xb3\x29\x01\x0c not a packet \xff\n"
    parsed = subunit_events(transcript.raw)
    assert not [e for e in parsed if e.get("test_id") == "subunit.parser"]
    assert all(s == "success" for s in final_statuses(parsed).values())


def test_unknown_ids_fail_clearly_and_the_rest_runs(server):
    ids = ("no.such.test", OUT + "Outcomes.test_pass")
    transcript = server.request(RunTests("u", ids))
    assert transcript.statuses() == {"no.such.test": "fail", ids[1]: "success"}
    assert b"no test with id 'no.such.test'" in transcript.files("no.such.test", "reason")
    assert transcript.complete["unknown"] == ["no.such.test"]


def test_import_errors_are_failing_tests(server):
    transcript = server.request(RunTests("imp", (FAILED_IMPORT,)))
    assert transcript.statuses() == {FAILED_IMPORT: "fail"}
    assert b"this_module_does_not_exist" in transcript.files(FAILED_IMPORT, "traceback")


def test_class_and_module_fixtures(server):
    transcript = server.request(
        RunTests(
            "fx",
            (
                "ebasic.test_fixtures.WithClassFixture.test_saw_fixtures",
                "ebasic.test_fixtures.BrokenClassFixture.test_never_runs",
            ),
        )
    )
    statuses = transcript.statuses()
    assert statuses["ebasic.test_fixtures.WithClassFixture.test_saw_fixtures"] == "success"
    assert statuses["setUpClass (ebasic.test_fixtures.BrokenClassFixture)"] == "fail"
    assert "ebasic.test_fixtures.BrokenClassFixture.test_never_runs" not in statuses
    assert transcript.complete["not_run"] == [
        "ebasic.test_fixtures.BrokenClassFixture.test_never_runs"
    ]


def test_subtests_have_parent_ids_and_the_parent_a_final_status(server):
    parent = "ebasic.test_subtests.Sub.test_mixed"
    transcript = server.request(RunTests("sub", (parent,)))
    subs = {p.test_id: p.parent_test_id for p in transcript.packets if p.parent_test_id}
    assert subs == {f"{parent} (i={i})": parent for i in range(4)}
    statuses = transcript.statuses()
    assert statuses[f"{parent} (i=1)"] == "fail"
    assert statuses[f"{parent} (i=2)"] == "skip"
    assert statuses[parent] == "fail"
    parsed = final_statuses(subunit_events(transcript.raw))
    assert parsed[parent] == "fail"


def test_subunit_2_0_never_sets_the_parent_flag(start_server):
    proc = start_server("e2e_basic", "-t", ".", "-s", "ebasic", "--subunit-version", "2.0")
    assert proc.hello["subunit"] == "2.0"
    transcript = proc.request(RunTests("s", ("ebasic.test_subtests.Sub.test_mixed",)))
    assert all(p.parent_test_id is None for p in transcript.packets)
    assert "ebasic.test_subtests.Sub.test_mixed (i=1)" in transcript.statuses()


def test_malformed_frames_get_errors_and_the_server_keeps_serving(server):
    server.send_raw(b"frobnicate x1 0\n")
    bad = server.wait_complete("x1")
    assert bad.complete["status"] == "error"
    assert bad.complete["code"] == "unknown-command"
    server.send_raw(b"garbage\n")
    garbage = server.read_until(lambda p: p.file_name == COMPLETE)
    body = garbage.controls(COMPLETE)[0]
    assert body["status"] == "error" and body["id"] is None and body["message"]
    transcript = server.request(ListTests("after"))
    assert transcript.complete["status"] == "ok"


def test_stdin_without_a_batch_is_an_error(server):
    transcript = server.request(Stdin("in", b"hello\n"))
    assert transcript.complete["status"] == "error"
    assert transcript.complete["code"] == "not-running"


def test_cancel_with_nothing_running(server):
    transcript = server.request(Cancel("c"))
    assert transcript.complete["status"] == "ok"
    assert transcript.complete["cancelled"] is None


def test_quit_exits_zero(own_server):
    transcript = own_server.request(Quit("q"))
    assert transcript.complete["status"] == "ok"
    assert own_server.wait() == 0


def test_end_of_input_exits_zero_after_queued_commands(own_server):
    own_server.send(RunTests("last", (OUT + "Outcomes.test_pass",)))
    own_server.close_stdin()
    transcript = own_server.wait_complete("last")
    assert transcript.statuses() == {OUT + "Outcomes.test_pass": "success"}
    assert own_server.wait() == 0


def test_hand_typed_frames_work(server):
    server.send_raw(b"list-tests 1 0\r\n\n")
    transcript = server.wait_complete("1")
    assert transcript.complete["tests"] == 16


def test_the_same_test_runs_again_with_the_same_result(server):
    test_id = OUT + "Outcomes.test_pass"
    for n in range(5):
        transcript = server.request(RunTests(f"again{n}", (test_id,)))
        assert transcript.statuses() == {test_id: "success"}


def test_hello_is_the_first_packet(server):
    first = server.hello_transcript.packets[0]
    assert first.file_name == HELLO and first.test_id is None


def test_testtools_subtests_are_reported_one_by_one(server):
    parent = "ebasic.test_testtools_subtests.ToolsSub.test_subtests"
    transcript = server.request(RunTests("tt", (parent,)))
    statuses = transcript.statuses()
    assert statuses[f"{parent} (i=0)"] == "success"
    assert statuses[f"{parent} (i=1)"] == "fail"
    assert statuses[f"{parent} (i=2)"] == "skip"
    assert statuses[parent] == "fail"
    assert b"one fails" in transcript.files(f"{parent} (i=1)", "traceback")
    parents = {p.parent_test_id for p in transcript.packets if p.parent_test_id}
    assert parents == {parent}


def test_commands_after_quit_are_refused_not_dropped(own_server):
    own_server.send_raw(b"quit q 0\nlist-tests late 0\n")
    late = own_server.wait_complete("late")
    assert late.complete["status"] == "error"
    assert late.complete["code"] == "quitting"
    assert own_server.wait() == 0


def test_sigterm_finishes_the_batch_completion_and_exits(own_server):
    import signal

    own_server.send(RunTests("t", (OUT + "Outcomes.test_pass",)))
    own_server.wait_complete("t")
    own_server.proc.send_signal(signal.SIGTERM)
    assert own_server.wait() == 0
