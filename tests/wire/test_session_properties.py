"""Properties of the server session core, for any interleaving of events.

A small simulated driver plays the serve loop: it feeds commands, malformed frames, signals,
time, and a simulated worker (tests starting and ending, deaths, early ends) to a
:class:`ServerSession`, carries out the actions it gets back, and then closes the input and
lets everything finish. Whatever the interleaving:

1. every command and every malformed frame gets exactly one completion, frames read after
   a ``quit``, a SIGTERM or ``Exit`` included, and the session ends ``CLOSED`` with one
   ``Exit``;
2. queued commands complete in the order they were read; a cancel's completion names the
   batch it cancelled and comes after that batch's completion;
3. every requested id ends with exactly one final status or one ``not_run`` entry per
   request, ``outcomes`` add up to ``ran``, and ``status`` follows the rule (``cancelled``
   if a cancel or signal reached the batch, else ``incomplete`` if ``not_run`` or
   ``unknown`` is not empty, else ``ok``);
4. an event the transition table does not allow raises :class:`SessionError`, and an event
   it allows does not.
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_server_session import EVENTS

from testserver.wire.commands import Cancel, ListTests, Quit, Reload, RunTests, Stdin
from testserver.wire.packets import encode_status
from testserver.wire.serversession import TRANSITIONS, Event, ServerSession, State
from testserver.wire.sessionactions import (
    Action,
    Dispatch,
    Execute,
    Exit,
    Kill,
    ReportCrash,
    Send,
    StartBatch,
)
from testserver.wire.sessionerror import SessionError

KNOWN = ("a", "b", "c")
QUEUED = {"run-tests", "list-tests", "reload", "quit"}

commands = st.tuples(
    st.just("command"),
    st.sampled_from(["run-tests", "list-tests", "reload", "quit", "stdin", "cancel"]),
    st.lists(st.sampled_from((*KNOWN, "zz")), max_size=4),
)
worker_ops = st.tuples(
    st.just("worker"),
    st.sampled_from(["step", "step", "step", "die", "end"]),
    st.sampled_from(["success", "fail", "skip", "xfail", "uxsuccess"]),
)
other_ops = st.tuples(
    st.sampled_from(["frame-error", "input-closed", "interrupt", "terminate", "resolve", "finish"])
)
time_ops = st.tuples(st.just("time"), st.floats(0, 3))
operations = st.lists(st.one_of(commands, worker_ops, other_ops, time_ops), max_size=40)


@dataclass
class Batch:
    command: RunTests
    finals: collections.Counter[str] = field(default_factory=collections.Counter)
    stopped: bool = False
    """A cancel, SIGINT or SIGTERM reached the batch."""


@dataclass
class Driver:
    """A serve loop without I/O: a simulated worker and a record of what was sent."""

    session: ServerSession = field(default_factory=lambda: ServerSession(timeout=5))
    now: float = 0.0
    ids: Any = field(default_factory=lambda: itertools.count())
    read: list[Any] = field(default_factory=list)
    completions: list[dict[str, Any]] = field(default_factory=list)
    batches: dict[str, Batch] = field(default_factory=dict)
    batch: Batch | None = None
    starting: RunTests | None = None
    executing: bool = False
    worker: list[str] | None = None
    current: str | None = None
    exited: bool = False
    known: tuple[str, ...] = KNOWN

    def reading(self) -> bool:
        """Frames can come until the input closes: after a ``quit``, a SIGTERM or even
        ``Exit`` too (the real driver reads what came in the same read), as late input."""
        return not self.session.input_closed

    def act(self, actions: list[Action]) -> None:
        for action in actions:
            assert not self.exited or isinstance(action, Send), f"{action} after Exit"
            if isinstance(action, Send):
                self.completions.append(action.body)
            elif isinstance(action, Execute):
                self.executing = True
            elif isinstance(action, StartBatch):
                self.starting = action.command
                self.batch = self.batches[action.command.id] = Batch(action.command)
            elif isinstance(action, Exit):
                self.exited = True
            else:
                self.worker_action(action)
        if self.batch is not None and not self.session.batch_running:
            self.batch_over()

    def worker_action(self, action: Action) -> None:
        """Carry out an action for the simulated worker."""
        if isinstance(action, Dispatch):
            self.worker, self.current = list(action.test_ids), None
        elif isinstance(action, ReportCrash):
            assert self.batch is not None
            self.batch.finals[action.crash.victim] += 1
            self.worker, self.current = None, None
        elif isinstance(action, Kill):
            assert self.worker is not None

    def batch_over(self) -> None:
        """The batch completed."""
        self.batch = self.worker = self.current = None

    def command(self, name: str, test_ids: list[str]) -> None:
        command_id = f"k{next(self.ids)}"
        types = {"list-tests": ListTests, "reload": Reload, "quit": Quit, "cancel": Cancel}
        if name == "run-tests":
            command = RunTests(command_id, tuple(test_ids))
        elif name == "stdin":
            command = Stdin(command_id, b"x")
        else:
            command = types[name](command_id)
        if name in ("cancel",) and self.batch is not None:
            self.batch.stopped = True
        self.read.append(command)
        self.act(self.session.receive_command(command, self.now))

    def signal(self, terminate: bool) -> None:
        if self.batch is not None:
            self.batch.stopped = True
        method = self.session.terminate if terminate else self.session.interrupt
        self.act(method(self.now))

    def resolve(self) -> None:
        command, self.starting = self.starting, None
        assert command is not None
        requested = list(command.test_ids) or list(self.known)
        found = [i for i in requested if i in self.known]
        unknown = [i for i in requested if i not in self.known]
        self.act(self.session.batch_resolved(found, unknown))

    def worker_step(self, op: str, status: str) -> None:
        if op == "die":
            self.current = None
            self.act(self.session.worker_died("killed by signal 9 (SIGKILL)", self.now))
        elif op == "end" or (self.current is None and not self.worker):
            self.act(self.session.batch_ended())
        elif self.current is None:
            assert self.worker is not None
            self.current = self.worker.pop(0)
            self.session.worker_packet(encode_status(self.current, "inprogress"), self.now)
        else:
            assert self.batch is not None
            self.session.worker_packet(encode_status(self.current, status), self.now)
            self.batch.finals[self.current] += 1
            self.current = None

    def apply(self, op: tuple) -> None:
        kind = op[0]
        if kind == "command" and self.reading():
            self.command(op[1], op[2])
        elif kind == "frame-error" and self.reading():
            self.read.append(f"f{next(self.ids)}")
            self.act(self.session.receive_frame_error(self.read[-1], None, "bad-frame", "x"))
        elif kind == "input-closed" and self.reading():
            self.act(self.session.receive_end_of_input())
        elif kind in ("interrupt", "terminate") and not self.exited:
            self.signal(kind == "terminate")
        elif kind == "resolve" and self.starting is not None:
            self.resolve()
        elif kind == "finish" and self.executing:
            self.executing = False
            self.act(self.session.command_finished())
        elif kind == "time" and not self.exited:
            self.now += op[1]
            self.act(self.session.tick(self.now))
        elif kind == "worker":
            self.worker_op(op)

    def worker_op(self, op: tuple) -> None:
        """A step of the simulated worker: ``("worker", what, status)``."""
        if self.worker is not None:
            self.worker_step(op[1], op[2])

    def idle_step(self, step: int) -> None:
        """While finishing, nothing to resolve or execute: the worker goes on."""
        self.worker_step("step", "success")

    def finish(self) -> None:
        """Close the input and let every command run to its end."""
        if self.reading():
            self.act(self.session.receive_end_of_input())
        for step in range(3000):
            if self.exited:
                return
            if self.starting is not None:
                self.resolve()
            elif self.executing:
                self.apply(("finish",))
            else:
                self.idle_step(step)
        raise AssertionError("the session did not finish")


def read_id(item: Any) -> str:
    return item if isinstance(item, str) else item.id


def check_accounting(driver: Driver, body: dict[str, Any]) -> None:
    batch = driver.batches[body["id"]]
    known = driver.known
    requested = list(batch.command.test_ids) or list(known)
    found = [i for i in requested if i in known]
    assert body["unknown"] == [i for i in requested if i not in known]
    for test_id in set(found):
        ended = batch.finals[test_id] + body["not_run"].count(test_id)
        assert ended == found.count(test_id), (test_id, body)
    assert sum(body["outcomes"].values()) == body["ran"]
    if batch.stopped:
        assert body["status"] == "cancelled"
    elif body["not_run"] or body["unknown"]:
        assert body["status"] == "incomplete"
    else:
        assert body["status"] == "ok"


@settings(max_examples=400, deadline=None)
@given(operations)
def test_every_command_gets_exactly_one_completion(ops: list[tuple]) -> None:
    check_session(Driver(), ops)


def check_session(driver: Driver, ops: list[tuple]) -> None:
    """Play ``ops``, finish, and check properties 1 to 3 of the module docstring."""
    for op in ops:
        driver.apply(op)
    driver.finish()
    assert driver.session.state is State.CLOSED
    completed = collections.Counter(body["id"] for body in driver.completions)
    assert completed == collections.Counter(read_id(item) for item in driver.read)
    order = [b["id"] for b in driver.completions if b["command"] in QUEUED]
    assert order == [c.id for c in driver.read if getattr(c, "name", None) in QUEUED]
    position = {body["id"]: n for n, body in enumerate(driver.completions)}
    for body in driver.completions:
        if body["command"] == "run-tests" and body.get("code") != "quitting":
            check_accounting(driver, body)
        if body["command"] == "cancel" and body["cancelled"] is not None:
            assert position[body["cancelled"]] < position[body["id"]]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(Event)), max_size=30))
def test_illegal_steps_raise_and_legal_ones_do_not(events: list[Event]) -> None:
    session = ServerSession(timeout=10)
    for event in events:
        state = session.state
        legal = event in TRANSITIONS[state]
        try:
            EVENTS[event](session)
        except SessionError as error:
            assert not legal, f"{event} refused in {state}: {error}"
            assert error.event is event and error.state is state
        else:
            assert legal, f"{event} accepted in {state}"
