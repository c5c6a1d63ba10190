"""``ServerSession.worker_lost``: a remote worker gone through no test's fault.

Pure scenarios on the session core, with the real :class:`Scheduler` (units in the
requested order: no durations, no fixture groups): a lost worker fails no test, the tests
of its unit without a result go to the other workers (or are not run when none is left),
it gets no more units, and the completion says why in ``lost``. Then the pool property of
``test_pool_properties`` with losses among its events: every property there still holds
(one completion per command, one final status or ``not_run`` entry per requested id,
groups whole), and a lost worker is never dispatched again in its batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st
from test_pool_properties import JOBS, PoolDriver, commands, other_ops, time_ops
from test_session_properties import check_session

from testserver.scheduling.scheduler import Scheduler
from testserver.wire.commands import Cancel, RunTests
from testserver.wire.packets import encode_status
from testserver.wire.serversession import ServerSession, State
from testserver.wire.sessionactions import Dispatch, Interrupt, ReportCrash, Send

WHY = "remote 'ssh b1 ...' disconnected: the remote's output ended; COMMAND exited with status 255"


def in_order(ids: list[str], workers: int) -> Scheduler:
    return Scheduler(ids, workers=workers)


def running(ids: tuple[str, ...], jobs: int = 2) -> tuple[ServerSession, dict[int, Dispatch]]:
    session = ServerSession(jobs=jobs, units=in_order)
    session.receive_command(RunTests("r", ids), 0)
    actions = session.batch_resolved(list(ids), [])
    return session, {a.worker: a for a in actions if isinstance(a, Dispatch)}


def run(session: ServerSession, worker: int, test_id: str) -> None:
    session.worker_packet(encode_status(test_id, "inprogress"), 1, worker)
    session.worker_packet(encode_status(test_id, "success"), 1, worker)


def test_the_running_test_and_the_rest_of_the_unit_go_to_another_worker() -> None:
    session, dispatches = running(("a", "b", "c", "d"))
    assert (dispatches[0].test_ids, dispatches[1].test_ids) == (("a",), ("b",))
    run(session, 0, "a")
    more = session.unit_ended(0)
    assert more == [Dispatch(("c",), worker=0)]
    session.worker_packet(encode_status("b", "inprogress"), 2, 1)  # no result will come
    assert session.worker_lost(WHY, 3, 1) == []  # worker 0 is busy: b waits for it
    run(session, 0, "c")
    assert session.unit_ended(0) == [Dispatch(("b",), worker=0)]  # b first: it came back
    run(session, 0, "b")
    assert session.unit_ended(0) == [Dispatch(("d",), worker=0)]  # never worker 1 again
    run(session, 0, "d")
    [done] = session.unit_ended(0)
    assert isinstance(done, Send)
    assert done.body["status"] == "ok" and done.body["ran"] == 4
    assert done.body["lost"] == [f"worker-1: {WHY}"]
    assert "crashes" not in done.body and done.body["not_run"] == []
    assert session.state is State.IDLE


def test_an_idle_worker_takes_the_lost_unit_at_once() -> None:
    session, _ = running(("a", "b"))
    run(session, 0, "a")
    assert session.unit_ended(0) == []  # nothing pending: worker 0 idles
    actions = session.worker_lost(WHY, 2, 1)
    assert actions == [Dispatch(("b",), worker=0)]
    assert not any(isinstance(a, ReportCrash) for a in actions)


def test_with_no_worker_left_the_rest_is_not_run_and_the_message_says_why() -> None:
    session, dispatches = running(("a", "b", "c"), jobs=1)
    assert dispatches[0].test_ids == ("a", "b", "c")
    run(session, 0, "a")
    session.worker_packet(encode_status("b", "inprogress"), 2, 0)
    [done] = session.worker_lost(WHY, 3, 0)
    assert isinstance(done, Send)
    body = done.body
    assert (body["status"], body["ran"], body["not_run"]) == ("incomplete", 1, ["b", "c"])
    assert body["lost"] == [f"worker-0: {WHY}"]
    assert "worker(s) were lost" in body["message"]


def test_a_worker_lost_while_cancelling_hands_nothing_back() -> None:
    session, _ = running(("a", "b", "c", "d"))
    assert session.receive_command(Cancel("c"), 1) == [Interrupt()]
    assert session.worker_lost(WHY, 2, 1) == []
    last = session.unit_ended(0)
    assert [a.body["id"] for a in last] == ["r", "c"]  # type: ignore[union-attr]
    assert last[0].body["status"] == "cancelled"  # type: ignore[union-attr]
    assert last[0].body["lost"] == [f"worker-1: {WHY}"]  # type: ignore[union-attr]


losing_ops = st.tuples(
    st.just("worker"),
    st.integers(0, JOBS - 1),
    st.sampled_from(["step", "step", "step", "lose", "die", "end"]),
    st.sampled_from(["success", "fail"]),
)


@dataclass
class LosingDriver(PoolDriver):
    """The pool's simulated driver, whose workers may also be lost."""

    lost: dict[str, set[int]] = field(default_factory=dict)
    """Batch id -> the workers lost in that batch (one batch may start as the last ends)."""
    losses: frozenset[int] = frozenset()
    """Steps of the final run-down at which a busy worker is lost instead of stepping."""
    lost_busy: int = 0
    """How many losses hit a worker holding a unit."""

    def lost_now(self) -> set[int]:
        assert self.batch is not None
        return self.lost.setdefault(self.batch.command.id, set())

    def dispatch(self, action: Dispatch) -> None:
        assert action.worker not in self.lost_now(), f"lost worker-{action.worker} got a unit"
        super().dispatch(action)

    def idle_step(self, step: int) -> None:
        busy = sorted(self.units)
        if step in self.losses and busy:
            self.pool_step(busy[step % len(busy)], "lose", "success")
        else:
            super().idle_step(step)

    def pool_step(self, worker: int, op: str, status: str) -> None:
        if op != "lose":
            super().pool_step(worker, op, status)
        elif worker in self.units:
            self.release(worker)
            self.lost_now().add(worker)
            self.lost_busy += 1
            self.act(self.session.worker_lost("disconnected", self.now, worker))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(commands, losing_ops, other_ops, time_ops), max_size=60),
    st.frozensets(st.integers(0, 30), max_size=4),
)
def test_a_pool_that_loses_workers_still_accounts_for_every_test(
    ops: list[tuple], losses: frozenset[int]
) -> None:
    check_session(LosingDriver(losses=losses), ops)


def test_the_losing_driver_loses_busy_workers() -> None:
    """The property above is not vacuous: its driver does lose workers holding a unit."""
    driver = LosingDriver(losses=frozenset({0, 1}))
    check_session(driver, [("command", "run-tests", []), ("command", "run-tests", [])])
    assert driver.lost_busy >= 1 and driver.lost[driver.read[0].id]
