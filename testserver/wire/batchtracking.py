"""The accounting of one ``run-tests`` batch: which test runs, which ended, what is missing.

:class:`BatchTracker` is pure: it is fed the packets a worker writes (or the events they
stand for), told when a worker died, and asked for the completion's fields. Time is passed
in as a number, never read from a clock. The rules it implements (spec 4.3, 4.5):

- ``ran`` and ``outcomes`` count the final statuses of runnable tests (subtests, fixture
  pseudo-tests and unknown ids excluded), crash victims included.
- A requested id is satisfied by one final status; an id requested twice needs two. The
  requested ids left unsatisfied, in batch order, are ``not_run``.
- ``status``: ``"error"`` when the server could not go on, ``"cancelled"`` when a cancel or
  SIGINT stopped the batch, ``"incomplete"`` when it ran to its end but ``not_run`` or
  ``unknown`` is not empty, ``"ok"`` otherwise.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

from testserver.wire.events import FINAL_STATUSES
from testserver.wire.splitting import Kind, classify, packet_status, packet_test_id

WORKER_TEST_ID = "testserver.worker"
"""The synthetic test failed when a worker dies after its last test."""

CANCELLED_MESSAGE = "the batch was cancelled"
INTERRUPTED_MESSAGE = "the batch was interrupted"


@dataclass(frozen=True, slots=True)
class Crash:
    """A worker died: ``victim`` is the test reported as failed, ``message`` its traceback."""

    victim: str
    cause: str
    message: str

    @property
    def synthetic(self) -> bool:
        """True when the victim is :data:`WORKER_TEST_ID`, which needs its own ``inprogress``."""
        return self.victim == WORKER_TEST_ID

    @property
    def entry(self) -> str:
        """The line for the completion's ``crashes`` list."""
        return f"{self.victim}: {self.cause}"


@dataclass(frozen=True, slots=True)
class BatchResult:
    """How a batch ended: the ``status`` and extra fields of its ``testserver.complete``."""

    status: str
    ran: int
    outcomes: dict[str, int]
    unknown: tuple[str, ...]
    not_run: tuple[str, ...]
    crashes: tuple[str, ...]
    message: str | None = None
    lost: tuple[str, ...] = ()
    """One ``"worker-K: why"`` per remote worker lost during the batch."""

    def fields(self) -> dict[str, Any]:
        """The completion fields, in the order the server writes them."""
        fields: dict[str, Any] = {
            "ran": self.ran,
            "outcomes": dict(self.outcomes),
            "unknown": list(self.unknown),
            "not_run": list(self.not_run),
        }
        if self.crashes:
            fields["crashes"] = list(self.crashes)
        if self.lost:
            fields["lost"] = list(self.lost)
        return fields


def unsatisfied(requested: list[str], finished: collections.Counter[str]) -> list[str]:
    """The requested ids without a final status of their own, in order (one per request)."""
    left = finished.copy()
    missing = []
    for test_id in requested:
        if left[test_id] > 0:
            left[test_id] -= 1
        else:
            missing.append(test_id)
    return missing


def incomplete_message(not_run: int, unknown: int, lost: int = 0) -> str:
    """Why a batch that ran to its end is ``incomplete``."""
    parts = []
    if not_run and lost:
        parts.append(
            f"{not_run} requested test(s) got no result: {lost} worker(s) were lost and no "
            "other worker could run them (see lost), or their class or module fixture failed "
            "(see not_run)"
        )
    elif not_run:
        parts.append(
            f"{not_run} requested test(s) got no result: their class or module fixture "
            "failed (reported as its own error), or something replaced or broke unittest's "
            "TestCase.run (see not_run)"
        )
    if unknown:
        parts.append(f"{unknown} requested id(s) name no loaded test (see unknown)")
    return "; ".join(parts)


@dataclass
class Lane:
    """One worker's share of the batch: the unit it runs and where it is in it."""

    tests: list[str]
    """The ids handed to the worker (after a crash: the rest of its unit)."""
    position: int = 0
    """Index in :attr:`tests` of the first test not started yet."""
    current: str | None = None
    started_at: float = 0.0


