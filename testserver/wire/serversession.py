"""The server's side of the protocol session: command queue, completions, cancel, accounting.

:class:`ServerSession` is the whole rule book of spec 4.1, 4.3-4.5 and 4.7 with no I/O, no
processes and no clock: the driver (the serve loop) tells it what happened by calling one
method per event, passing the time as a number where it matters, and carries out the
:mod:`actions <testserver.wire.sessionactions>` each call returns, in order. A step the
table below does not allow raises :class:`SessionError` naming the event, the state and the
role; it is a bug in the driver, never the peer's fault (bad frames are events too).

States (``State``):

- ``IDLE``: nothing executes; the next queued command starts as soon as there is one.
- ``EXECUTING``: a ``list-tests`` or ``reload`` is being carried out (``Execute``).
- ``STARTING``: a ``run-tests`` left the queue (``StartBatch``); its ids are being resolved.
- ``RUNNING``: the batch runs in a worker (``Dispatch``).
- ``CANCELLING``: the batch was told to stop (``Interrupt``); ``Kill`` after the grace period.
- ``CLOSED``: the session is over (``Exit`` was returned). Only late input is legal: frames
  the driver had read before it saw ``Exit`` (in the same read as the ``quit``, or as the
  signal) still get their completions, queued commands the ``quitting`` error.

:data:`TRANSITIONS` maps (state, event) to the states the event may lead to; when several are
listed the event's arguments decide (e.g. a worker death leads back to ``RUNNING`` when tests
remain for a fresh worker). After every event the session *settles* (h11's state-triggered
transitions): in ``IDLE`` it starts the next queued command, or, when stopping, refuses the
queue with ``quitting`` and exits.
"""

from __future__ import annotations

import collections
from enum import Enum
from typing import Any

