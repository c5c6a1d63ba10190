"""End-to-end: tests that kill, exit, interrupt or hang cannot take the warm server down."""

from __future__ import annotations

import signal

import pytest
from serverproc import ServerProcess, subunit_events

from testserver.wire.commands import Cancel, ListTests, RunTests, Stdin
from testserver.wire.control import STDIN_WANTED
from testserver.wire.framing import encode_command

C = "ecrash.test_crashes.Crashes."
SLOW = "ecrash.test_crashes.Slow."


@pytest.fixture
def server(start_server):
    return start_server("e2e_crash", "-t", ".", "-s", "ecrash", "--timeout", "5")


def test_a_crashing_batch_reports_the_victims_and_runs_the_rest(server):
    ids = tuple(
        C + n
        for n in (
            "test_before",
            "test_os_exit",
            "test_segfault",
            "test_sys_exit",
            "test_keyboard_interrupt",
            "test_after",
        )
    )
    transcript = server.request(RunTests("crash", ids))
    statuses = transcript.statuses()
    assert [statuses[i] for i in ids] == ["success", "fail", "fail", "fail", "fail", "success"]
    assert b"exited with status 3" in transcript.files(ids[1], "traceback")
    assert transcript.files(ids[1], "stdout") == b"about to exit\n"
    assert b"SIGSEGV" in transcript.files(ids[2], "traceback")
    assert transcript.files(ids[2], "stdout") == b"about to segfault\n"
    assert b"SystemExit" in transcript.files(ids[3], "traceback")
    assert b"KeyboardInterrupt" in transcript.files(ids[4], "traceback")
    complete = transcript.complete
    assert complete["status"] == "ok"
    assert complete["ran"] == 6
    assert len(complete["crashes"]) == 2
    parsed = subunit_events(transcript.raw)
    assert not [e for e in parsed if e.get("test_id") == "subunit.parser"]
    # and the server is still warm
    assert server.request(ListTests("after")).complete["tests"] == 8


@pytest.mark.heavy
def test_a_hanging_test_times_out_and_the_batch_goes_on(server):
    ids = (SLOW + "test_hang", SLOW + "test_quick")
    transcript = server.request(RunTests("slow", ids), timeout=30)
    assert transcript.statuses() == {ids[0]: "fail", ids[1]: "success"}
    assert b"timed out after 5 s" in transcript.files(ids[0], "traceback")


def test_cancel_interrupts_the_running_test_and_lists_the_rest_as_not_run(server):
    ids = (SLOW + "test_hang", SLOW + "test_quick", C + "test_before")
    server.send(RunTests("long", ids))
    server.read_until(lambda p: p.test_id == ids[0] and p.status == "inprogress")
    server.send(Cancel("stop"))
    transcript = server.wait_complete("long", timeout=10)
    assert transcript.complete["status"] == "cancelled"
    assert transcript.complete["not_run"] == list(ids[1:])
    assert transcript.statuses() == {ids[0]: "fail"}
    cancel = server.wait_complete("stop")
    assert cancel.complete["cancelled"] == "long"
    assert server.request(RunTests("next", (C + "test_after",))).statuses() == {
        C + "test_after": "success"
    }


def test_sigint_cancels_the_batch_and_the_server_keeps_serving(server):
    server.send(RunTests("long", (SLOW + "test_hang", SLOW + "test_quick")))
    server.read_until(lambda p: p.status == "inprogress")
    server.proc.send_signal(signal.SIGINT)
    transcript = server.wait_complete("long", timeout=10)
    assert transcript.complete["status"] == "cancelled"
    assert server.request(ListTests("alive")).complete["status"] == "ok"


def test_stdin_reaches_the_running_test(stdin_server):
    proc = stdin_server
    test_id = "estdin.test_stdin.ReadsStdin.test_readline"
    proc.send(RunTests("r", (test_id,)))
    proc.read_until(lambda p: p.status == "inprogress")
    assert proc.request(Stdin("in", b"typed line\n")).complete["bytes"] == 11
    transcript = proc.wait_complete("r")
    assert transcript.files(test_id, "stdout") == b"read 'typed line\\n'\n"
    assert transcript.statuses() == {test_id: "success"}


