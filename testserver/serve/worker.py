"""Forked batch workers: run a batch in a child of the warm server, survive what tests do.

The server keeps the loaded suite in its own process and never runs a test there (with
``--isolation fork``). Each ``run-tests`` batch runs in a child forked from it: a test that
calls ``os._exit``, segfaults, or hangs past ``--timeout`` takes down only that child. The
parent watches the child's packets, knows which test is running, reports that test as failed
with its captured output and the cause, and runs the rest of the batch in a fresh child.

A standby child is forked ahead of time (after each batch), so a request pays no fork, and
warms up while it waits (:func:`_warm_up`); a standby that died while idle is replaced.

With ``--isolation worker`` (:attr:`WorkerOptions.reuse`) a worker waits for another batch
after its done event, whose ``dirty`` says why it is unfit for one (a failure, a cancel, a
change :mod:`~testserver.serve.workerstate` sees) or is None; the spawner parks a fit one as
the standby (:meth:`WorkerSpawner.keep`), which a reload drops.

Parent and child talk over four pipes: ``control`` (parent -> child: ``run-tests`` frames:
one per batch, or one per unit for a ``--jobs`` pool's worker, until the parent closes it),
``events`` (child -> parent: subunit packets, plus internal ``testserver.worker-*`` control
events that are never forwarded), ``cancel`` (parent -> child: a byte that says the
next SIGINT is a cancel, not the test's own) and ``stdin`` (parent -> child: bytes of
``stdin`` commands). Captured output goes to two temporary files the parent reads after a
crash. All are private descriptors (:mod:`testserver.engine.fds`): the child closes every
descriptor the tests do not own before a test runs, and the parent checks every packet it
reads (:class:`~testserver.wire.splitting.CorruptStream`), so a test cannot reach the client.

Signals inside the worker are the test's business, as under ``python -m unittest``: SIGINT
raises ``KeyboardInterrupt`` (Python's default handler), and a SIGINT sent by the test
itself is an ordinary error. A cancel is a byte on the ``cancel`` pipe followed by SIGINT.
"""

from __future__ import annotations

import io
import os
import secrets
import signal
import sys
import time
import traceback
import unittest
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NoReturn

from testserver.engine.capture import OutputCapture, capture_file, read_leftover
from testserver.engine.fds import close_all_except, make_private, private_pipe
from testserver.engine.loading import TestIndex
from testserver.engine.results import PacketResult
from testserver.engine.running import run_tests
from testserver.engine.stdin import install_stdin
from testserver.engine.subtests import packet_result
from testserver.serve import reaping
from testserver.serve.workerstate import WorkerState
from testserver.wire.commands import RunTests
from testserver.wire.constants import READ_SIZE
from testserver.wire.control import STDIN_WANTED, encode_control
from testserver.wire.framing import FrameDecoder, encode_command
from testserver.wire.sentinels import END_OF_INPUT, NEED_DATA

WORKER_DONE = "testserver.worker-done"
"""Internal control event: the child finished its batch (never forwarded to clients)."""


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


@dataclass
class WorkerOptions:
    """How workers run tests."""

    subunit_version: str = "2.1"
    interactive_stdin: bool = True
    """True: a test's stdin is a pipe fed by ``stdin`` commands. False: it reads end of input."""
    subtests: str = "report"
    """How subtests are reported: ``report`` or ``fold`` (see :mod:`testserver.engine.subtests`)."""
    reuse: bool = False
    """True (``--isolation worker``): a worker waits for another batch after its done event."""


