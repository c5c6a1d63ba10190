"""Forked batch workers: run a batch in a child of the warm server, survive what tests do.

The server keeps the loaded suite in its own process and never runs a test there (with
``--isolation fork``). Each ``run-tests`` batch runs in a child forked from it: a test that
calls ``os._exit``, segfaults, or hangs past ``--timeout`` takes down only that child. The
parent watches the child's packets, knows which test is running, reports that test as failed
with its captured output and the cause, and runs the rest of the batch in a fresh child.

A standby child is forked ahead of time (after each batch), so that a request pays no fork.

Parent and child talk over three pipes: ``control`` (parent -> child: one ``run-tests`` frame),
``events`` (child -> parent: subunit packets, plus internal ``testserver.worker-*`` control
events that are never forwarded) and ``stdin`` (parent -> child: bytes of ``stdin`` commands).
Captured output goes to two temporary files that the parent can read after a crash.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NoReturn

from testserver.capture import OutputCapture, read_leftover
from testserver.execution import run_tests
from testserver.interactive import install_stdin
from testserver.loading import TestIndex
from testserver.results import PacketResult
from testserver.subtests import packet_result
from testserver.wire.commands import RunTests
from testserver.wire.control import STDIN_WANTED, encode_control
from testserver.wire.framing import FrameDecoder, encode_command
from testserver.wire.sentinels import END_OF_INPUT, NEED_DATA

WORKER_DONE = "testserver.worker-done"
"""Internal control event: the child finished its batch (never forwarded to clients)."""

READ_SIZE = 1 << 16
"""Bytes read from a worker's event pipe per call; a pipe holds 64 KiB on Linux."""