from testserver.wire.batchtracking import BatchTracker
from testserver.wire.commands import Cancel, Command, ListTests, Quit, Reload, RunTests, Stdin
from testserver.wire.control import completion_body, frame_error_body
from testserver.wire.sessionactions import (
    CANCEL_GRACE_SECONDS,
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
from testserver.wire.splitting import Kind

QUITTING_MESSAGE = "the server is exiting (quit or SIGTERM came first); command not run"
NOT_RUNNING_MESSAGE = "no run-tests batch is running, so no test is reading stdin"
NO_RELOAD_MESSAGE = "this server was started with --no-reload; restart it to pick up source changes"


class State(Enum):
    """Where the server's session is (see the module docstring)."""

    IDLE = "IDLE"
    EXECUTING = "EXECUTING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    CLOSED = "CLOSED"


class Event(Enum):
    """The kinds of event a driver reports; each is one method (or a family of them)."""

    COMMAND = "command"
    FRAME_ERROR = "frame error"
    INPUT_CLOSED = "input closed"
    CHANGES_APPLIED = "changes applied"
    COMMAND_FINISHED = "command finished"
    BATCH_RESOLVED = "batch resolved"
    TEST_EVENT = "test event"
    WORKER_DIED = "worker died"
    BATCH_ENDED = "batch ended"
    BATCH_FAILED = "batch failed"
    INTERRUPT = "interrupt (SIGINT)"
    TERMINATE = "terminate (SIGTERM)"
    TICK = "tick"


S, E = State, Event
_ALWAYS = {E.COMMAND: (), E.FRAME_ERROR: (), E.INPUT_CLOSED: (), E.TERMINATE: (), E.TICK: ()}
"""Events legal in every open state; ``()`` means "stays in the same state" (filled below)."""

TRANSITIONS: dict[State, dict[Event, tuple[State, ...]]] = {
    S.IDLE: {**_ALWAYS, E.INTERRUPT: ()},
    S.EXECUTING: {
        **_ALWAYS,
        E.INTERRUPT: (),
        E.CHANGES_APPLIED: (),
        E.COMMAND_FINISHED: (S.IDLE,),
    },
    S.STARTING: {
        **_ALWAYS,
        E.INTERRUPT: (),
        E.CHANGES_APPLIED: (),
        E.BATCH_RESOLVED: (S.RUNNING, S.CANCELLING, S.IDLE),
    },
    S.RUNNING: {
        **_ALWAYS,
        E.COMMAND: (S.RUNNING, S.CANCELLING),  # a cancel starts cancelling
        E.TERMINATE: (S.CANCELLING,),
        E.INTERRUPT: (S.CANCELLING,),
        E.TEST_EVENT: (),
        E.WORKER_DIED: (S.RUNNING, S.IDLE),
        E.BATCH_ENDED: (S.IDLE,),
        E.BATCH_FAILED: (S.IDLE,),
    },
    S.CANCELLING: {
        **_ALWAYS,
        E.INTERRUPT: (),
        E.TEST_EVENT: (),
        E.WORKER_DIED: (S.IDLE,),
        E.BATCH_ENDED: (S.IDLE,),
        E.BATCH_FAILED: (S.IDLE,),
    },
    S.CLOSED: {E.COMMAND: (), E.FRAME_ERROR: (), E.INPUT_CLOSED: ()},  # late input only
}
"""(state, event) -> the states it may lead to; ``()``: the state does not change."""


class ServerSession:
    """The protocol session of one server (see the module docstring).

    ``can_reload``: whether ``reload`` is supported. ``in_process``: batches run in the
    server (``--isolation none``), so a signal *interrupts* rather than cancels them.
    ``timeout``: the per-test timeout in seconds (``None`` in process: nothing to kill).
    ``generation``: the first stamp. ``grace``: seconds between ``Interrupt`` and ``Kill``.
    """

    role = "server"

    def __init__(
        self,
        *,
        can_reload: bool = True,
        in_process: bool = False,
        timeout: float | None = None,
        generation: int = 0,
        grace: float = CANCEL_GRACE_SECONDS,
    ) -> None:
        self.can_reload = can_reload
        self.in_process = in_process
        self.timeout = timeout
        self.generation = generation
        self.grace = grace
        self.state = State.IDLE
        self.queue: collections.deque[Command] = collections.deque()
        self.current: Command | None = None
        """The queued command that left the queue and has not completed."""
        self.tracker: BatchTracker | None = None
        self.cancelled = False
        self.pending_cancels: list[Cancel] = []
        self.cancel_deadline: float | None = None
        self.killed = False
        self.stopping = False
        self.input_closed = False

    # -- events from the command channel -------------------------------------------------

    def receive_command(self, command: Command, now: float) -> list[Action]:
        """A well-formed command frame was read."""
        self._check(Event.COMMAND)
        actions: list[Action] = []
        if isinstance(command, Stdin):
            actions += self._stdin(command)
        elif isinstance(command, Cancel):
            actions += self._cancel(command, now)
        else:
            self.queue.append(command)
        return self._settle(actions, Event.COMMAND)

    def receive_frame_error(
        self, command_id: str | None, command_name: str | None, code: str, message: str
    ) -> list[Action]:
        """A malformed frame was read: it gets its error completion at once."""
        self._check(Event.FRAME_ERROR)
        body = frame_error_body(command_id, command_name, code, message, self.generation)
        return self._settle([Send(body)], Event.FRAME_ERROR)

    def receive_end_of_input(self) -> list[Action]:
        """The command channel closed: finish what was read, then exit."""
        self._check(Event.INPUT_CLOSED)
        self.input_closed = True
        actions: list[Action] = []
        if self.state in (State.STARTING, State.RUNNING, State.CANCELLING):
            actions.append(ForwardStdin(b""))  # nobody can answer a test reading stdin now
        return self._settle(actions, Event.INPUT_CLOSED)

    # -- events from the driver's own work -----------------------------------------------

    def changes_applied(self, generation: int) -> list[Action]:
        """Source changes were applied before the current command: stamp ``generation``."""
        self._check(Event.CHANGES_APPLIED)
        self.generation = generation
        return []

    def command_finished(self, **fields: Any) -> list[Action]:
        """The ``Execute``d command is done; ``fields`` go into its completion."""
        self._check(Event.COMMAND_FINISHED)
        command = self.current
        assert command is not None
        self.current = None
        return self._settle([self._complete(command, **fields)], Event.COMMAND_FINISHED, S.IDLE)

    def batch_resolved(self, test_ids: list[str], unknown: list[str]) -> list[Action]:
        """The ``StartBatch``'s ids resolved to ``test_ids`` (with ``unknown`` left over)."""
        self._check(Event.BATCH_RESOLVED)
        self.tracker = BatchTracker(test_ids, unknown=unknown, timeout=self.timeout)
        if self.cancelled or not test_ids:
            return self._settle(self._end_batch(), Event.BATCH_RESOLVED, S.IDLE)
        dispatch = Dispatch(tuple(test_ids), close_stdin=self.input_closed)
        return self._settle([dispatch], Event.BATCH_RESOLVED, S.RUNNING)

    def worker_packet(self, raw: bytes, now: float) -> Kind:
        """The batch wrote packet ``raw``; return its :class:`~.splitting.Kind`."""
        self._check(Event.TEST_EVENT)
        assert self.tracker is not None
        return self.tracker.feed(raw, now)

    def test_started(self, test_id: str, now: float) -> None:
        """A runnable test started (for drivers that do not pass packets)."""
        self._check(Event.TEST_EVENT)
        assert self.tracker is not None
        self.tracker.started(test_id, now)

    def test_finished(self, test_id: str, status: str) -> None:
        """A runnable test got its final status (for drivers that do not pass packets)."""
        self._check(Event.TEST_EVENT)
        assert self.tracker is not None
        self.tracker.ended(test_id, status)

    def worker_died(self, exit_description: str, now: float) -> list[Action]:
        """The worker ended before the batch did (``exit_description``: how, in words)."""
        self._check(Event.WORKER_DIED)
        tracker = self.tracker
        assert tracker is not None
        crash = tracker.worker_died(exit_description, now, cancelled=self.cancelled)
        self.killed = False
        actions: list[Action] = [] if crash is None else [ReportCrash(crash)]
        rest = [] if self.cancelled else tracker.redispatch()
        if rest:
            actions.append(Dispatch(tuple(rest), close_stdin=self.input_closed))
            return self._settle(actions, Event.WORKER_DIED, S.RUNNING)
        return self._settle(actions + self._end_batch(), Event.WORKER_DIED, S.IDLE)

    def batch_ended(self) -> list[Action]:
        """The batch ran to its end (the worker said so, or the in-process run returned)."""
        self._check(Event.BATCH_ENDED)
        return self._settle(self._end_batch(), Event.BATCH_ENDED, S.IDLE)

    def batch_failed(self, message: str) -> list[Action]:
        """The server cannot go on with the batch: complete it with ``internal-error``."""
        self._check(Event.BATCH_FAILED)
        return self._settle(self._end_batch(error=message), Event.BATCH_FAILED, S.IDLE)

    # -- signals and time ----------------------------------------------------------------

    def interrupt(self, now: float) -> list[Action]:
        """SIGINT: cancel the running batch, if any (no completion of its own)."""
        self._check(Event.INTERRUPT)
        return self._settle(self._cancel(None, now), Event.INTERRUPT)

    def terminate(self, now: float) -> list[Action]:
        """SIGTERM: cancel the running batch, refuse the queue, exit."""
        self._check(Event.TERMINATE)
        self.stopping = True
        return self._settle(self._cancel(None, now), Event.TERMINATE)

    def tick(self, now: float) -> list[Action]:
        """Time passed: kill a worker past its cancel grace period or its test timeout."""
        self._check(Event.TICK)
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return []
        self.killed = True
        self.cancel_deadline = None
        return [Kill()]

    def deadline(self) -> float | None:
        """When :meth:`tick` must be called next, if anything waits on time."""
        if self.killed or self.state not in (State.RUNNING, State.CANCELLING):
            return None
        assert self.tracker is not None
        times = [t for t in (self.cancel_deadline, self.tracker.deadline()) if t is not None]
        return min(times) if times else None

    @property
    def batch_running(self) -> bool:
        """Whether immediate commands act on a batch now (spec 4.1.2)."""
        return self.state in (State.STARTING, State.RUNNING, State.CANCELLING)

    # -- internals -----------------------------------------------------------------------

    def _check(self, event: Event) -> None:
        if event not in TRANSITIONS[self.state]:
            raise SessionError(event, self.state, self.role)

    def _move(self, event: Event, target: State) -> None:
        allowed = TRANSITIONS[self.state][event] or (self.state,)
        if target not in allowed:
            raise SessionError(event, self.state, self.role)
        self.state = target

    def _settle(
        self, actions: list[Action], event: Event, target: State | None = None
    ) -> list[Action]:
        """Take the event's transition, then start queued commands or exit while idle."""
        if target is None:
            target = self._implied_target(event)
        self._move(event, target)
        while self.state is State.IDLE:
            if self.stopping:
                actions += self._refuse_queue()
                actions.append(Exit())
                self.state = State.CLOSED
            elif self.queue:
                actions += self._start(self.queue.popleft())
            elif self.input_closed:
                actions.append(Exit())
                self.state = State.CLOSED
            else:
                break
        if self.state is State.CLOSED:  # a late command: refused like the queue was
            actions += self._refuse_queue()
        return actions

    def _implied_target(self, event: Event) -> State:
        """The target of an event whose handler did not choose one."""
        if self.cancelled and self.state is State.RUNNING:
            return State.CANCELLING
        return self.state

    def _start(self, command: Command) -> list[Action]:
        """``command`` leaves the queue."""
        if isinstance(command, Quit):
            self.stopping = True
            return [self._complete(command)]
        if isinstance(command, Reload) and not self.can_reload:
            return [
                self._complete(
                    command, status="error", code="not-supported", message=NO_RELOAD_MESSAGE
                )
            ]
        self.current = command
        if isinstance(command, RunTests):
            self.state = State.STARTING
            self.cancelled, self.killed, self.cancel_deadline = False, False, None
            return [StartBatch(command)]
        assert isinstance(command, ListTests | Reload)
        self.state = State.EXECUTING
        return [Execute(command)]

    def _stdin(self, command: Stdin) -> list[Action]:
        if not self.batch_running:
            return [
                self._complete(
                    command, status="error", code="not-running", message=NOT_RUNNING_MESSAGE
                )
            ]
        return [ForwardStdin(command.data), self._complete(command, bytes=len(command.data))]

    def _cancel(self, command: Cancel | None, now: float) -> list[Action]:
        """Cancel the running batch; ``command``'s completion waits for the batch's."""
        if not self.batch_running:
            if command is None:
                return []
            return [self._complete(command, cancelled=None, message="nothing was running")]
        if command is not None:
            self.pending_cancels.append(command)
        if self.cancelled:
            return []
        self.cancelled = True
        if self.state is State.STARTING:
            return []  # not dispatched yet: batch_resolved ends it without running a test
        if not self.in_process:  # a batch in the server process cannot be killed
            self.cancel_deadline = now + self.grace
        return [Interrupt()]

    def _end_batch(self, *, error: str | None = None) -> list[Action]:
        """The batch's completion, then the completions of the cancels that waited for it."""
        command, tracker = self.current, self.tracker
        assert isinstance(command, RunTests) and tracker is not None
        self.current = self.tracker = None
        interrupted = self.cancelled and self.in_process
        result = tracker.result(
            cancelled=self.cancelled and not interrupted, interrupted=interrupted, error=error
        )
        extra = {"code": "internal-error"} if error is not None else {}
        body = self._complete(
            command, status=result.status, message=result.message, **extra, **result.fields()
        )
        actions: list[Action] = [body]
        actions += [self._complete(c, cancelled=command.id) for c in self.pending_cancels]
        self.pending_cancels.clear()
        self.cancelled, self.killed, self.cancel_deadline = False, False, None
        return actions

    def _refuse_queue(self) -> list[Action]:
        refused = [
            self._complete(c, status="error", code="quitting", message=QUITTING_MESSAGE)
            for c in self.queue
        ]
        self.queue.clear()
        return refused

    def _complete(
        self, command: Command, *, status: str = "ok", message: str | None = None, **fields: Any
    ) -> Send:
        """The ``testserver.complete`` of ``command``, keys in the server's order."""
        return Send(
            completion_body(
                command.id, command.name, self.generation, status=status, message=message, **fields
            )
        )
