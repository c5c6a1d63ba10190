"""One ``run-tests`` batch, seen from the warm server: forward, track, recover.

The parent forwards a worker's packets to the client as they arrive and follows them to know
which test is running. When the worker dies (a test called ``os._exit``, crashed, or ran past
``--timeout``), the running test is reported as failed with its leftover output and the cause,
and the rest of the batch goes to a fresh worker. Cancelling interrupts the running test and
reports the tests that never started as not run.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from testserver.capture import OutputCapture
from testserver.execution import run_tests
from testserver.results import TRACEBACK_MIME, output_packets
from testserver.subtests import packet_result
from testserver.wire.control import decode_control
from testserver.wire.events import FINAL_STATUSES, STATUSES
from testserver.wire.packets import decode_packets, encode_status, file_packets
from testserver.wire.splitting import CorruptStream, split_packets
from testserver.worker import (
    READ_SIZE,
    WORKER_DONE,
    WorkerHandle,
    WorkerSpawner,
    describe_exit,
)


def finished_tests(data: bytes) -> list[tuple[str, str]]:
    """``(test id, final status)`` of the runnable tests ending in ``data`` (packets we wrote)."""
    finished = []
    for raw in split_packets(bytearray(data)):
        flags = (raw[1] << 8) | raw[2]
        if flags & _TEST_ID and flags & _RUNNABLE and flags & 0x7 in _FINAL_CODES:
            finished.append((decode_packets(raw)[0].test_id or "", STATUSES[flags & 0x7]))
    return finished


def never_finished(requested: list[str], finished: collections.Counter[str]) -> list[str]:
    """Requested ids without a final status: cancelled, or skipped by a failed fixture."""
    left = finished.copy()
    missing = []
    for test_id in requested:
        if left[test_id] > 0:
            left[test_id] -= 1
        else:
            missing.append(test_id)
    return missing


EXIT_CHECK_SECONDS = 0.1
"""Without a pidfd, how often a running worker is checked for an exit."""

CANCEL_GRACE_SECONDS = 2.0
"""How long a cancelled worker may take to stop by itself before it is killed."""

_RUNNABLE = 0x0100
_TEST_ID = 0x0800
_FILE = 0x0040
_STATUS_CODES = {name: code for code, name in enumerate(STATUSES)}
_FINAL_CODES = frozenset(_STATUS_CODES[name] for name in FINAL_STATUSES)
_INPROGRESS = _STATUS_CODES["inprogress"]


@dataclass
class BatchOutcome:
    """How a batch ended, for its ``testserver.complete`` event."""

    status: str = "ok"
    ran: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    not_run: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    message: str | None = None


class BatchRun:
    """One ``run-tests`` batch across as many forked workers as crashes require.

    The owner's event loop waits on :meth:`fds` and calls :meth:`on_readable`, and calls
    :meth:`on_deadline` once :meth:`deadline` has passed; :attr:`done` says when to stop.
    """

    def __init__(
        self,
        command_id: str,
        test_ids: list[str],
        spawner: WorkerSpawner,
        write: Callable[[bytes], None],
        *,
        timeout: float | None = None,
        subunit_version: str = "2.1",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.command_id = command_id
        self.tests = test_ids
        self.requested = list(test_ids)
        self.spawner = spawner
        self.write = write
        self.timeout = timeout
        self.subunit_version = subunit_version
        self.clock = clock
        self.outcome = BatchOutcome(outcomes={name: 0 for name in sorted(FINAL_STATUSES)})
        self.done = False
        self.cancelled = False
        self._position = 0
        self._current: str | None = None
        self._current_started = 0.0
        self._finished: collections.Counter[str] = collections.Counter()
        self._cancel_deadline: float | None = None
        self._worker: WorkerHandle | None = None
        self._buffer = bytearray()
        self._child_done = False
        self._stdin_pending = bytearray()
        self._stdin_eof = False

    # -- driving -------------------------------------------------------------------------

    def start(self) -> None:
        """Hand the batch to a worker."""
        if not self.tests:
            self._finish()
            return
        self._dispatch(self.tests)

    def fds(self) -> list[int]:
        """Fds to wait on for reading: the worker's events, and its exit where Linux can
        say it (a pidfd: a child of a test may hold the events pipe open after a crash)."""
        worker = self._worker
        if worker is None:
            return []
        return [worker.events_r] if worker.pidfd < 0 else [worker.events_r, worker.pidfd]

    def stdin_fd(self) -> int | None:
        """The worker's stdin fd when there are bytes waiting to be written to it."""
        worker = self._worker
        if worker is None or worker.stdin_w is None:
            return None
        return worker.stdin_w if (self._stdin_pending or self._stdin_eof) else None

    def deadline(self) -> float | None:
        """Monotonic time at which :meth:`on_deadline` must be called, if any."""
        deadlines = []
        if self._cancel_deadline is not None:
            deadlines.append(self._cancel_deadline)
        if self.timeout is not None and self._current is not None:
            deadlines.append(self._current_started + self.timeout)
        if self._worker is not None and self._worker.pidfd < 0:
            deadlines.append(self.clock() + EXIT_CHECK_SECONDS)  # no pidfd: look now and then
        return min(deadlines) if deadlines else None

    def on_readable(self) -> None:
        """The worker's events pipe is readable, or it exited: forward its packets."""
        worker = self._worker
        if worker is None:
            return
        try:
            data = os.read(worker.events_r, READ_SIZE)
        except BlockingIOError:
            data = None
        except InterruptedError:
            return
        if not data:
            if data is not None or worker.exited():  # end of the pipe, or the worker is gone
                self._drain_and_exit(worker)
            return
        self._take(worker, data)

    def _drain_and_exit(self, worker: WorkerHandle) -> None:
        """The worker has exited: forward what it wrote before, then deal with its end."""
        while self._worker is worker:
            try:
                data = os.read(worker.events_r, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                data = b""
            if not data:
                self._on_worker_exit()
                return
            self._take(worker, data)

    def _take(self, worker: WorkerHandle, data: bytes) -> None:
        self._buffer += data
        try:
            packets = split_packets(self._buffer, checked=True)
        except CorruptStream as error:
            self._forward(worker, error.packets)
            if self._worker is worker:
                self._on_corrupt(worker, error)
            return
        self._forward(worker, packets)

    def _forward(self, worker: WorkerHandle, packets: list[bytes]) -> None:
        """Track and forward good packets; finish when the worker says it is done."""
        forward = [raw for raw in packets if self._track(raw, worker)]
        if forward:
            self.write(b"".join(forward))
        if self._child_done:
            self._worker_done(worker)

    def _worker_done(self, worker: WorkerHandle) -> None:
        """The worker finished its batch: end its process group (whatever its tests left
        running), report the output written after the last test, and complete; the worker
        is reaped in the background."""
        worker.kill_group()
        stdout, stderr = worker.leftover_output()
        self._report_outside_tests(stdout, stderr)
        self.spawner.retire(worker)
        self._worker = None
        self._finish()

    def _on_corrupt(self, worker: WorkerHandle, error: CorruptStream) -> None:
        """A test wrote into the worker's events pipe: nothing more from it can be trusted."""
        worker.kill_group()
        self._buffer.clear()
        cause = (
            f"was stopped: a test wrote into testserver's private result pipe ({error.reason}; "
            f"first bytes {error.sample[:32]!r}), so its later results could not be trusted"
        )
        worker.reap()
        self._on_crash(worker, cause=cause)

    def on_deadline(self) -> None:
        """A timeout or the cancel grace period has passed: kill the worker."""
        worker = self._worker
        if worker is not None and worker.pidfd < 0 and worker.exited():
            self._drain_and_exit(worker)
            return
        if self._worker is not None and not self._deadline_passed():
            return
        if self._worker is not None:
            self._worker.kill_group()

    def on_stdin_writable(self) -> None:
        """Write pending ``stdin`` bytes to the worker without blocking."""
        worker = self._worker
        if worker is None or worker.stdin_w is None:
            return
        if self._stdin_pending:
            try:
                written = os.write(worker.stdin_w, self._stdin_pending)
            except BlockingIOError:
                return
            except BrokenPipeError:
                self._stdin_pending.clear()
                written = 0
            del self._stdin_pending[:written]
        if not self._stdin_pending and self._stdin_eof:
            worker.close_stdin()

    # -- requests ------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the batch: interrupt the running test, report the rest as not run."""
        if self.done or self.cancelled:
            return
        self.cancelled = True
        if self._worker is not None:
            self._worker.cancel()
            self._cancel_deadline = self.clock() + CANCEL_GRACE_SECONDS

    def send_stdin(self, data: bytes) -> None:
        """Queue ``data`` for the running test's stdin; empty ``data`` means end of input."""
        if data:
            self._stdin_pending += data
        else:
            self._stdin_eof = True

    # -- internals -----------------------------------------------------------------------

    def _deadline_passed(self) -> bool:
        now = self.clock()
        if self._cancel_deadline is not None and now >= self._cancel_deadline:
            return True
        return (
            self.timeout is not None
            and self._current is not None
            and now >= self._current_started + self.timeout
        )

    def _dispatch(self, test_ids: list[str]) -> None:
        worker = self.spawner.take()
        os.set_blocking(worker.events_r, False)
        if worker.stdin_w is not None:
            os.set_blocking(worker.stdin_w, False)
        self._worker = worker
        self._buffer.clear()
        self._child_done = False
        worker.dispatch(self.command_id, test_ids)

    def _track(self, raw: bytes, worker: WorkerHandle) -> bool:
        """Update what we know from one worker packet; return True to forward it."""
        flags = (raw[1] << 8) | raw[2]
        if not flags & _TEST_ID:
            if flags & _FILE:
                control = decode_control(decode_packets(raw)[0])
                if control is not None and control[0] == WORKER_DONE:
                    self._child_done = self._child_done or worker.is_done_event(control[1])
                    return False
            return True
        if not flags & _RUNNABLE:
            return True  # subtests are reported but do not move the batch along
        status = flags & 0x7
        if status == _INPROGRESS:
            self._started(decode_packets(raw)[0].test_id or "")
        elif status in _FINAL_CODES:
            self._count(STATUSES[status])
        return True

    def _count(self, status: str) -> None:
        """The current test ended with ``status``."""
        self.outcome.ran += 1
        self.outcome.outcomes[status] = self.outcome.outcomes.get(status, 0) + 1
        if self._current is not None:
            self._finished[self._current] += 1
        self._current = None

    def _started(self, test_id: str) -> None:
        self._current = test_id
        self._current_started = self.clock()
        tests = self.tests
        if self._position < len(tests) and tests[self._position] == test_id:
            self._position += 1
            return
        # A fixture error such as "setUpClass (pkg.T)" is not one of the batch's ids.
        with contextlib.suppress(ValueError):
            self._position = tests.index(test_id, self._position) + 1

    def _on_worker_exit(self) -> None:
        worker = self._worker
        assert worker is not None
        partial = len(self._buffer)  # an unfinished packet: never forwarded
        self._buffer.clear()
        worker.kill_group()
        status = worker.reap()
        cause = describe_exit(status)
        if partial:
            cause += f" in the middle of a packet ({partial} bytes dropped)"
        self._on_crash(worker, cause=cause)

    def _on_crash(self, worker: WorkerHandle, *, cause: str) -> None:
        stdout, stderr = worker.leftover_output()
        self.spawner.release(worker)
        self._worker = None
        if self.cancelled:
            cause = f"cancelled ({cause} after the cancel request)"
        elif (
            self.timeout is not None
            and self._current is not None
            and self.clock() - self._current_started >= self.timeout
        ):
            cause = f"timed out after {self.timeout:g} s ({cause})"
        victim = self._current
        if victim is None and self._position < len(self.tests):
            victim = self.tests[self._position]
            self._position += 1
            cause += " before this test started (in a fixture or at import?)"
        message = f"testserver: the worker process running this test {cause}.\n"
        if victim is None:
            victim = "testserver.worker"
            message = f"testserver: the worker process {cause} after its last test.\n"
        self.outcome.crashes.append(f"{victim}: {cause}")
        self._report_crash(victim, message, stdout, stderr)
        self._current = victim
        self._count("fail")
        remaining = self.tests[self._position :]
        if self.cancelled:
            self._finish()
        elif remaining:
            self.tests = remaining
            self._position = 0
            self._dispatch(remaining)
        else:
            self._finish()

    def _report_crash(self, test_id: str, message: str, stdout: bytes, stderr: bytes) -> None:
        version = self.subunit_version
        parts = []
        if test_id == "testserver.worker":
            parts.append(
                encode_status(test_id, "inprogress", time.time_ns(), subunit_version=version)
            )
        parts += output_packets(stdout, stderr, test_id=test_id, subunit_version=version)
        parts += file_packets(
            "traceback",
            message.encode("utf-8"),
            test_id=test_id,
            mime_type=TRACEBACK_MIME,
            subunit_version=version,
        )
        parts.append(encode_status(test_id, "fail", time.time_ns(), subunit_version=version))
        self.write(b"".join(parts))

    def _report_outside_tests(self, stdout: bytes, stderr: bytes) -> None:
        """Output written after the last test (e.g. in tearDownModule): global attachments."""
        parts = output_packets(stdout, stderr, subunit_version=self.subunit_version)
        if parts:
            self.write(b"".join(parts))

    def _finish(self) -> None:
        self.done = True
        self._cancel_deadline = None
        self.outcome.not_run = never_finished(self.requested, self._finished)
        if self.cancelled:
            self.outcome.status = "cancelled"
            self.outcome.message = "the batch was cancelled"


def run_in_process(
    found: list,
    write: Callable[[bytes], None],
    capture: OutputCapture,
    *,
    subunit_version: str,
    should_stop: Callable[[], bool],
    on_interrupt: Callable[[], None],
    subtests: str = "report",
) -> BatchOutcome:
    """Run ``found`` (``(id, test)`` pairs) in this process (``--isolation none``).

    Inside a test SIGINT is Python's own ``KeyboardInterrupt``, as under unittest; one that
    the test does not handle calls ``on_interrupt`` and ends the batch, like a typed Ctrl-C
    (in one process the two cannot be told apart).
    """
    outcome = BatchOutcome(outcomes=dict.fromkeys(sorted(FINAL_STATUSES), 0))
    finished: collections.Counter[str] = collections.Counter()

    def tracking_write(data: bytes) -> None:
        for test_id, status in finished_tests(data):
            finished[test_id] += 1
            outcome.outcomes[status] += 1
        write(data)

    result = packet_result(
        tracking_write, subtests=subtests, subunit_version=subunit_version, capture=capture
    )
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run_tests(found, result, should_stop=should_stop, on_interrupt=on_interrupt)
    finally:
        signal.signal(signal.SIGINT, previous)
    outcome.ran = sum(outcome.outcomes.values())
    outcome.not_run = never_finished([test_id for test_id, _ in found], finished)
    return outcome
