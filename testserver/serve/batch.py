"""The process layer of one ``run-tests`` batch: workers, their pipes, their ends.

:class:`WorkerBatch` carries out what a :class:`~testserver.wire.serversession.ServerSession`
decides for a batch run in forked workers: it hands ids to a worker (``Dispatch``), reads the
worker's event pipe through the checked splitter, passes every packet to the session's
tracker (``feed``) and forwards all but the worker's own "done" event, writes ``stdin`` bytes
without blocking, signals or kills the worker (``Interrupt``, ``Kill``), reaps it, and writes
a crash report with the dead worker's leftover output (``ReportCrash``). It decides nothing:
when a worker ends it returns a :class:`WorkerEnd` and the driver tells the session.
:func:`run_in_process` is the same layer for ``--isolation none``.

The one thing it decides is whether the worker of a finished batch runs the next one
(``--isolation worker``): :meth:`WorkerBatch._retire_reason`.
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
from testserver.serve.poolworker import Feed, WorkerEnd
from testserver.serve.worker import (
    READ_SIZE,
    WORKER_DONE,
    WorkerHandle,
    WorkerSpawner,
    describe_exit,
)
from testserver.wire.batchtracking import Crash
from testserver.wire.control import WORKER_RETIRED, decode_control, encode_control
from testserver.wire.packets import decode_packets
from testserver.wire.splitting import CorruptStream, Kind, split_packets
from testserver.wire.tagging import add_tag, tag_field

EXIT_CHECK_SECONDS = 0.1
"""Without a pidfd, how often a running worker is checked for an exit."""

MAX_BATCHES = 1000
"""Batches one reused worker runs before it is retired anyway: what no check sees (module
globals, caches) leaks only this far. Each retirement puts a fork and a teardown near the
request path, so it is rare: under 1 in 1,000 requests of a burst."""


class WorkerBatch:
    """Slot ``name`` of a batch's pool: each unit dispatched to it runs in a fresh fork.

    A local :class:`~testserver.serve.poolworker.PoolWorker`. The driver waits on :meth:`fds`
    (and :meth:`stdin_fd` for writing) and calls :meth:`on_readable` /
    :meth:`on_stdin_writable`; without a pidfd it also calls :meth:`check_exit` by
    :meth:`exit_check_deadline`.
    """

    def __init__(
        self,
        command_id: str,
        spawner: WorkerSpawner,
        write: Callable[[bytes], None],
        feed: Feed,
        *,
        subunit_version: str = "2.1",
        clock: Callable[[], float] = time.monotonic,
        name: str = "worker-0",
        tagged: bool = False,
        keep_worker: bool = False,
    ) -> None:
        self.name = name
        self.keep_worker = keep_worker
        """A pool's slot: its process runs unit after unit, until the batch ends."""
        self._busy = False
        self._tag = tag_field(name) if tagged else None
        """With several workers, every test packet gets the tag ``name``."""
        self.command_id = command_id
        self.spawner = spawner
        self.write = write
        self.feed = feed
        self.subunit_version = subunit_version
        self.clock = clock
        self._worker: WorkerHandle | None = None
        self._buffer = bytearray()
        self._child_done = False
        self._dirty: str | None = None
        """Why the worker says it is unfit for another batch (its done event), or None."""
        self._touched: str | None = None
        """What the server did to the worker that unfits it (a cancel, stdin), or None."""
        self._stdin_pending = bytearray()
        self._stdin_eof = False
        self._leftover = (b"", b"")
        """The output a dead worker wrote after its last finished test."""

    # -- carrying out the session's actions ----------------------------------------------

    def dispatch(self, test_ids: tuple[str, ...] | list[str]) -> None:
        """Hand ``test_ids`` to the slot's worker, a fresh one unless it keeps its worker
        between units and it is still alive (``Dispatch``)."""
        worker = self._worker
        if worker is not None and worker.exited():  # it died between two units
            self.spawner.release(worker)
            worker = None
        if worker is None:
            worker = self.spawner.take()
            os.set_blocking(worker.events_r, False)
            if worker.stdin_w is not None:
                os.set_blocking(worker.stdin_w, False)
            self._dirty = None  # a pool's slot keeps what any of its units made it
        self._worker = worker
        self._busy = True
        self._buffer.clear()
        self._child_done = False
        worker.dispatch(self.command_id, test_ids, last=not self.keep_worker)

    def send_stdin(self, data: bytes) -> None:
        """Queue ``data`` for the running test's stdin; ``b""`` means end of input."""
        self._touched = "the batch read stdin"  # unread bytes would reach the next batch
        if data:
            self._stdin_pending += data
        else:
            self._stdin_eof = True

    def interrupt(self) -> None:
        """Tell the worker the batch is cancelled and interrupt its test (``Interrupt``)."""
        if self._worker is not None and self._busy:
            self._touched = "the batch was cancelled"
            self._worker.cancel()

    def kill(self) -> None:
        """SIGKILL the worker's process group (``Kill``); its pipe then ends."""
        if self._worker is not None and self._busy:
            self._worker.kill_group()

    def report_crash(self, crash: Crash) -> None:
        """Fail the crash's victim with the dead worker's leftover output (``ReportCrash``);
        its ``inprogress`` is out already unless the victim is the synthetic one."""
        (stdout, stderr), self._leftover = self._leftover, (b"", b"")
        reporter = PacketResult(self._write_tagged, subunit_version=self.subunit_version)
        reporter.report_failure(
            crash.victim, crash.message, stdout=stdout, stderr=stderr, inprogress=crash.synthetic
        )

    def report_leftover(self) -> None:
        """A dead worker's output that no crash report took: global attachments."""
        (stdout, stderr), self._leftover = self._leftover, (b"", b"")
        self._report_outside_tests(stdout, stderr)

    def close(self) -> None:
        """End the slot's process, if it has one: reaped in the background when idle. An
        idle pool worker fit for another batch (``--isolation worker``) is parked instead."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        if not self._busy and self._retire_reason(worker) is None:
            self.spawner.keep(worker)
            return
        worker.kill_group()
        if self._busy:
            self.spawner.release(worker)
        else:
            self.spawner.retire(worker)
        self._busy = False

    # -- waiting -------------------------------------------------------------------------

    def fds(self) -> list[int]:
        """Fds to wait on for reading: the worker's events, and its exit where Linux can
        say it (a pidfd: a child of a test may hold the events pipe open after a crash)."""
        worker = self._worker
        if worker is None or not self._busy:
            return []
        return [worker.events_r] if worker.pidfd < 0 else [worker.events_r, worker.pidfd]

    def stdin_fd(self) -> int | None:
        """The worker's stdin fd when there are bytes waiting to be written to it."""
        worker = self._worker
        if worker is None or worker.stdin_w is None:
            return None
        return worker.stdin_w if (self._stdin_pending or self._stdin_eof) else None

    def exit_check_deadline(self) -> float | None:
        """Without a pidfd, when to look whether the worker exited."""
        worker = self._worker
        if worker is None or worker.pidfd >= 0 or not self._busy:
            return None
        return self.clock() + EXIT_CHECK_SECONDS

    def worker_pid(self) -> int | None:
        """The pid of the worker running the batch now, if any."""
        return None if self._worker is None else self._worker.pid

    # -- events --------------------------------------------------------------------------

    def on_readable(self) -> WorkerEnd | None:
        """The worker's events pipe is readable, or it exited: forward its packets."""
        worker = self._worker
        if worker is None or not self._busy:
            return None
        try:
            data = os.read(worker.events_r, READ_SIZE)
        except BlockingIOError:
            data = None
        except InterruptedError:
            return None
        if not data:
            if data is not None or worker.exited():  # end of the pipe, or the worker is gone
                return self._drain_and_exit(worker)
            return None
        return self._take(worker, data)

    def check_exit(self) -> WorkerEnd | None:
        """Without a pidfd: if the worker has exited, deal with its end."""
        worker = self._worker
        if worker is not None and self._busy and worker.pidfd < 0 and worker.exited():
            return self._drain_and_exit(worker)
        return None

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

    # -- internals -----------------------------------------------------------------------

    def _drain_and_exit(self, worker: WorkerHandle) -> WorkerEnd | None:
        """The worker has exited: forward what it wrote before, then deal with its end."""
        while self._worker is worker:
            try:
                data = os.read(worker.events_r, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                data = b""
            if not data:
                return self._on_worker_exit(worker)
            end = self._take(worker, data)
            if end is not None:
                return end
        return None

    def _take(self, worker: WorkerHandle, data: bytes) -> WorkerEnd | None:
        self._buffer += data
        try:
            packets = split_packets(self._buffer, checked=True)
        except CorruptStream as error:
            end = self._forward(worker, error.packets)
            return end if end is not None else self._on_corrupt(worker, error)
        return self._forward(worker, packets)

    def _forward(self, worker: WorkerHandle, packets: list[bytes]) -> WorkerEnd | None:
        """Feed and forward good packets; end when the worker says it is done."""
        forward = [raw for raw in packets if self._track(raw, worker)]
        if self._tag is not None:
            forward = [add_tag(raw, self._tag) for raw in forward]
        if forward:
            self.write(b"".join(forward))
        return self._worker_done(worker) if self._child_done else None

    def _track(self, raw: bytes, worker: WorkerHandle) -> bool:
        """Feed one worker packet; return True to forward it (all but "done")."""
        if self.feed(raw) is Kind.GLOBAL_FILE:
            control = decode_control(decode_packets(raw)[0])
            if control is not None and control[0] == WORKER_DONE:
                if not self._child_done and worker.is_done_event(control[1]):
                    self._child_done = True
                    self._dirty = self._dirty or control[1].get("dirty")
                return False
        return True

    def _worker_done(self, worker: WorkerHandle) -> WorkerEnd:
        """The worker finished its unit: report the output written after its last test.

        A pool's slot keeps its process for the batch's next unit. Otherwise the worker is
        kept for the next batch if it is fit (``--isolation worker``), else its process group
        (whatever its tests left running) is ended and it is reaped in the background.
        """
        self._busy = False
        if self.keep_worker:
            self._report_outside_tests(*worker.leftover_output())
            return WorkerEnd()
        self._worker = None
        reason = self._retire_reason(worker)
        if reason is None:
            self._report_outside_tests(*worker.leftover_output())
            self.spawner.keep(worker)
            return WorkerEnd()
        worker.kill_group()
        self._report_outside_tests(*worker.leftover_output())
        if worker.reusable:
            body = {"id": self.command_id, "pid": worker.pid, "reason": reason}
            body["batches"] = worker.batches
            self.write(encode_control(WORKER_RETIRED, body, timestamp_ns=time.time_ns()))
        self.spawner.retire(worker)
        return WorkerEnd()

    def _retire_reason(self, worker: WorkerHandle) -> str | None:
        """Why ``worker`` must not run another batch, or None (``--isolation worker``)."""
        if not worker.reusable:
            return "--isolation fork"
        if self._dirty is not None:
            return str(self._dirty)
        if self._touched is not None:
            return self._touched
        if worker.batches >= MAX_BATCHES:
            return f"it ran {worker.batches} batches, the most one worker runs"
        return None

    def _on_corrupt(self, worker: WorkerHandle, error: CorruptStream) -> WorkerEnd:
        """A test wrote into the worker's events pipe: nothing more from it can be trusted."""
        worker.kill_group()
        self._buffer.clear()
        worker.reap()
        return self._died(
            worker,
            f"was stopped: a test wrote into testserver's private result pipe ({error.reason}; "
            f"first bytes {error.sample[:32]!r}), so its later results could not be trusted",
        )

    def _on_worker_exit(self, worker: WorkerHandle) -> WorkerEnd:
        partial = len(self._buffer)  # an unfinished packet: never forwarded
        self._buffer.clear()
        worker.kill_group()
        cause = describe_exit(worker.reap())
        if partial:
            cause += f" in the middle of a packet ({partial} bytes dropped)"
        return self._died(worker, cause)

    def _died(self, worker: WorkerHandle, cause: str) -> WorkerEnd:
        self._busy = False
        self._leftover = worker.leftover_output()
        self.spawner.release(worker)
        self._worker = None
        return WorkerEnd(cause)

    def _write_tagged(self, data: bytes) -> None:
        """Write whole packets, tagged as this worker's when the pool tags."""
        if self._tag is not None:
            data = b"".join(add_tag(raw, self._tag) for raw in split_packets(bytearray(data)))
        self.write(data)

    def _report_outside_tests(self, stdout: bytes, stderr: bytes) -> None:
        """Output written after the last test (e.g. in tearDownModule): global attachments."""
        parts = output_packets(stdout, stderr, subunit_version=self.subunit_version)
        if parts:
            self.write(b"".join(parts))


def run_in_process(
    found: list,
    write: Callable[[bytes], None],
    capture: OutputCapture,
    feed: Callable[[bytes], object],
    *,
    subunit_version: str,
    should_stop: Callable[[], bool],
    on_interrupt: Callable[[], None],
    subtests: str = "report",
) -> None:
    """Run ``found`` (``(id, test)`` pairs) in this process (``--isolation none``), passing
    every packet written to ``feed`` (the session's tracker) before writing it.

    Inside a test SIGINT is Python's own ``KeyboardInterrupt``, as under unittest; one that
    the test does not handle calls ``on_interrupt`` and ends the batch, like a typed Ctrl-C
    (in one process the two cannot be told apart).
    """
    buffer = bytearray()

    def tracking_write(data: bytes) -> None:
        buffer.extend(data)
        for raw in split_packets(buffer):
            feed(raw)
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