class WorkerHandle:
    """The parent's side of one forked worker."""

    def __init__(
        self,
        pid: int,
        control_w: int,
        events_r: int,
        cancel_w: int,
        stdin_w: int | None,
        capture_fds: tuple[int, int],
        token: str,
        *,
        reusable: bool = False,
    ) -> None:
        self.pid = pid
        self.control_w = control_w
        self.events_r = events_r
        self.cancel_w = cancel_w
        self.stdin_w = stdin_w
        self.capture_fds = capture_fds
        self.token = token
        """Sent back in the worker's done event, which a test cannot forge by accident."""
        self.reusable = reusable
        """The child waits for another batch after its done event (else it exits)."""
        self.batches = 0
        """Batches dispatched to this worker."""
        self.status: int | None = None
        self.pidfd = _pidfd(pid)
        """Readable once the worker has exited (Linux 5.3+), else -1."""

    def fds(self) -> list[int]:
        """Every parent-side fd of this worker."""
        fds = [self.control_w, self.events_r, self.cancel_w, self.pidfd, *self.capture_fds]
        if self.stdin_w is not None:
            fds.append(self.stdin_w)
        return [fd for fd in fds if fd >= 0]

    def is_done_event(self, body: dict) -> bool:
        """True when ``body`` (of a ``testserver.worker-done`` event) is this worker's."""
        return body.get("token") == self.token

    def dispatch(self, command_id: str, test_ids: Iterable[str], *, last: bool = True) -> None:
        """Send the child its batch (or a unit of it); the child starts running at once.

        ``last``: nothing more will be sent, the child exits after this batch. Otherwise
        it waits for the next unit once it said it is done (a ``--jobs`` pool's worker)."""
        frame = encode_command(RunTests(command_id, tuple(test_ids)))
        self.batches += 1
        broken = False
        try:
            write_all(self.control_w, frame)
        except BrokenPipeError:
            broken = True  # it died just now: the caller sees its events pipe end, as for any crash
        finally:
            if broken or (last and not self.reusable):  # end of input: the child exits after
                os.close(self.control_w)
                self.control_w = -1

    def signal(self, number: int) -> None:
        """Send ``number`` to the child, if it is still there."""
        if self.status is None:
            try:
                os.kill(self.pid, number)
            except ProcessLookupError:
                pass

    def cancel(self) -> None:
        """Say that the batch is cancelled, then interrupt the running test (SIGINT)."""
        if self.cancel_w >= 0:
            try:
                os.write(self.cancel_w, b"c")
            except OSError:
                pass
        self.signal(signal.SIGINT)

    def kill_group(self) -> None:
        """SIGKILL the worker and every process left in its process group (which keeps the
        worker's pid as its id while any member lives, even after the worker is reaped)."""
        reaping.kill_group(self.pid)

    def close_stdin(self) -> None:
        """Give the child's stdin end of input."""
        if self.stdin_w is not None:
            os.close(self.stdin_w)
            self.stdin_w = None

    def exited(self) -> bool:
        """True once the worker has ended (it is then reaped)."""
        if self.status is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0
            if pid:
                self.status = status
        return self.status is not None

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
        self.control_w = self.events_r = self.cancel_w = self.pidfd = -1
        self.stdin_w = None
        self.capture_fds = (-1, -1)