def describe_exit(status: int) -> str:
    """Say in words how a child with ``waitpid`` status ``status`` ended."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"killed by signal {number} ({name})"
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    return f"ended with wait status {status}"


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to blocking ``fd``."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def split_packets(buffer: bytearray) -> list[bytes]:
    """Remove and return the complete subunit packets at the start of ``buffer``.

    Only for streams we wrote ourselves (a worker's): a bad signature is a bug, not input.
    """
    packets = []
    pos = 0
    size = len(buffer)
    while size - pos >= 4:
        if buffer[pos] != 0xB3:
            raise RuntimeError(
                f"worker stream out of sync at byte {pos}: {bytes(buffer[pos : pos + 16])!r}"
            )
        first = buffer[pos + 3]
        width = (first >> 6) + 1
        if size - pos < 3 + width:
            break
        length = first & 0x3F
        for i in range(1, width):
            length = (length << 8) | buffer[pos + 3 + i]
        if size - pos < length:
            break
        packets.append(bytes(buffer[pos : pos + length]))
        pos += length
    del buffer[:pos]
    return packets


@dataclass
class WorkerOptions:
    """How workers run tests."""

    subunit_version: str = "2.1"
    interactive_stdin: bool = True
    """True: a test's stdin is a pipe fed by ``stdin`` commands. False: it reads end of input."""
    subtests: str = "report"
    """How subtests are reported: ``report`` or ``fold`` (see :mod:`testserver.subtests`)."""


class WorkerHandle:
    """The parent's side of one forked worker."""

    def __init__(
        self,
        pid: int,
        control_w: int,
        events_r: int,
        stdin_w: int | None,
        capture_fds: tuple[int, int],
    ) -> None:
        self.pid = pid
        self.control_w = control_w
        self.events_r = events_r
        self.stdin_w = stdin_w
        self.capture_fds = capture_fds
        self.status: int | None = None

    def fds(self) -> list[int]:
        """Every parent-side fd of this worker (a new child must close them)."""
        fds = [self.control_w, self.events_r, *self.capture_fds]
        if self.stdin_w is not None:
            fds.append(self.stdin_w)
        return [fd for fd in fds if fd >= 0]

    def dispatch(self, command_id: str, test_ids: Iterable[str]) -> None:
        """Send the child its batch; the child starts running at once."""
        frame = encode_command(RunTests(command_id, tuple(test_ids)))
        write_all(self.control_w, frame)
        os.close(self.control_w)
        self.control_w = -1

    def signal(self, number: int) -> None:
        """Send ``number`` to the child, if it is still there."""
        if self.status is None:
            try:
                os.kill(self.pid, number)
            except ProcessLookupError:
                pass

    def close_stdin(self) -> None:
        """Give the child's stdin end of input."""
        if self.stdin_w is not None:
            os.close(self.stdin_w)
            self.stdin_w = None

    def reap(self) -> int:
        """Wait for the child to end; return its wait status."""
        if self.status is None:
            _, self.status = os.waitpid(self.pid, 0)
        return self.status

    def leftover_output(self) -> tuple[bytes, bytes]:
        """What the child wrote to stdout and stderr since its last test finished."""
        out_fd, err_fd = self.capture_fds
        return read_leftover(out_fd), read_leftover(err_fd)

    def close(self) -> None:
        """Kill the child if needed, reap it, and close every parent-side fd."""
        if self.status is None:
            self.signal(signal.SIGKILL)
            self.reap()
        self.close_fds()

    def close_fds(self) -> None:
        """Close every parent-side fd of this worker."""
        for fd in self.fds():
            try:
                os.close(fd)
            except OSError:
                pass
        self.control_w = self.events_r = -1
        self.stdin_w = None
        self.capture_fds = (-1, -1)


class WorkerSpawner:
    """Forks workers from the warm server and keeps one standby worker ready."""

    def __init__(
        self,
        index: TestIndex,
        options: WorkerOptions,
        *,
        private_fds: Callable[[], Iterable[int]] = tuple,
    ) -> None:
        self.index = index
        self.options = options
        self._private_fds = private_fds
        self._standby: WorkerHandle | None = None
        self._live: set[WorkerHandle] = set()
        self._exiting: list[WorkerHandle] = []

    def take(self) -> WorkerHandle:
        """A worker ready for a batch: the standby one if there is one."""
        self.reap_exited()
        worker, self._standby = self._standby, None
        return worker if worker is not None else self._spawn()

    def prepare_standby(self) -> None:
        """Fork the standby worker now, so that the next batch starts without a fork."""
        if self._standby is None:
            self._standby = self._spawn()

    def discard_standby(self) -> None:
        """Drop the standby worker (its copy of the suite is stale after a reload).

        It is killed and reaped later, so that the next batch need not wait for a large
        process to be torn down.
        """
        worker, self._standby = self._standby, None
        if worker is not None:
            worker.signal(signal.SIGKILL)
            self.retire(worker)

    def release(self, worker: WorkerHandle) -> None:
        """Kill if needed, reap and close ``worker``."""
        worker.close()
        self._live.discard(worker)

    def retire(self, worker: WorkerHandle) -> None:
        """``worker`` finished its batch and is exiting: close our ends, reap it later."""
        worker.close_fds()
        self._live.discard(worker)
        self._exiting.append(worker)
        self.reap_exited()

    def reap_exited(self) -> None:
        """Reap retired workers that have exited, without waiting for the others."""
        still = []
        for worker in self._exiting:
            pid, status = os.waitpid(worker.pid, os.WNOHANG)
            if pid == 0:
                still.append(worker)
            else:
                worker.status = status
        self._exiting = still

    def close(self) -> None:
        """Release every worker, waiting for the retired ones to exit."""
        self.discard_standby()
        for worker in list(self._live):
            self.release(worker)
        for worker in self._exiting:
            worker.reap()
        self._exiting.clear()

    def _spawn(self) -> WorkerHandle:
        control_r, control_w = os.pipe()
        events_r, events_w = os.pipe()
        if self.options.interactive_stdin:
            stdin_r, stdin_w = os.pipe()
        else:
            stdin_r, stdin_w = os.open(os.devnull, os.O_RDONLY), None
        capture_fds = (_capture_file(), _capture_file())
        others = [fd for worker in self._live for fd in worker.fds()]
        others.extend(self._private_fds())
        sys.stdout.flush()
        sys.stderr.flush()
        # SIGINT stays blocked until the child has its own handler: a cancel sent at once
        # must reach that handler, not Python's default one.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, measured through the e2e tests
            close = [*others, control_w, events_r]
            if stdin_w is not None:
                close.append(stdin_w)
            _child_main(
                self.index, self.options, control_r, events_w, stdin_r, capture_fds, close, parent
            )
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        os.close(control_r)
        os.close(events_w)
        os.close(stdin_r)
        worker = WorkerHandle(pid, control_w, events_r, stdin_w, capture_fds)
        self._live.add(worker)
        return worker


def _capture_file() -> int:
    fd, path = tempfile.mkstemp(prefix="testserver-capture-")
    os.unlink(path)
    return fd


# ---------------------------------------------------------------------------------------------
# The child


def _child_main(
    index: TestIndex,
    options: WorkerOptions,
    control_r: int,
    events_w: int,
    stdin_r: int,
    capture_fds: tuple[int, int],
    close_fds: list[int],
    parent: int,
) -> NoReturn:
    code = 0
    try:
        for fd in close_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the server, which cancels the batch
        _die_with_parent(parent)
        cancel = _install_child_signals()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        os.dup2(stdin_r, 0)
        os.close(stdin_r)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "rb", closefd=False), encoding="utf-8")
        sys.__stdin__ = sys.stdin
        capture = OutputCapture(*capture_fds)
        capture.install()
        command = _read_batch(control_r)
        if command is not None:
            _run_batch(index, options, command, events_w, capture, cancel)
    except BaseException:  # noqa: BLE001 - report anything, then leave without cleanup
        code = 70
        try:
            os.write(2, traceback.format_exc().encode("utf-8", "backslashreplace"))
        except OSError:
            pass
    finally:
        os._exit(code)


