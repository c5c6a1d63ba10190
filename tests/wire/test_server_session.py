"""The pure server session core (wire/serversession.py): every transition, one by one."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from testserver.wire.commands import Cancel, ListTests, Quit, Reload, RunTests, Stdin
from testserver.wire.packets import encode_status
from testserver.wire.serversession import TRANSITIONS, Event, ServerSession, State
from testserver.wire.sessionactions import (
    Action,
    Dispatch,
    Execute,
    Exit,
    ForwardStdin,
    Interrupt,
    Kill,
    ReportCrash,
    Send,
    StartBatch,
)
from testserver.wire.sessionerror import SessionError


def sent(actions: list[Action]) -> list[dict]:
    return [a.body for a in actions if isinstance(a, Send)]


def session_in(state: State) -> ServerSession:
    """A fresh session brought to ``state`` through legal events only."""
    session = ServerSession(timeout=10)
    if state is State.EXECUTING:
        session.receive_command(ListTests("l"), 0)
    elif state is not State.IDLE and state is not State.CLOSED:
        session.receive_command(RunTests("r", ("a", "b")), 0)
        if state is not State.STARTING:
            session.batch_resolved(["a", "b"], [])
        if state is State.CANCELLING:
            session.receive_command(Cancel("c"), 1)
    elif state is State.CLOSED:
        session.receive_end_of_input()
    assert session.state is state
    return session


EVENTS: dict[Event, Callable[[ServerSession], object]] = {
    Event.COMMAND: lambda s: s.receive_command(Stdin("i", b"x"), 1),
    Event.FRAME_ERROR: lambda s: s.receive_frame_error(None, None, "bad-frame", "bad"),
    Event.INPUT_CLOSED: lambda s: s.receive_end_of_input(),
    Event.CHANGES_APPLIED: lambda s: s.changes_applied(3),
    Event.COMMAND_FINISHED: lambda s: s.command_finished(tests=0),
    Event.BATCH_RESOLVED: lambda s: s.batch_resolved(["a"], []),
    Event.TEST_EVENT: lambda s: s.worker_packet(encode_status("a", "inprogress"), 1),
    Event.WORKER_DIED: lambda s: s.worker_died("killed by signal 9 (SIGKILL)", 2),
    Event.UNIT_ENDED: lambda s: s.unit_ended(0),
    Event.BATCH_ENDED: lambda s: s.batch_ended(),
    Event.BATCH_FAILED: lambda s: s.batch_failed("fork failed"),
    Event.INTERRUPT: lambda s: s.interrupt(1),
    Event.TERMINATE: lambda s: s.terminate(1),
    Event.TICK: lambda s: s.tick(100),
}


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("event", list(Event))
def test_the_table_decides_what_is_legal(state: State, event: Event) -> None:
    """Every (state, event) pair: legal ones lead to a listed state, the others raise."""
    session = session_in(state)
    allowed = TRANSITIONS[state].get(event)
    if allowed is None:
        with pytest.raises(SessionError) as info:
            EVENTS[event](session)
        message = str(info.value)
        assert f"'{event.value}'" in message and "role=server" in message
        assert f"state={state.name}" in message
        return
    EVENTS[event](session)
    # The event's own target, or a state reached by settling afterwards (IDLE runs on).
    assert session.state in (allowed or (state,)) + (State.IDLE, State.CLOSED)


def test_every_event_is_in_the_table_of_some_state() -> None:
    assert set(EVENTS) == set(Event)
    assert {e for row in TRANSITIONS.values() for e in row} == set(Event)


# -- queued commands ------------------------------------------------------------------------


def test_queued_commands_run_one_after_another() -> None:
    session = ServerSession()
    assert session.receive_command(RunTests("r", ("a",)), 0) == [StartBatch(RunTests("r", ("a",)))]
    assert session.receive_command(ListTests("l"), 0) == []  # waits for the batch
    assert session.batch_resolved(["a"], []) == [Dispatch(("a",))]
    session.worker_packet(encode_status("a", "inprogress"), 0)
    session.worker_packet(encode_status("a", "success"), 1)
    actions = session.batch_ended()
    assert sent(actions)[0]["status"] == "ok" and sent(actions)[0]["ran"] == 1
    assert actions[-1] == Execute(ListTests("l"))
    assert sent(session.command_finished(tests=4)) == [
        {"id": "l", "command": "list-tests", "status": "ok", "generation": 0, "tests": 4}
    ]
    assert session.state is State.IDLE


def test_reload_without_support_completes_with_not_supported() -> None:
    session = ServerSession(can_reload=False)
    (body,) = sent(session.receive_command(Reload("x"), 0))
    assert (body["status"], body["code"]) == ("error", "not-supported")


def test_generation_stamps_follow_applied_changes() -> None:
    session = ServerSession(generation=4)
    session.receive_command(Reload("x"), 0)
    session.changes_applied(5)
    assert sent(session.command_finished())[0]["generation"] == 5
    assert session.receive_frame_error("f", None, "bad-name", "no")[0].body["generation"] == 5


def test_an_empty_batch_completes_at_once() -> None:
    session = ServerSession()
    session.receive_command(RunTests("r", ("nope",)), 0)
    (body,) = sent(session.batch_resolved([], ["nope"]))
    assert (body["status"], body["unknown"], body["not_run"]) == ("incomplete", ["nope"], [])


def test_a_crash_sends_the_rest_to_a_fresh_worker() -> None:
    session = session_in(State.RUNNING)
    session.test_started("a", 0)
    actions = session.worker_died("killed by signal 11 (SIGSEGV)", 1)
    assert isinstance(actions[0], ReportCrash) and actions[0].crash.victim == "a"
    assert actions[1] == Dispatch(("b",))
    session.test_started("b", 2)
    session.test_finished("b", "success")
    (body,) = sent(session.batch_ended())
    assert body["status"] == "ok" and body["crashes"] == ["a: killed by signal 11 (SIGSEGV)"]
    assert body["outcomes"]["fail"] == 1 and body["ran"] == 2


def test_a_batch_the_server_cannot_go_on_with_is_an_internal_error() -> None:
    session = session_in(State.RUNNING)
    (body,) = sent(session.batch_failed("cannot fork: out of memory"))
    assert (body["status"], body["code"], body["not_run"]) == (
        "error",
        "internal-error",
        ["a", "b"],
    )


# -- immediate commands ---------------------------------------------------------------------


def test_stdin_reaches_a_running_batch_only() -> None:
    idle = ServerSession()
    (body,) = sent(idle.receive_command(Stdin("i", b"x"), 0))
    assert (body["status"], body["code"]) == ("error", "not-running")
    running = session_in(State.RUNNING)
    actions = running.receive_command(Stdin("j", b"abc"), 0)
    assert actions[0] == ForwardStdin(b"abc") and sent(actions)[0]["bytes"] == 3


def test_cancel_with_nothing_running_completes_with_null() -> None:
    (body,) = sent(ServerSession().receive_command(Cancel("c"), 0))
    assert body["cancelled"] is None and body["message"] == "nothing was running"


def test_cancel_interrupts_then_kills_after_the_grace_period() -> None:
    session = session_in(State.RUNNING)
    assert session.receive_command(Cancel("c1"), 10) == [Interrupt()]
    assert session.receive_command(Cancel("c2"), 11) == []  # once is enough
    assert session.deadline() == 12
    assert session.tick(11.9) == []
    assert session.tick(12) == [Kill()]
    assert session.tick(13) == [] and session.deadline() is None
    actions = session.worker_died("killed by signal 9 (SIGKILL)", 13)
    bodies = sent(actions)
    assert [b["id"] for b in bodies] == ["r", "c1", "c2"]  # the cancels after the batch
    # Spec 4.5: no test was running when the worker died, so no test is failed.
    assert not any(isinstance(action, ReportCrash) for action in actions)
    assert bodies[0]["status"] == "cancelled" and bodies[0]["not_run"] == ["a", "b"]
    assert "crashes" not in bodies[0]
    assert bodies[1]["cancelled"] == bodies[2]["cancelled"] == "r"


def test_a_cancel_before_dispatch_runs_no_test() -> None:
    session = session_in(State.STARTING)
    assert session.receive_command(Cancel("c"), 0) == []
    bodies = sent(session.batch_resolved(["a", "b"], []))
    assert [b["id"] for b in bodies] == ["r", "c"]
    assert bodies[0]["not_run"] == ["a", "b"] and bodies[0]["status"] == "cancelled"


def test_an_in_process_batch_is_interrupted() -> None:
    session = ServerSession(in_process=True)
    session.receive_command(RunTests("r", ("a",)), 0)
    session.batch_resolved(["a"], [])
    assert session.interrupt(1) == [Interrupt()]
    assert session.deadline() is None  # nothing to kill: the batch runs in the server
    (body,) = sent(session.batch_ended())
    assert (body["status"], body["message"]) == ("cancelled", "the batch was interrupted")


def test_a_test_timeout_kills_the_worker() -> None:
    session = session_in(State.RUNNING)  # timeout=10
    session.test_started("a", 5)
    assert session.deadline() == 15 and session.tick(15) == [Kill(0)]
    (crash, dispatch) = session.worker_died("killed by signal 9 (SIGKILL)", 15)
    assert isinstance(crash, ReportCrash) and "timed out after 10 s" in crash.crash.cause
    assert dispatch == Dispatch(("b",))


# -- stopping -------------------------------------------------------------------------------


def test_quit_refuses_the_commands_behind_it() -> None:
    session = session_in(State.RUNNING)
    for command in (Quit("q"), ListTests("l"), Quit("q2")):
        session.receive_command(command, 0)
    actions = session.batch_ended()
    bodies = sent(actions)
    assert [(b["id"], b["status"]) for b in bodies] == [
        ("r", "incomplete"),
        ("q", "ok"),
        ("l", "error"),
        ("q2", "error"),
    ]
    assert {b.get("code") for b in bodies[2:]} == {"quitting"}
    assert actions[-1] == Exit() and session.state is State.CLOSED


def test_sigterm_cancels_the_batch_and_refuses_the_queue() -> None:
    session = session_in(State.RUNNING)
    session.receive_command(ListTests("l"), 0)
    assert session.terminate(0) == [Interrupt()]
    actions = session.worker_died("killed by signal 2 (SIGINT)", 1)
    assert [b["status"] for b in sent(actions)] == ["cancelled", "error"]
    assert actions[-1] == Exit()


def test_end_of_input_finishes_the_queue_then_exits() -> None:
    session = session_in(State.RUNNING)
    session.receive_command(ListTests("l"), 0)
    assert session.receive_end_of_input() == [ForwardStdin(b"")]
    assert isinstance(session.batch_ended()[-1], Execute)
    assert session.command_finished(tests=2)[-1] == Exit()


def test_a_batch_started_after_end_of_input_gets_a_closed_stdin() -> None:
    session = ServerSession()
    session.receive_command(RunTests("r"), 0)
    session.receive_end_of_input()
    assert session.batch_resolved(["a"], []) == [Dispatch(("a",), close_stdin=True)]


def test_a_closed_session_refuses_everything_but_late_input() -> None:
    session = session_in(State.CLOSED)
    for event in set(Event) - {Event.COMMAND, Event.FRAME_ERROR, Event.INPUT_CLOSED}:
        with pytest.raises(SessionError, match="state=CLOSED"):
            EVENTS[event](session)


def test_frames_read_with_the_quit_get_their_completions_after_exit() -> None:
    """The driver read ``quit`` and more frames at once: those still get completions."""
    session = ServerSession()
    assert session.receive_command(Quit("q"), 0)[-1] == Exit()
    late = [
        session.receive_command(ListTests("l"), 0),
        session.receive_command(Stdin("i", b"x"), 0),
        session.receive_command(Cancel("c"), 0),
        session.receive_frame_error("f", None, "bad-frame", "bad"),
        session.receive_command(Quit("q2"), 0),
        session.receive_end_of_input(),
    ]
    assert not any(isinstance(a, Exit) for actions in late for a in actions)
    bodies = [body for actions in late for body in sent(actions)]
    assert [(b["id"], b["status"], b.get("code")) for b in bodies] == [
        ("l", "error", "quitting"),
        ("i", "error", "not-running"),
        ("c", "ok", None),
        ("f", "error", "bad-frame"),
        ("q2", "error", "quitting"),
    ]
    assert session.state is State.CLOSED and not session.queue