class WorkerSpawner:
    """Forks workers from the warm server and keeps one standby worker ready."""

    def __init__(
        self,
        index: TestIndex,
        options: WorkerOptions,
        *,
        suite_fds: Callable[[], Iterable[int]] = tuple,
        keep: Callable[[], Iterable[int]] = tuple,
    ) -> None:
        self.index = index
        self._keep = keep
        """Pids of other children of the server that the sweep spares (remote workers)."""
        self.options = options
        self._suite_fds = suite_fds
        """The descriptors that tests own (see :class:`testserver.engine.fds.SuiteFds`)."""
        self._standby: WorkerHandle | None = None
        self._live: set[WorkerHandle] = set()
        self._exiting: list[WorkerHandle] = []
        self._sweep_pending = False

    def take(self) -> WorkerHandle:
        """A worker ready for a batch: the standby one if there is one."""
        self.reap_exited()
        worker, self._standby = self._standby, None
        if worker is not None and worker.exited():  # it died while idle (a kill, the OOM killer)
            self.release(worker)
            worker = None
        return worker if worker is not None else self._spawn()

    def keep(self, worker: WorkerHandle) -> None:
        """Park ``worker``, fit for another batch, as the standby (unless one is waiting:
        then it is retired). Its tests' orphans, re-parented here, are swept before the
        next batch."""
        self._sweep_pending = True
        if self._standby is None:
            self._standby = worker
        else:
            worker.kill_group()
            self.retire(worker)

    def prepare_standby(self) -> None:
        """Fork the standby worker now, so that the next batch starts without a fork."""
        if self._standby is None:
            self._standby = self._spawn()

    def discard_standby(self) -> None:
        """Drop the standby worker (its copy of the suite is stale after a reload), a
        parked reused one too.

        It is killed with its process group and reaped later, so that the next batch need
        not wait for a large process to be torn down.
        """
        worker, self._standby = self._standby, None
        if worker is not None:
            worker.kill_group()
            self.retire(worker)

    def release(self, worker: WorkerHandle) -> None:
        """Kill if needed, reap and close ``worker``; orphans of its tests are swept soon."""
        worker.close()
        self._live.discard(worker)
        self._sweep_pending = True

    def retire(self, worker: WorkerHandle) -> None:
        """``worker``, killed with its process group (:meth:`WorkerHandle.kill_group`), is
        done with: close our ends, and reap it (and sweep the orphans its tests left)
        without waiting now."""
        worker.close_fds()
        self._live.discard(worker)
        self._exiting.append(worker)
        self._sweep_pending = True
        self.reap_exited()

    @property
    def untidy(self) -> bool:
        """True while retired workers or processes their tests started may still be alive:
        the owner's loop should call :meth:`reap_exited` again soon."""
        return self._sweep_pending

    def reap_exited(self) -> None:
        """Reap retired workers that have exited, and kill the orphans left (again once
        every retired worker has exited: the orphans of its tests come here then)."""
        still = []
        for worker in self._exiting:
            try:
                pid, status = os.waitpid(worker.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = worker.pid, 0
            if pid == 0:
                still.append(worker)
            else:
                worker.status = status
        self._exiting = still
        if self._sweep_pending:
            self._sweep_pending = bool(still)
            reaping.sweep(self._known_pids())

    def _known_pids(self) -> set[int]:
        known = {worker.pid for worker in self._live}
        known.update(self._keep())
        known.update(worker.pid for worker in self._exiting)
        if self._standby is not None:
            known.add(self._standby.pid)
        return known

    def close(self) -> None:
        """Release every worker, waiting for the retired ones to exit, and kill every
        process their tests left behind."""
        self.discard_standby()
        for worker in list(self._live):
            worker.kill_group()
            self.release(worker)
        for worker in self._exiting:
            worker.reap()
        self._exiting.clear()
        self._sweep_pending = False
        reaping.sweep(set(self._keep()))

    def _spawn(self) -> WorkerHandle:
        control_r, control_w = private_pipe()
        events_r, events_w = private_pipe()
        cancel_r, cancel_w = private_pipe()
        if self.options.interactive_stdin:
            stdin_r, stdin_w = private_pipe()
        else:
            stdin_r, stdin_w = make_private(os.open(os.devnull, os.O_RDONLY)), None
        capture_fds = (capture_file(), capture_file())
        child_fds = _ChildFds(control_r, events_w, cancel_r, stdin_r, capture_fds)
        keep = {0, 1, 2, *self._suite_fds(), *child_fds.all()}
        token = secrets.token_hex(8)
        sys.stdout.flush()
        sys.stderr.flush()
        # SIGINT stays blocked in the child until its first test starts: a cancel that comes
        # earlier is seen on the cancel pipe, and no KeyboardInterrupt hits its setup.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, measured through the e2e tests
            _child_main(self.index, self.options, child_fds, keep, parent, token)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        for fd in (control_r, events_w, cancel_r, stdin_r):
            os.close(fd)
        worker = WorkerHandle(
            pid, control_w, events_r, cancel_w, stdin_w, capture_fds, token,
            reusable=self.options.reuse,
        )  # fmt: skip
        self._live.add(worker)
        return worker


def _pidfd(pid: int) -> int:
    """A descriptor that becomes readable when ``pid`` exits, or -1 where there is none."""
    try:
        return make_private(os.pidfd_open(pid))
    except (AttributeError, OSError):
        return -1


@dataclass(frozen=True)
class _ChildFds:
    """The child's ends of its pipes and its capture files."""

    control_r: int
    events_w: int
    cancel_r: int
    stdin_r: int
    capture: tuple[int, int]

    def all(self) -> list[int]:
        return [self.control_r, self.events_w, self.cancel_r, self.stdin_r, *self.capture]


# ---------------------------------------------------------------------------------------------
# The child


def _child_main(
    index: TestIndex,
    options: WorkerOptions,
    fds: _ChildFds,
    keep: set[int],
    parent: int,
    token: str,
) -> NoReturn:
    code = 0
    try:
        close_all_except(keep)  # the server's channel, other workers' pipes, the watcher
        os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the server, which cancels the batch
        _die_with_parent(parent)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # still blocked, see _spawn
        for number in (signal.SIGTERM, *reaping.FORWARDED_SIGNALS):
            signal.signal(number, signal.SIG_DFL)  # the server's handlers are not the test's
        os.dup2(fds.stdin_r, 0)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "rb", closefd=False), encoding="utf-8")
        sys.__stdin__ = sys.stdin
        capture = OutputCapture(*fds.capture, stdin_source=fds.stdin_r)
        capture.install(save=False)
        announcer = _WaitAnnouncer()
        if options.interactive_stdin:
            install_stdin(0, announcer)
        _warm_up(index, options, capture)  # while idle: the batch need not pay for it
        clean = _done_event(token, None)  # encoded while idle: it ends every clean batch
        baseline = WorkerState.capture() if options.reuse else None
        decoder = FrameDecoder()
        cancel = CancelPipe(fds.cancel_r)
        # One batch; the next ones of a reused worker; or the units a --jobs pool sends:
        # the parent closes the control pipe when no more will come.
        while (command := _read_batch(fds.control_r, decoder)) is not None:
            dirty = _run_batch(index, options, command, fds.events_w, capture, cancel, announcer)
            if baseline is not None and dirty is None:
                dirty = WorkerState.capture().changed_since(baseline)
            write_all(fds.events_w, clean if dirty is None else _done_event(token, dirty))
    except BaseException:  # noqa: BLE001 - report anything, then leave without cleanup
        code = 70
        try:
            os.write(2, traceback.format_exc().encode("utf-8", "backslashreplace"))
        except OSError:
            pass
    finally:
        os._exit(code)