def test_empty_stdin_is_end_of_input(stdin_server):
    proc = stdin_server
    test_id = "estdin.test_stdin.ReadsStdin.test_readline"
    proc.send(RunTests("r", (test_id,)))
    proc.send(Stdin("eof", b""))
    transcript = proc.wait_complete("r")
    assert transcript.files(test_id, "stdout") == b"read ''\n"


@pytest.fixture
def stdin_server(start_server):
    return start_server("e2e_stdin", "-t", ".", "-s", "estdin")


def wait_for_stdin_wanted(server, test_id):
    transcript = server.read_until(lambda p: p.file_name == STDIN_WANTED)
    assert transcript.controls(STDIN_WANTED)[-1]["test_id"] == test_id
    return transcript


def test_pdb_is_driven_through_the_stream(stdin_server):
    test_id = "estdin.test_pdb.Debugged.test_breakpoint"
    stdin_server.send(RunTests("dbg", (test_id,)))
    prompt = wait_for_stdin_wanted(stdin_server, test_id)
    assert prompt.files(test_id, "stdout").endswith(b"(Pdb) ")
    stdin_server.request(Stdin("s1", b"p secret\n"))
    shown = wait_for_stdin_wanted(stdin_server, test_id)
    assert b"42" in shown.files(test_id, "stdout")
    stdin_server.request(Stdin("s2", b"c\n"))
    transcript = stdin_server.wait_complete("dbg")
    assert transcript.statuses() == {test_id: "success"}
    parsed = subunit_events(prompt.raw + shown.raw + transcript.raw)
    assert not [e for e in parsed if e.get("test_id") == "subunit.parser"]


def test_input_prompt_and_answer(stdin_server):
    test_id = "estdin.test_pdb.Debugged.test_input_blocks"
    stdin_server.send(RunTests("ask", (test_id,)))
    prompt = wait_for_stdin_wanted(stdin_server, test_id)
    assert prompt.files(test_id, "stdout") == b"say something: "
    stdin_server.request(Stdin("a", b"hi\n"))
    transcript = stdin_server.wait_complete("ask")
    assert transcript.files(test_id, "stdout") == b"you said 'hi'\n"
    assert transcript.statuses() == {test_id: "success"}


def test_cancel_while_a_test_waits_for_input(stdin_server):
    test_id = "estdin.test_pdb.Debugged.test_input_blocks"
    stdin_server.send(RunTests("ask", (test_id, "estdin.test_stdin.ReadsStdin.test_readline")))
    wait_for_stdin_wanted(stdin_server, test_id)
    stdin_server.send(Cancel("stop"))
    transcript = stdin_server.wait_complete("ask", timeout=10)
    assert transcript.complete["status"] == "cancelled"
    assert transcript.statuses() == {test_id: "fail"}
    assert transcript.complete["not_run"] == ["estdin.test_stdin.ReadsStdin.test_readline"]
    stdin_server.send(RunTests("next", (test_id,)))
    wait_for_stdin_wanted(stdin_server, test_id)
    stdin_server.request(Stdin("eof", b""))
    assert stdin_server.wait_complete("next").statuses() == {test_id: "fail"}


def test_closing_the_servers_stdin_gives_a_waiting_test_end_of_input(stdin_server):
    test_id = "estdin.test_stdin.ReadsStdin.test_readline"
    stdin_server.send(RunTests("r", (test_id,)))
    stdin_server.close_stdin()
    transcript = stdin_server.wait_complete("r")
    assert transcript.files(test_id, "stdout") == b"read ''\n"
    assert stdin_server.wait() == 0


