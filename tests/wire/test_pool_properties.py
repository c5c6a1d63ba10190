"""Properties of the server session with several workers (``--jobs N``), for any
interleaving of events.

The simulated driver of ``test_session_properties`` grows a pool: units come from the real
:class:`~testserver.scheduling.scheduler.Scheduler` (with a fixture group), and each of
:data:`JOBS` simulated workers runs its unit one test at a time, dies, or ends its unit
early, in any order, among commands, cancels, signals, time and ``stdin``. Whatever the
interleaving:

1. every command and malformed frame gets exactly one completion, in the order of
   test_session_properties (its accounting check included: one final status or one
   ``not_run`` entry per requested id, and the status rule);
2. a worker holds at most one unit, and is dispatched only when it holds none;
3. a fixture group is never split: the first unit holding any of its tests holds all of
   them, and no two workers hold tests of one group at the same time;
4. ``Kill`` names a worker holding a unit (or every worker), ``ReportCrash`` the worker
   that died, and ``stdin`` bytes go to a worker of the batch.
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_session_properties import QUEUED, Batch, check_accounting, read_id

from testserver.scheduling.scheduler import Scheduler
from testserver.wire.commands import Cancel, ListTests, Quit, Reload, RunTests, Stdin
from testserver.wire.packets import encode_status
from testserver.wire.serversession import ServerSession, State
from testserver.wire.sessionactions import (
    Action,
    Dispatch,
    Execute,
    Exit,
    ForwardStdin,
    Kill,
    ReportCrash,
    Send,
    StartBatch,
)

JOBS = 3
KNOWN = ("a", "b", "c", "d", "e", "f")
GROUPS = {"b": "class:B", "c": "class:B", "d": "class:B"}
"""b, c and d share a setUpClass: they must stay in one unit."""
DURATIONS = {"a": 0.5, "e": 2.0}


def scheduler(ids: list[str], workers: int) -> Scheduler:
    return Scheduler(ids, workers=workers, group_of=GROUPS, durations=DURATIONS)


commands = st.tuples(
    st.just("command"),
    st.sampled_from(["run-tests", "run-tests", "list-tests", "reload", "quit", "stdin", "cancel"]),
    st.lists(st.sampled_from((*KNOWN, "zz")), max_size=8),
)
worker_ops = st.tuples(
    st.just("worker"),
    st.integers(0, JOBS - 1),
    st.sampled_from(["step", "step", "step", "step", "die", "end"]),
    st.sampled_from(["success", "fail", "skip"]),
)
other_ops = st.tuples(
    st.sampled_from(["frame-error", "input-closed", "interrupt", "terminate", "resolve", "finish"])
)
time_ops = st.tuples(st.just("time"), st.floats(0, 3))
operations = st.lists(st.one_of(commands, worker_ops, other_ops, time_ops), max_size=60)


@dataclass
class PoolDriver:
    """A serve loop without I/O, with a pool of simulated workers."""

    session: ServerSession = field(
        default_factory=lambda: ServerSession(timeout=5, jobs=JOBS, units=scheduler)
    )
    now: float = 0.0
    ids: Any = field(default_factory=lambda: itertools.count())
    read: list[Any] = field(default_factory=list)
    completions: list[dict[str, Any]] = field(default_factory=list)
    batches: dict[str, Batch] = field(default_factory=dict)
    batch: Batch | None = None
    starting: RunTests | None = None
    executing: bool = False
    units: dict[int, list[str]] = field(default_factory=dict)
    """Worker -> the tests of its unit not started yet."""
    current: dict[int, str] = field(default_factory=dict)
    held: dict[int, set[str]] = field(default_factory=dict)
    """Worker -> the fixture groups its unit holds."""
    seen_groups: set[str] = field(default_factory=set)
    exited: bool = False

    def reading(self) -> bool:
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
            elif isinstance(action, Dispatch):
                self.dispatch(action)
            elif isinstance(action, ReportCrash):
                assert self.batch is not None and action.worker not in self.units
                self.batch.finals[action.crash.victim] += 1
            elif isinstance(action, Kill):
                assert action.worker is None or action.worker in self.units
            elif isinstance(action, ForwardStdin):
                assert action.worker is None or 0 <= action.worker < JOBS
            elif isinstance(action, Exit):
                self.exited = True
        if self.batch is not None and not self.session.batch_running:
            self.batch = None
            assert not self.units, "the batch completed while a worker held a unit"
            self.current.clear()
            self.seen_groups.clear()

    def dispatch(self, action: Dispatch) -> None:
        worker = action.worker
        assert worker not in self.units, f"worker-{worker} was given a second unit"
        groups = {GROUPS[i] for i in action.test_ids if i in GROUPS}
        for group in groups:
            others = [w for w, held in self.held.items() if group in held]
            assert not others, f"{group} split between workers {others} and {worker}"
            if group not in self.seen_groups:
                assert self.batch is not None
                requested = list(self.batch.command.test_ids) or list(KNOWN)
                members = sorted(i for i in requested if GROUPS.get(i) == group)
                assert sorted(i for i in action.test_ids if GROUPS.get(i) == group) == members
        self.seen_groups |= groups
        self.units[worker] = list(action.test_ids)
        self.held[worker] = groups
        self.current.pop(worker, None)

    def release(self, worker: int) -> None:
        self.units.pop(worker, None)
        self.held.pop(worker, None)
        self.current.pop(worker, None)

    def command(self, name: str, test_ids: list[str]) -> None:
        command_id = f"k{next(self.ids)}"
        types = {"list-tests": ListTests, "reload": Reload, "quit": Quit, "cancel": Cancel}
        if name == "run-tests":
            command = RunTests(command_id, tuple(test_ids))
        elif name == "stdin":
            command = Stdin(command_id, b"x")
        else:
            command = types[name](command_id)
        if name == "cancel" and self.batch is not None:
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
        requested = list(command.test_ids) or list(KNOWN)
        found = [i for i in requested if i in KNOWN]
        self.act(self.session.batch_resolved(found, [i for i in requested if i not in KNOWN]))

    def worker_step(self, worker: int, op: str, status: str) -> None:
        if worker not in self.units:
            return
        if op == "die":
            self.release(worker)
            self.act(self.session.worker_died("killed by signal 9 (SIGKILL)", self.now, worker))
        elif op == "end" or (worker not in self.current and not self.units[worker]):
            self.release(worker)
            self.act(self.session.unit_ended(worker))
        elif worker not in self.current:
            self.current[worker] = self.units[worker].pop(0)
            packet = encode_status(self.current[worker], "inprogress")
            self.session.worker_packet(packet, self.now, worker)
        else:
            assert self.batch is not None
            test_id = self.current.pop(worker)
            self.session.worker_packet(encode_status(test_id, status), self.now, worker)
            self.batch.finals[test_id] += 1

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
            self.worker_step(op[1], op[2], op[3])

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
                busy = sorted(self.units)
                assert busy, f"the session waits ({self.session.state}) but no worker works"
                self.worker_step(busy[step % len(busy)], "step", "success")
        raise AssertionError("the session did not finish")


@settings(max_examples=400, deadline=None)
@given(operations)
def test_a_pool_completes_every_command_once_and_never_splits_a_group(ops: list[tuple]) -> None:
    driver = PoolDriver()
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
            check_accounting(driver, body, KNOWN)
        if body["command"] == "cancel" and body["cancelled"] is not None:
            assert position[body["cancelled"]] < position[body["id"]]


def test_units_spread_over_the_workers_and_the_batch_ends_with_the_last() -> None:
    session = ServerSession(jobs=JOBS, units=scheduler)
    session.receive_command(RunTests("r", KNOWN), 0)
    dispatches = session.batch_resolved(list(KNOWN), [])
    assert [d.worker for d in dispatches] == [0, 1, 2]  # type: ignore[union-attr]
    assert all(isinstance(d, Dispatch) for d in dispatches)
    assert session.state is State.RUNNING
    outstanding = {d.worker: d for d in dispatches}  # type: ignore[union-attr]
    while outstanding:
        worker = min(outstanding)
        for test_id in outstanding.pop(worker).test_ids:
            session.worker_packet(encode_status(test_id, "inprogress"), 1, worker)
            session.worker_packet(encode_status(test_id, "success"), 1, worker)
        for action in session.unit_ended(worker):
            if isinstance(action, Dispatch):
                outstanding[action.worker] = action
            else:
                assert isinstance(action, Send) and not outstanding
                assert action.body["status"] == "ok" and action.body["ran"] == len(KNOWN)
    assert session.state is State.IDLE