def _done_event(token: str, dirty: str | None) -> bytes:
    """The worker's done event (internal: its time stamp is never read)."""
    body = {"token": token, "dirty": dirty}
    return encode_control(WORKER_DONE, body, timestamp_ns=time.time_ns())


class _WarmUp(unittest.TestCase):
    """The test a standby worker runs to itself before its batch arrives."""

    def test_nothing(self) -> None:
        """Does nothing: what is timed is the machinery around it."""


def _warm_up(index: TestIndex, options: WorkerOptions, capture: OutputCapture) -> None:
    """Do once, while the worker waits for its batch, what every batch does first.

    A fresh fork pays for its first pass through the result chain, the codec and unittest's
    suite machinery: copy-on-write faults on the pages that pass writes (reference counts,
    the interpreter's inline caches) and cold CPU caches. Running a private no-op test into
    a throwaway result moves that cost off the request path (about half of a one-test
    batch's time in the worker, see bench/README.md). Nothing of it is visible to the
    batch: its packets go nowhere, the capture is drained, and no test of the suite runs.
    """
    sink: list[bytes] = []
    result = packet_result(
        sink.append,
        subtests=options.subtests,
        capture=capture,
        subunit_version=options.subunit_version,
    )
    run_tests([("warm-up", _WarmUp("test_nothing"))], result)
    if index.ids:
        index.resolve(index.ids[:1])


_PR_SET_PDEATHSIG = 1
"""Linux prctl option: the signal a process gets when its parent dies."""


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this worker if the server dies, so a hung test cannot outlive it.

    Elsewhere the closed pipes end an idle worker, but a hung test may outlive the server.
    """
    if reaping.PRCTL is None:
        return
    reaping.PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the server died before prctl took effect
        os._exit(0)


class CancelPipe:
    """``should_stop`` of a worker: true once the server has written to the cancel pipe.

    A SIGINT alone is not a cancel: a test may send one to itself. The server writes a byte
    here before it sends the SIGINT that interrupts the running test.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.cancelled = False
        os.set_blocking(fd, False)

    def __call__(self) -> bool:
        if not self.cancelled:
            try:
                self.cancelled = bool(os.read(self.fd, 64))
            except BlockingIOError:
                pass
            except OSError:  # a test closed it: a cancel still ends in SIGKILL
                pass
        return self.cancelled


def _read_batch(control_r: int, decoder: FrameDecoder) -> RunTests | None:
    """The next batch the parent sends, or ``None`` once it closed the control pipe."""
    while True:
        event = decoder.next_event()
        if isinstance(event, RunTests):
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
    should_stop: CancelPipe,
    announcer: _WaitAnnouncer,
) -> str | None:
    """Run ``command``; return why the worker is unfit for another batch, or None."""

    def write(data: bytes) -> None:
        write_all(events_w, data)

    found, unknown = index.resolve(command.test_ids)
    result = packet_result(
        write, subtests=options.subtests, capture=capture, subunit_version=options.subunit_version
    )
    announcer.announce = lambda: _announce_wait(command.id, result, write)
    for test_id in unknown:  # the parent resolves the batch first: a safety net only
        result.report_missing(test_id)
    if not should_stop():  # a cancel that came before the first test runs nothing
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            run_tests(found, result, should_stop=should_stop)
        except KeyboardInterrupt:  # a cancel between the check and the first test
            pass
        finally:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    announcer.announce = None
    # The parent works out what did not run from the statuses it forwarded.
    return _unclean(result, should_stop)


def _unclean(result: PacketResult, should_stop: CancelPipe) -> str | None:
    """Why a batch's outcome makes its worker unfit for another batch, or None."""
    if should_stop():
        return "the batch was cancelled"
    if result.failures or result.errors or result.reported_failures:
        return "a test failed or erred"
    if result.unexpectedSuccesses:
        return "a test succeeded unexpectedly"
    return None


class _WaitAnnouncer:
    """``on_wait`` of a worker's stdin, installed before its batch is known: it announces
    the wait of the batch running now, if any."""

    def __init__(self) -> None:
        self.announce: Callable[[], None] | None = None

    def __call__(self) -> None:
        if self.announce is not None:
            self.announce()


def _announce_wait(command_id: str, result: PacketResult, write: Callable[[bytes], None]) -> None:
    """A test is about to block on stdin: flush its output, then say it is waiting."""
    body = {"id": command_id, "test_id": result.current_test_id}
    event = encode_control(STDIN_WANTED, body, timestamp_ns=time.time_ns())
    write(result.flush_output() + event)