def test_in_process_isolation_runs_the_same_tests(start_server):
    proc = start_server("e2e_crash", "-t", ".", "-s", "ecrash", "--isolation", "none")
    assert proc.hello["isolation"] == "none"
    ids = (C + "test_before", C + "test_sys_exit", C + "test_after")
    transcript = proc.request(RunTests("inproc", ids))
    assert [transcript.statuses()[i] for i in ids] == ["success", "fail", "success"]
    outcomes = transcript.complete["outcomes"]
    assert outcomes == {"fail": 1, "skip": 0, "success": 2, "uxsuccess": 0, "xfail": 0}


def test_cancel_sent_with_the_run_is_never_lost_or_a_crash():
    ids = (C + "test_before", C + "test_after")
    for attempt in range(5):
        proc = ServerProcess("e2e_crash", "-t", ".", "-s", "ecrash")
        try:
            proc.send_raw(encode_command(RunTests("r", ids)) + encode_command(Cancel("c")))
            transcript = proc.wait_complete("r", timeout=20)
            complete = transcript.complete
            assert complete["status"] in ("cancelled", "ok"), complete
            assert "crashes" not in complete, (attempt, complete)
            finished = {i for i, s in transcript.statuses().items() if s != "inprogress"}
            assert sorted(finished | set(complete["not_run"])) == sorted(ids), complete
            assert not finished & set(complete["not_run"]), complete
        finally:
            proc.kill()


def test_in_process_not_run_and_sigterm(start_server):
    proc = start_server("e2e_basic", "-t", ".", "-s", "ebasic", "--isolation", "none")
    never = "ebasic.test_fixtures.BrokenClassFixture.test_never_runs"
    transcript = proc.request(RunTests("fx", (never,)))
    assert transcript.complete["not_run"] == [never]
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_a_hung_worker_dies_with_its_server(server):
    from processes import process_stats, wait_gone

    server.send(RunTests("hang", (SLOW + "test_hang",)))
    server.read_until(lambda p: p.status == "inprogress")
    children = [pid for pid, fields in process_stats() if int(fields[1]) == server.proc.pid]
    assert children, "the worker running the test is a child of the server"
    server.proc.kill()
    server.proc.wait()
    alive = wait_gone(children, timeout=10)
    assert not alive, f"workers outlived the server: {alive}"


def test_a_server_whose_client_is_gone_cancels_and_exits(server):
    """Closing the server's stdout (the client died) ends a hung batch and the server."""
    from processes import process_stats

    server.send(RunTests("hang", (SLOW + "test_hang",)))
    server.read_until(lambda p: p.status == "inprogress")
    workers = [pid for pid, fields in process_stats() if int(fields[1]) == server.proc.pid]
    server.proc.stdout.close()  # as when the client is killed: nobody reads any more
    assert server.wait(timeout=10) == 1  # well before the 5 s --timeout plus the hang
    assert "client closed" in server.proc.stderr.read().decode()
    alive = [p for p, f in process_stats() if p in workers and f[0] != "Z"]
    assert not alive, f"workers outlived the server: {alive}"


def test_a_cancelled_worker_killed_in_a_fixture_fails_no_test(start_server):
    """Spec 4.5 item 2: no test was running when the cancel killed the worker."""
    proc = start_server("e2e_cancel_fixture", "-t", ".", "-s", "ecfixture")
    ids = tuple(f"ecfixture.test_waits.WaitsInFixture.test_{n}" for n in "ab")
    proc.send(RunTests("fixture", ids))
    prompt = wait_for_stdin_wanted(proc, None)  # null: a fixture reads, not a test
    assert prompt.files(None, "stdout") == b"fixture waiting\n"
    proc.send(Cancel("stop"))
    transcript = proc.wait_complete("fixture", timeout=30)
    complete = transcript.complete
    assert complete["status"] == "cancelled"
    assert transcript.statuses() == {}
    assert complete["not_run"] == list(ids) and "crashes" not in complete
    assert proc.wait_complete("stop").complete["cancelled"] == "fixture"
