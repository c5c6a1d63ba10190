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
- ``RUNNING``: the batch runs in its workers (``Dispatch``).
- ``CANCELLING``: the batch was told to stop (``Interrupt``); ``Kill`` after the grace period.
- ``CLOSED``: the session is over (``Exit`` was returned). Only late input is legal: frames
  the driver had read before it saw ``Exit`` (in the same read as the ``quit``, or as the
  signal) still get their completions, queued commands the ``quitting`` error.

:data:`TRANSITIONS` maps (state, event) to the states the event may lead to; when several are
listed the event's arguments decide (e.g. a worker death leads back to ``RUNNING`` when tests
remain for a fresh worker). After every event the session *settles* (h11's state-triggered
transitions): in ``IDLE`` it starts the next queued command, or, when stopping, refuses the
queue with ``quitting`` and exits.

Workers. A batch runs in ``jobs`` workers, numbered from 0. Their units come from a
:class:`~testserver.wire.units.UnitSource` (with one worker, :class:`~.units.WholeBatch`: the
whole batch is one unit). Every worker event names its worker: ``worker_packet``,
``unit_ended`` (it finished its unit: it gets the next one, or idles), ``worker_died`` (the
test it ran fails, the rest of its unit goes back to the source and the replacement gets
work at once). Each worker runs one test at a time (its :class:`~.batchtracking.Lane`).
The batch completes when no worker holds a unit. ``Interrupt`` reaches every worker;
``Kill`` names the worker whose test timed out (``None``: all, after a cancel's grace);
``stdin`` bytes go to the worker whose test last announced it waits for input
(``testserver.stdin-wanted``), or worker 0 before any did.
"""

from __future__ import annotations

import collections
from enum import Enum
from typing import Any

from testserver.wire.batchtracking import BatchTracker
from testserver.wire.commands import Cancel, Command, ListTests, Quit, Reload, RunTests, Stdin
from testserver.wire.control import STDIN_WANTED, completion_body, decode_control, frame_error_body
from testserver.wire.packets import decode_packets
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
from testserver.wire.units import UnitSource, UnitSourceFactory, WholeBatch

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
    UNIT_ENDED = "unit ended"
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
        E.UNIT_ENDED: (S.RUNNING, S.IDLE),
        E.BATCH_ENDED: (S.IDLE,),
        E.BATCH_FAILED: (S.IDLE,),
    },
    S.CANCELLING: {
        **_ALWAYS,
        E.INTERRUPT: (),
        E.TEST_EVENT: (),
        E.WORKER_DIED: (S.CANCELLING, S.IDLE),
        E.UNIT_ENDED: (S.CANCELLING, S.IDLE),
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
    ``jobs``: workers per batch; ``units`` builds a batch's :class:`~.units.UnitSource`
    (default :class:`~.units.WholeBatch`, for one worker).
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
        jobs: int = 1,
        units: UnitSourceFactory = WholeBatch,
    ) -> None:
        if not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"jobs must be a positive integer, not {jobs!r}")
        if in_process and jobs != 1:
            raise ValueError("a batch run in the server process (isolation none) has one worker")
        self.jobs = jobs
        self.units = units
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
        self.source: UnitSource | None = None
        self.busy: set[int] = set()
        """The workers holding a unit of the batch."""
        self.stdin_worker = 0
        """Where ``stdin`` bytes go: the worker whose test last said it waits for input."""
        self.cancelled = False
        self.pending_cancels: list[Cancel] = []
        self.cancel_deadline: float | None = None
        self.killed = False
        """The cancel's grace period passed: every worker was killed."""
        self.timed_out: set[int] = set()
        """Workers killed because their test ran past the timeout."""
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
        jobs = 1 if self.in_process else self.jobs
        self.source = WholeBatch(test_ids) if jobs == 1 else self.units(list(test_ids), jobs)
        self.busy.clear()
        self.stdin_worker = 0
        actions: list[Action] = []
        for worker in range(jobs):
            actions += self._next_unit(worker)
        return self._settle(actions, Event.BATCH_RESOLVED, S.RUNNING)

    def worker_packet(self, raw: bytes, now: float, worker: int = 0) -> Kind:
        """``worker`` wrote packet ``raw``; return its :class:`~.splitting.Kind`."""
        self._check(Event.TEST_EVENT)
        assert self.tracker is not None
        kind = self.tracker.feed(raw, now, worker)
        if kind is Kind.GLOBAL_FILE and self.jobs > 1 and _wants_stdin(raw):
            self.stdin_worker = worker
        return kind

    def test_started(self, test_id: str, now: float, worker: int = 0) -> None:
        """A runnable test started (for drivers that do not pass packets)."""
        self._check(Event.TEST_EVENT)
        assert self.tracker is not None
        self.tracker.started(test_id, now, worker)

    def test_finished(self, test_id: str, status: str, worker: int = 0) -> None:
        """A runnable test got its final status (for drivers that do not pass packets)."""
        self._check(Event.TEST_EVENT)
        assert self.tracker is not None
        self.tracker.ended(test_id, status, worker)

    def worker_died(self, exit_description: str, now: float, worker: int = 0) -> list[Action]:
        """``worker`` ended before its unit did (``exit_description``: how, in words): its
        test fails, the rest of its unit goes to the other workers or its replacement."""
        self._check(Event.WORKER_DIED)
        tracker, source = self.tracker, self.source
        assert tracker is not None and source is not None
        self._release(worker, Event.WORKER_DIED)
        crash = tracker.worker_died(exit_description, now, cancelled=self.cancelled, worker=worker)
        actions: list[Action] = [] if crash is None else [ReportCrash(crash, worker)]
        if not self.cancelled:
            reason = f"{_name(worker)} {exit_description}"
            lost = source.worker_lost(worker, tracker.passed(worker), reason=reason, replacing=True)
            for unit in lost:
                actions.append(self._dispatch(_worker_of(unit), unit.ids))
            actions += self._next_unit(worker)
        return self._settle(actions + self._maybe_end(), Event.WORKER_DIED, self._target())

    def worker_lost(self, reason: str, now: float, worker: int) -> list[Action]:
        """``worker`` (a remote) is gone before its unit completed (``reason``: why, in
        words), through no test's fault: no test fails, the tests of its unit without a
        result go to the other workers (or are not run, when none is left), and it gets no
        more units in this batch. The completion lists it in ``lost``."""
        self._check(Event.WORKER_DIED)
        tracker, source = self.tracker, self.source
        assert tracker is not None and source is not None
        self._release(worker, Event.WORKER_DIED)
        name = _name(worker)
        done = tracker.worker_lost(worker, name, reason)
        actions: list[Action] = []
        if not self.cancelled:
            why = f"{name} was lost ({reason})"
            for unit in source.worker_lost(worker, done, reason=why, replacing=False):
                actions.append(self._dispatch(_worker_of(unit), unit.ids))
        return self._settle(actions + self._maybe_end(), Event.WORKER_DIED, self._target())

    def unit_ended(self, worker: int = 0) -> list[Action]:
        """``worker`` ran its unit to its end: it gets the next unit, or the batch ends."""
        self._check(Event.UNIT_ENDED)
        assert self.source is not None
        self._release(worker, Event.UNIT_ENDED)
        self.source.unit_finished(worker)
        actions = [] if self.cancelled else self._next_unit(worker)
        return self._settle(actions + self._maybe_end(), Event.UNIT_ENDED, self._target())

    def batch_ended(self) -> list[Action]:
        """The batch ran to its end (the in-process run returned), whatever workers hold."""
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
        """Time passed: kill the workers past the cancel grace period or their test timeout."""
        self._check(Event.TICK)
        if self.killed or self.state not in (State.RUNNING, State.CANCELLING):
            return []
        if self.cancel_deadline is not None and now >= self.cancel_deadline:
            self.killed, self.cancel_deadline = True, None
            return [Kill()]
        assert self.tracker is not None
        late = [w for w in self.tracker.expired(now) if w in self.busy and w not in self.timed_out]
        self.timed_out.update(late)
        return [Kill(worker) for worker in late]

    def deadline(self) -> float | None:
        """When :meth:`tick` must be called next, if anything waits on time."""
        if self.killed or self.state not in (State.RUNNING, State.CANCELLING):
            return None
        assert self.tracker is not None
        times = [self.cancel_deadline]
        times += [self.tracker.deadline(w) for w in self.busy if w not in self.timed_out]
        known = [t for t in times if t is not None]
        return min(known) if known else None

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
        worker = self.stdin_worker if command.data and self.jobs > 1 else None
        forward = ForwardStdin(command.data, worker)
        return [forward, self._complete(command, bytes=len(command.data))]

    def _dispatch(self, worker: int, test_ids: tuple[str, ...]) -> Dispatch:
        """Hand ``test_ids`` to ``worker``: its lane follows them."""
        assert self.tracker is not None
        self.tracker.assign(worker, test_ids)
        self.busy.add(worker)
        return Dispatch(tuple(test_ids), close_stdin=self.input_closed, worker=worker)

    def _next_unit(self, worker: int) -> list[Action]:
        """``worker`` is free: its next unit, if the source has one."""
        assert self.source is not None
        unit = self.source.worker_ready(worker)
        return [] if unit is None else [self._dispatch(worker, unit.ids)]

    def _release(self, worker: int, event: Event) -> None:
        """``worker`` no longer holds a unit (an event from a worker without one is a bug)."""
        if worker not in self.busy:
            raise SessionError(event, self.state, self.role, f"worker-{worker} holds no unit")
        self.busy.discard(worker)
        self.timed_out.discard(worker)

    def _maybe_end(self) -> list[Action]:
        """The batch's completion once no worker holds a unit."""
        if self.busy:
            return []
        assert self.source is not None
        self.source.abandon("the batch ended")  # nothing is left unless it was cancelled
        return self._end_batch()

    def _target(self) -> State:
        if self.current is None or not isinstance(self.current, RunTests):
            return State.IDLE
        return State.CANCELLING if self.cancelled else State.RUNNING

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
        self.current = self.tracker = self.source = None
        self.busy.clear()
        self.timed_out.clear()
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


def _wants_stdin(raw: bytes) -> bool:
    """Whether ``raw`` is a ``testserver.stdin-wanted`` event (a test waits for input)."""
    control = decode_control(decode_packets(raw)[0])
    return control is not None and control[0] == STDIN_WANTED


def _name(worker: int) -> str:
    return f"worker-{worker}"


def _worker_of(unit: object) -> int:
    """The worker a unit handed out by ``worker_lost`` is for."""
    worker = getattr(unit, "worker", None)
    if not isinstance(worker, int):
        raise TypeError(f"a unit handed to an idle worker must name it, not {worker!r}")
    return worker