class BatchTracker:
    """Follows one batch from its packets; see the module docstring for the rules.

    Each worker of the batch (``worker``: its number, ``0`` with one worker) has a
    :class:`Lane`: the unit it was given (:meth:`assign`) and the one test it runs. Before
    any :meth:`assign` worker 0 holds the whole batch, as a batch with one worker does.
    """

    def __init__(
        self,
        test_ids: list[str] | tuple[str, ...],
        *,
        unknown: list[str] | tuple[str, ...] = (),
        timeout: float | None = None,
    ) -> None:
        self.requested = list(test_ids)
        self.unknown = tuple(unknown)
        self.timeout = timeout
        self.lanes: dict[int, Lane] = {0: Lane(list(test_ids))}
        self.ran = 0
        self.outcomes = dict.fromkeys(sorted(FINAL_STATUSES), 0)
        self.crashes: list[str] = []
        self.lost: list[str] = []
        self.finished: collections.Counter[str] = collections.Counter()

    # -- worker 0's lane, the whole batch with one worker --------------------------------

    @property
    def tests(self) -> list[str]:
        """The ids handed to worker 0."""
        return self.lanes[0].tests

    @property
    def position(self) -> int:
        """Worker 0's position in :attr:`tests`."""
        return self.lanes[0].position

    @property
    def current(self) -> str | None:
        """The test worker 0 runs now."""
        return self.lanes[0].current

    # -- events --------------------------------------------------------------------------

    def assign(self, worker: int, test_ids: tuple[str, ...] | list[str]) -> None:
        """``worker`` (a fresh process) was handed ``test_ids``, in this order."""
        self.lanes[worker] = Lane(list(test_ids))

    def feed(self, raw: bytes, now: float, worker: int = 0) -> Kind:
        """Follow one packet ``worker`` wrote; return its :class:`Kind`."""
        kind = classify(raw)
        if kind is Kind.TEST_STARTED:
            self.started(packet_test_id(raw) or "", now, worker)
        elif kind is Kind.TEST_FINISHED:
            # Credited to the running test, as its final status always follows its start;
            # read from the packet only when none runs (cheaper on this hot path).
            test_id = self.lanes[worker].current
            if test_id is None:
                test_id = packet_test_id(raw) or ""
            self.ended(test_id, packet_status(raw) or "fail", worker)
        return kind

    def started(self, test_id: str, now: float, worker: int = 0) -> None:
        """Runnable test ``test_id`` started at ``now`` in ``worker``."""
        lane = self.lanes[worker]
        lane.current, lane.started_at = test_id, now
        tests = lane.tests
        if lane.position < len(tests) and tests[lane.position] == test_id:
            lane.position += 1
            return
        try:  # a test out of order: skip to it, as unittest would have
            lane.position = tests.index(test_id, lane.position) + 1
        except ValueError:
            pass

    def ended(self, test_id: str, status: str, worker: int = 0) -> None:
        """Runnable test ``test_id`` got final status ``status`` in ``worker``."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"{status!r} is not a final status; expected one of FINAL_STATUSES")
        self.ran += 1
        self.outcomes[status] += 1
        self.finished[test_id] += 1
        self.lanes[worker].current = None

    def worker_died(
        self, exit_description: str, now: float, *, cancelled: bool, worker: int = 0
    ) -> Crash | None:
        """``worker`` ended before its unit did: fail the test it was running.

        The victim is the running test, else the next one (it died in a fixture or at
        import), else :data:`WORKER_TEST_ID`. The victim counts as one ``fail``. A cancelled
        worker that dies while no test runs fails no test (spec 4.5): ``None``, no crash.
        """
        lane = self.lanes[worker]
        if cancelled and lane.current is None:
            return None
        cause = exit_description
        if cancelled:
            cause = f"cancelled ({cause} after the cancel request)"
        elif self.timed_out(now, worker):
            cause = f"timed out after {self.timeout:g} s ({cause})"
        victim = lane.current
        if victim is None and lane.position < len(lane.tests):
            victim = lane.tests[lane.position]
            lane.position += 1
            cause += " before this test started (in a fixture or at import?)"
        message = f"testserver: the worker process running this test {cause}.\n"
        if victim is None:
            victim = WORKER_TEST_ID
            message = f"testserver: the worker process {cause} after its last test.\n"
        crash = Crash(victim, cause, message)
        self.crashes.append(crash.entry)
        self.ended(victim, "fail", worker)
        return crash

    def worker_lost(self, worker: int, name: str, reason: str) -> list[str]:
        """``worker`` (a remote) was lost before its unit completed, through no test's fault:
        no test fails; the one it ran is left without a result. Returns the ids of its unit
        that got a result (or were skipped past), which are not run again."""
        lane = self.lanes[worker]
        done = lane.tests[: lane.position]
        if lane.current is not None and done and done[-1] == lane.current:
            done.pop()  # it started, its result never came: it may run elsewhere
        lane.current = None
        self.lost.append(f"{name}: {reason}")
        return done

    def passed(self, worker: int) -> list[str]:
        """The ids of ``worker``'s unit it started or skipped past: never run again."""
        lane = self.lanes[worker]
        return lane.tests[: lane.position]

    def redispatch(self, worker: int = 0) -> list[str]:
        """The tests a fresh worker must run after ``worker`` crashed (empty: none left)."""
        lane = self.lanes[worker]
        lane.tests = lane.tests[lane.position :]
        lane.position = 0
        return list(lane.tests)

    # -- questions -----------------------------------------------------------------------

    def deadline(self, worker: int | None = None) -> float | None:
        """When ``worker``'s running test times out (``None``: the first of any worker's),
        if a timeout is set and a test is running."""
        if self.timeout is None:
            return None
        lanes = self.lanes.values() if worker is None else [self.lanes[worker]]
        starts = [lane.started_at for lane in lanes if lane.current is not None]
        return min(starts) + self.timeout if starts else None

    def timed_out(self, now: float, worker: int = 0) -> bool:
        """Whether ``worker``'s running test has run past the timeout at ``now``."""
        deadline = self.deadline(worker)
        return deadline is not None and now >= deadline

    def expired(self, now: float) -> list[int]:
        """The workers whose running test has run past the timeout at ``now``."""
        return [worker for worker in self.lanes if self.timed_out(now, worker)]

    def not_run(self) -> list[str]:
        """Requested ids without a final status so far (one entry per missing request)."""
        return unsatisfied(self.requested, self.finished)

    def result(
        self, *, cancelled: bool = False, interrupted: bool = False, error: str | None = None
    ) -> BatchResult:
        """The completion of the batch, ended now (see the module docstring for ``status``)."""
        not_run = tuple(self.not_run())
        if error is not None:
            status, message = "error", error
        elif cancelled or interrupted:
            status = "cancelled"
            message = INTERRUPTED_MESSAGE if interrupted else CANCELLED_MESSAGE
        elif not_run or self.unknown:
            status = "incomplete"
            message = incomplete_message(len(not_run), len(self.unknown), len(self.lost))
        else:
            status, message = "ok", None
        return BatchResult(
            status,
            self.ran,
            dict(self.outcomes),
            self.unknown,
            not_run,
            tuple(self.crashes),
            message,
            tuple(self.lost),
        )
