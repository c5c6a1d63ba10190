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
import errno
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from testserver.results import TRACEBACK_MIME, output_packets
from testserver.wire.control import decode_control
from testserver.wire.events import FINAL_STATUSES, STATUSES
from testserver.wire.packets import decode_packets, encode_status, file_packets
from testserver.worker import (
    READ_SIZE,
    WORKER_DONE,
    WorkerHandle,
    WorkerSpawner,
    describe_exit,
    split_packets,
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
        """Fds to wait on for reading."""
        return [self._worker.events_r] if self._worker is not None else []

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
        return min(deadlines) if deadlines else None

    def on_readable(self) -> None:
        """The worker's event pipe is readable: forward its packets."""
        worker = self._worker
        assert worker is not None
        try:
            data = os.read(worker.events_r, READ_SIZE)
        except OSError as error:
            if error.errno != errno.EINTR:
                raise
            return
        if not data:
            self._on_worker_exit()
            return
        self._buffer += data
        forward = []
        for raw in split_packets(self._buffer):
            if self._track(raw):
                forward.append(raw)
        if forward:
            self.write(b"".join(forward))
        if self._child_done:
            self._worker_done(worker)

    def _worker_done(self, worker: WorkerHandle) -> None:
        """The worker finished its batch: complete now, let it exit in the background."""
        stdout, stderr = worker.leftover_output()
        self._report_outside_tests(stdout, stderr)
        self.spawner.retire(worker)
        self._worker = None
        self._finish()

    def on_deadline(self) -> None:
        """A timeout or the cancel grace period has passed: kill the worker."""
        if self._worker is not None:
            self._worker.signal(signal.SIGKILL)

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
            self._worker.signal(signal.SIGINT)
            self._cancel_deadline = self.clock() + CANCEL_GRACE_SECONDS

    def send_stdin(self, data: bytes) -> None:
        """Queue ``data`` for the running test's stdin; empty ``data`` means end of input."""
        if data:
            self._stdin_pending += data
        else:
            self._stdin_eof = True

    # -- internals -----------------------------------------------------------------------

    def _dispatch(self, test_ids: list[str]) -> None:
        worker = self.spawner.take()
        if worker.stdin_w is not None:
            os.set_blocking(worker.stdin_w, False)
        self._worker = worker
        self._buffer.clear()
        self._child_done = False
        worker.dispatch(self.command_id, test_ids)

    def _track(self, raw: bytes) -> bool:
        """Update what we know from one worker packet; return True to forward it."""
        flags = (raw[1] << 8) | raw[2]
        if not flags & _TEST_ID:
            if flags & _FILE:
                control = decode_control(decode_packets(raw)[0])
                if control is not None and control[0] == WORKER_DONE:
                    self._child_done = True
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
        if self._buffer:
            self.write(bytes(self._buffer))  # a partial packet can only come from a crash
            self._buffer.clear()
        self._on_crash(worker, worker.reap())

    def _on_crash(self, worker: WorkerHandle, status: int) -> None:
        stdout, stderr = worker.leftover_output()
        self.spawner.release(worker)
        self._worker = None
        cause = describe_exit(status)
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
