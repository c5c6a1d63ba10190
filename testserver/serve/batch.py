"""One ``run-tests`` batch, seen from the warm server: forward, track, recover.

The parent forwards a worker's packets to the client as they arrive and follows them to know
which test is running. When the worker dies (a test called ``os._exit``, crashed, or ran past
``--timeout``), the running test is reported as failed with its leftover output and the cause,
and the rest of the batch goes to a fresh worker. Cancelling interrupts the running test and
reports the tests that never started as not run.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from testserver.engine.capture import OutputCapture
from testserver.engine.results import PacketResult, output_packets
from testserver.engine.running import run_tests
from testserver.engine.subtests import packet_result
from testserver.serve import reaping
from testserver.serve.worker import (
    READ_SIZE,
    WORKER_DONE,
    WorkerHandle,
    WorkerSpawner,
    describe_exit,
)
from testserver.wire.batchtracking import BatchResult, BatchTracker, Crash
from testserver.wire.control import decode_control
from testserver.wire.packets import decode_packets
from testserver.wire.splitting import CorruptStream, Kind, split_packets

EXIT_CHECK_SECONDS = 0.1
"""Without a pidfd, how often a running worker is checked for an exit."""

CANCEL_GRACE_SECONDS = 2.0
"""How long a cancelled worker may take to stop by itself before it is killed."""


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
        unknown: list[str] | tuple[str, ...] = (),
        timeout: float | None = None,
        subunit_version: str = "2.1",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.command_id = command_id
        self.tracker = BatchTracker(test_ids, unknown=unknown, timeout=timeout)
        self.spawner = spawner
        self.write = write
        self.subunit_version = subunit_version
        self.clock = clock
        self.result: BatchResult | None = None
        """The completion's fields, once :attr:`done`."""
        self.done = False
        self.cancelled = False
        self._cancel_deadline: float | None = None
        self._worker: WorkerHandle | None = None
        self._buffer = bytearray()
        self._child_done = False
        self._stdin_pending = bytearray()
        self._stdin_eof = False

    # -- driving -------------------------------------------------------------------------

    def start(self) -> None:
        """Hand the batch to a worker."""
        if not self.tracker.tests:
            self._finish()
            return
        self._dispatch(self.tracker.tests)

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
        timeout = self.tracker.deadline()
        if timeout is not None:
            deadlines.append(timeout)
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

    def worker_pid(self) -> int | None:
        """The pid of the worker running the batch now, if any."""
        return None if self._worker is None else self._worker.pid

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
        return self.tracker.timed_out(now)

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
        """Follow one worker packet; return True to forward it (all but "done")."""
        if self.tracker.feed(raw, self.clock()) is Kind.GLOBAL_FILE:
            control = decode_control(decode_packets(raw)[0])
            if control is not None and control[0] == WORKER_DONE:
                self._child_done = self._child_done or worker.is_done_event(control[1])
                return False
        return True

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
        crash = self.tracker.worker_died(cause, self.clock(), cancelled=self.cancelled)
        if crash is None:  # cancelled between tests: no test failed, its output is global
            self._report_outside_tests(stdout, stderr)
        else:
            self._report_crash(crash, stdout, stderr)
        remaining = self.tracker.redispatch()
        if self.cancelled or not remaining:
            self._finish()
        else:
            self._dispatch(remaining)

    def _report_crash(self, crash: Crash, stdout: bytes, stderr: bytes) -> None:
        """Fail the crash's victim with the worker's leftover output; its ``inprogress`` is
        out already unless the victim is the synthetic :data:`WORKER_TEST_ID`."""
        reporter = PacketResult(self.write, subunit_version=self.subunit_version)
        reporter.report_failure(
            crash.victim, crash.message, stdout=stdout, stderr=stderr, inprogress=crash.synthetic
        )

    def _report_outside_tests(self, stdout: bytes, stderr: bytes) -> None:
        """Output written after the last test (e.g. in tearDownModule): global attachments."""
        parts = output_packets(stdout, stderr, subunit_version=self.subunit_version)
        if parts:
            self.write(b"".join(parts))

    def _finish(self) -> None:
        self.done = True
        self._cancel_deadline = None
        self.result = self.tracker.result(cancelled=self.cancelled)


def run_in_process(
    found: list,
    write: Callable[[bytes], None],
    capture: OutputCapture,
    *,
    subunit_version: str,
    should_stop: Callable[[], bool],
    on_interrupt: Callable[[], None],
    unknown: list[str] | tuple[str, ...] = (),
    subtests: str = "report",
) -> BatchTracker:
    """Run ``found`` (``(id, test)`` pairs) in this process (``--isolation none``); the
    returned tracker gives the completion (``result(interrupted=...)``).

    Inside a test SIGINT is Python's own ``KeyboardInterrupt``, as under unittest; one that
    the test does not handle calls ``on_interrupt`` and ends the batch, like a typed Ctrl-C
    (in one process the two cannot be told apart).
    """
    tracker = BatchTracker([test_id for test_id, _ in found], unknown=unknown)
    buffer = bytearray()

    def tracking_write(data: bytes) -> None:
        buffer.extend(data)
        for raw in split_packets(buffer):
            tracker.feed(raw, 0.0)  # no timeout in one process: the time is never read
        write(data)

    result = packet_result(
        tracking_write, subtests=subtests, subunit_version=subunit_version, capture=capture
    )
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    forwarded = {n: signal.signal(n, signal.SIG_DFL) for n in reaping.FORWARDED_SIGNALS}
    try:
        run_tests(found, result, should_stop=should_stop, on_interrupt=on_interrupt)
    finally:
        signal.signal(signal.SIGINT, previous)
        reaping.restore_handlers(forwarded)
    return tracker
