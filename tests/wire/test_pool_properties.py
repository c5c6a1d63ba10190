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

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st
from test_session_properties import Driver, check_session

from testserver.scheduling.scheduler import Scheduler
from testserver.wire.commands import Cancel, RunTests, Stdin
from testserver.wire.packets import encode_status
from testserver.wire.serversession import ServerSession, State
from testserver.wire.sessionactions import (
    Action,
    Dispatch,
    ForwardStdin,
    Kill,
    ReportCrash,
    Send,
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
class PoolDriver(Driver):
    """The serve loop of test_session_properties with a pool of simulated workers."""

    session: ServerSession = field(
        default_factory=lambda: ServerSession(timeout=5, jobs=JOBS, units=scheduler)
    )
    known: tuple[str, ...] = KNOWN
    units: dict[int, list[str]] = field(default_factory=dict)
    """Worker -> the tests of its unit not started yet."""
    running: dict[int, str] = field(default_factory=dict)
    held: dict[int, set[str]] = field(default_factory=dict)
    """Worker -> the fixture groups its unit holds."""
    seen_groups: set[str] = field(default_factory=set)

    def worker_action(self, action: Action) -> None:
        if isinstance(action, Dispatch):
            self.dispatch(action)
        elif isinstance(action, ReportCrash):
            assert self.batch is not None and action.worker not in self.units
            self.batch.finals[action.crash.victim] += 1
        elif isinstance(action, Kill):
            assert action.worker is None or action.worker in self.units
        elif isinstance(action, ForwardStdin):
            assert action.worker is None or 0 <= action.worker < JOBS

    def batch_over(self) -> None:
        assert not self.units, "the batch completed while a worker held a unit"
        self.batch = None
        self.running.clear()
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
        self.running.pop(worker, None)

    def release(self, worker: int) -> None:
        self.units.pop(worker, None)
        self.held.pop(worker, None)
        self.running.pop(worker, None)

    def worker_op(self, op: tuple) -> None:
        self.pool_step(op[1], op[2], op[3])

    def idle_step(self, step: int) -> None:
        busy = sorted(self.units)
        assert busy, f"the session waits ({self.session.state}) but no worker works"
        self.pool_step(busy[step % len(busy)], "step", "success")

    def pool_step(self, worker: int, op: str, status: str) -> None:
        if worker not in self.units:
            return
        if op == "die":
            self.release(worker)
            self.act(self.session.worker_died("killed by signal 9 (SIGKILL)", self.now, worker))
        elif op == "end" or (worker not in self.running and not self.units[worker]):
            self.release(worker)
            self.act(self.session.unit_ended(worker))
        elif worker not in self.running:
            self.running[worker] = self.units[worker].pop(0)
            packet = encode_status(self.running[worker], "inprogress")
            self.session.worker_packet(packet, self.now, worker)
        else:
            assert self.batch is not None
            test_id = self.running.pop(worker)
            self.session.worker_packet(encode_status(test_id, status), self.now, worker)
            self.batch.finals[test_id] += 1


@settings(max_examples=400, deadline=None)
@given(operations)
def test_a_pool_completes_every_command_once_and_never_splits_a_group(ops: list[tuple]) -> None:
    check_session(PoolDriver(), ops)


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


def in_order(ids: list[str], workers: int) -> Scheduler:
    """Units in the requested order: no durations known."""
    return Scheduler(ids, workers=workers, group_of=GROUPS)


def pool_running(ids: tuple[str, ...] = KNOWN, *, timeout: float | None = None):
    """A session with a batch of ``ids`` dispatched to its workers; their Dispatches."""
    session = ServerSession(jobs=JOBS, units=in_order, timeout=timeout)
    session.receive_command(RunTests("r", ids), 0)
    dispatches = {a.worker: a for a in session.batch_resolved(list(ids), [])}  # type: ignore[union-attr]
    return session, dispatches


def test_a_dead_workers_rest_goes_to_its_replacement() -> None:
    session, dispatches = pool_running(("b", "c", "d", "a", "e", "f"))
    worker = 0
    assert dispatches[worker].test_ids == ("b", "c", "d")  # the fixture group, whole
    session.worker_packet(encode_status("b", "inprogress"), 1, worker)
    actions = session.worker_died("killed by signal 11 (SIGSEGV)", 2, worker)
    crash, again = actions
    assert isinstance(crash, ReportCrash) and (crash.worker, crash.crash.victim) == (worker, "b")
    assert again == Dispatch(("c", "d"), worker=worker)


def test_a_timeout_kills_only_the_worker_past_it() -> None:
    session, _ = pool_running(timeout=5)
    session.worker_packet(encode_status("a", "inprogress"), 1, 0)
    session.worker_packet(encode_status("b", "inprogress"), 3, 1)
    assert session.deadline() == 6
    assert session.tick(6) == [Kill(0)]
    assert session.deadline() == 8 and session.tick(7) == []
    assert session.tick(8) == [Kill(1)]


def test_stdin_goes_to_the_worker_whose_test_waits() -> None:
    from testserver.wire.control import STDIN_WANTED, encode_control

    session, _ = pool_running()
    (forward, _) = session.receive_command(Stdin("s0", b"early"), 1)
    assert forward == ForwardStdin(b"early", 0)
    session.worker_packet(encode_control(STDIN_WANTED, {"id": "r", "test_id": "b"}), 1, 1)
    (forward, _) = session.receive_command(Stdin("s1", b"y\n"), 1)
    assert forward == ForwardStdin(b"y\n", 1)
    (forward, _) = session.receive_command(Stdin("s2", b""), 1)
    assert forward == ForwardStdin(b"", None)  # end of input: every worker


def test_a_cancel_completes_once_every_worker_has_stopped() -> None:
    from testserver.wire.sessionactions import Interrupt

    session, dispatches = pool_running()
    assert session.receive_command(Cancel("c"), 1) == [Interrupt()]
    assert session.tick(3) == [Kill()]
    workers = sorted(dispatches)
    for worker in workers[:-1]:
        assert session.worker_died("killed by signal 9 (SIGKILL)", 3, worker) == []
        assert session.state is State.CANCELLING
    last = session.unit_ended(workers[-1])
    assert [a.body["id"] for a in last] == ["r", "c"]  # type: ignore[union-attr]
    assert last[0].body["status"] == "cancelled"  # type: ignore[union-attr]
    assert session.state is State.IDLE