_PR_SET_PDEATHSIG = 1
"""Linux prctl option: the signal a process gets when its parent dies."""


def _load_prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` where there is one (Linux), loaded once in the server before forks."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl() if sys.platform.startswith("linux") else None


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this worker if the server dies, so a hung test cannot outlive it.

    Elsewhere the closed pipes end an idle worker, but a hung test may outlive the server.
    """
    if _PRCTL is None:
        return
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the server died before prctl took effect
        os._exit(0)


class _CancelFlag:
    """SIGINT in a worker means "cancel": remember it, and interrupt a running test."""

    def __init__(self) -> None:
        self.cancelled = False
        self.running = False

    def __call__(self) -> bool:
        return self.cancelled

    def on_sigint(self, number: int, frame: object) -> None:
        self.cancelled = True
        if self.running:
            raise KeyboardInterrupt


def _install_child_signals() -> _CancelFlag:
    flag = _CancelFlag()
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, flag.on_sigint)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return flag


def _read_batch(control_r: int) -> RunTests | None:
    decoder = FrameDecoder()
    while True:
        event = decoder.next_event()
        if isinstance(event, RunTests):
            os.close(control_r)
            return event
        if event is END_OF_INPUT:
            return None
        if event is NEED_DATA:
            decoder.receive_data(os.read(control_r, READ_SIZE))


def _run_batch(
    index: TestIndex,
    options: WorkerOptions,
    command: RunTests,
    events_w: int,
    capture: OutputCapture,
    should_stop: _CancelFlag,
) -> None:
    def write(data: bytes) -> None:
        write_all(events_w, data)

    found, unknown = index.resolve(command.test_ids)
    result = packet_result(
        write, subtests=options.subtests, capture=capture, subunit_version=options.subunit_version
    )
    if options.interactive_stdin:
        install_stdin(0, lambda: _announce_wait(command.id, result, write))
    for test_id in unknown:  # the parent resolves the batch first: a safety net only
        result.report_missing(test_id)
    if not should_stop():  # a cancel that came before the first test runs nothing
        should_stop.running = True
        run_tests(found, result, should_stop=should_stop)
        should_stop.running = False
    # The parent works out what did not run from the statuses it forwarded.
    write(encode_control(WORKER_DONE, {}, timestamp_ns=time.time_ns()))


def _announce_wait(command_id: str, result: PacketResult, write: Callable[[bytes], None]) -> None:
    """A test is about to block on stdin: flush its output, then say it is waiting."""
    body = {"id": command_id, "test_id": result.current_test_id}
    event = encode_control(STDIN_WANTED, body, timestamp_ns=time.time_ns())
    write(result.flush_output() + event)
