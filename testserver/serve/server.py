"""The serve loop: read command frames, run them in order, write subunit packets.

``python -m testserver --serve`` loads the suite once (:mod:`testserver.engine.loading`), says
``testserver.hello``, then executes commands until ``quit`` or end of input. ``list-tests``,
``run-tests``, ``reload`` and ``quit`` run one after another; ``stdin`` and ``cancel`` act at
once on the running batch. Every command gets exactly one ``testserver.complete``.
"""

from __future__ import annotations

import collections
import errno
import gc
import os
import platform
import select
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from testserver import __version__
from testserver.engine.fds import make_private
from testserver.engine.loading import LoadSpec, TestIndex
from testserver.engine.results import PacketResult, output_packets
from testserver.serve import reaping
from testserver.serve.batch import BatchRun, run_in_process
from testserver.serve.channel import PrivateChannel
from testserver.serve.worker import WorkerOptions, WorkerSpawner, write_all
from testserver.wire import control
from testserver.wire.batchtracking import BatchResult
from testserver.wire.commands import Cancel, Command, ListTests, Quit, Reload, RunTests, Stdin
from testserver.wire.errors import FrameError, LocalProtocolError
from testserver.wire.framing import DEFAULT_MAX_PAYLOAD, FrameDecoder, encode_command
from testserver.wire.packets import encode_status
from testserver.wire.sentinels import END_OF_INPUT, NEED_DATA

if TYPE_CHECKING:
    from testserver.hotreload.reloader import Reloader

RESUME_ENV = "TESTSERVER_RESUME"
"""Names a file of command bytes a restarting server hands to its successor (then deleted)."""

GENERATION_ENV = "TESTSERVER_GENERATION"
"""The source generation a restarted server continues from."""

READ_SIZE = 1 << 16
"""Bytes read from the command channel per call."""

LIST_CHUNK = 4096
"""``exists`` packets joined per write when listing (fewer syscalls, bounded memory)."""

TIDY_INTERVAL_MS = 20
"""While a finished worker or what its tests started may still be alive, look this often."""

_CLIENT_GONE = select.POLLERR | select.POLLHUP | select.POLLNVAL
"""Poll events on the packets fd that mean nobody reads the stream any more."""


@dataclass
class ServerOptions:
    """Everything ``--serve`` was asked for on the command line."""

    load: LoadSpec = field(default_factory=LoadSpec)
    isolation: str = "fork"
    subunit_version: str = "2.1"
    subtests: str = "report"
    timeout: float | None = None
    max_payload: int = DEFAULT_MAX_PAYLOAD
    argv: list[str] = field(default_factory=list)
    """The command line arguments, to re-execute the server for a clean restart."""
    generation: int = 0
    resume: bytes = b""
    """Command bytes handed over by the server this one replaced (see :meth:`Server.restart`)."""


class ClientGone(Exception):
    """The client closed the server's stdout: nobody is listening any more."""


class PacketWriter:
    """Writes packet bytes to the private stdout; a closed pipe becomes :class:`ClientGone`."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __call__(self, data: bytes) -> None:
        try:
            write_all(self.fd, data)
        except BrokenPipeError as error:
            raise ClientGone("the client closed the server's stdout") from error


def emit_output(write: Callable[[bytes], None], stdout: bytes, stderr: bytes, version: str) -> None:
    """Emit output written outside any test as global ``stdout``/``stderr`` attachments."""
    parts = output_packets(stdout, stderr, subunit_version=version)
    if parts:
        write(b"".join(parts))


def list_packets(ids: tuple[str, ...] | list[str], version: str) -> list[bytes]:
    """``exists`` packets for ``ids``, joined into chunks of :data:`LIST_CHUNK` packets."""
    chunks = []
    for start in range(0, len(ids), LIST_CHUNK):
        chunk = ids[start : start + LIST_CHUNK]
        chunks.append(b"".join(encode_status(i, "exists", subunit_version=version) for i in chunk))
    return chunks


class Server:
    """One warm server: a loaded :class:`TestIndex` behind a private channel."""

    def __init__(
        self,
        index: TestIndex,
        channel: PrivateChannel,
        options: ServerOptions,
        *,
        reloader: Reloader | None = None,
    ) -> None:
        self.index = index
        self.reloader = reloader
        self.channel = channel
        self.options = options
        self.version = options.subunit_version
        self.write = PacketWriter(channel.packets_fd)
        self.generation = options.generation
        self.decoder = FrameDecoder(max_payload=options.max_payload)
        if options.resume:
            self.decoder.receive_data(options.resume)
        self.queue: collections.deque[Command] = collections.deque()
        self.batch: BatchRun | None = None
        self.batch_command: RunTests | None = None
        self.pending_cancels: list[Cancel] = []
        self.input_closed = False
        self.stopping = False
        self.signals: list[int] = []
        self.spawner = WorkerSpawner(
            index,
            WorkerOptions(
                subunit_version=self.version,
                interactive_stdin=True,
                subtests=options.subtests,
            ),
            suite_fds=channel.suite_fds.still_open,
        )
        self._wakeup_r = self._wakeup_w = -1
        self._listing: tuple[TestIndex, list[bytes]] | None = None
        """The encoded ``exists`` packets of the current index, built at the first listing."""

    # -- lifecycle -----------------------------------------------------------------------

    def serve(self) -> int:
        """Run until ``quit`` or end of input; return the exit code."""
        self._install_signals()
        reaping.become_subreaper()  # orphans of tests come back here, to be ended
        try:
            self._send_hello()
            gc.freeze()
            if self.options.isolation == "fork":
                self.spawner.prepare_standby()
            if self.options.resume:
                self._read_commands(resumed=True)
            while not self._finished():
                self._step()
            self._refuse_queued()
        except ClientGone as error:
            self.channel.log(f"{error}; exiting")
            return 1
        except Exception:  # fds 1 and 2 are capture files: say it where a person can see it
            self.channel.log(f"internal error, exiting:\n{traceback.format_exc()}")
            raise
        finally:
            self.spawner.close()
            self._restore_signals()
            if self.reloader is not None:
                self.reloader.close()
        return 0

    def _refuse_queued(self) -> None:
        """The server is stopping: commands still queued get an error, not silence."""
        while self.queue:
            self._complete(
                self.queue.popleft(),
                status="error",
                code="quitting",
                message="the server is exiting (quit or SIGTERM came first); command not run",
            )

    def _finished(self) -> bool:
        if self.batch is not None:
            return False
        if self.queue:
            return self.stopping
        return self.stopping or self.input_closed

    def _load_errors(self) -> list[dict[str, str]]:
        """The current index's import failures, for hello and list-tests completions."""
        return [
            {"test_id": e.test_id, "module": e.module, "message": e.message}
            for e in self.index.errors
        ]

    def _send_hello(self) -> None:
        capabilities = ["list-tests", "run-tests", "stdin", "cancel", "quit"]
        if self.reloader is not None:
            capabilities.append("reload")
        if self.version == "2.1":
            capabilities.append("parent-test-id")
        body = {
            "protocol": control.PROTOCOL_VERSION,
            "subunit": self.version,
            "server": f"testserver {__version__}",
            "python": platform.python_version(),
            "pid": os.getpid(),
            "cwd": os.getcwd(),
            "isolation": self.options.isolation,
            "capabilities": capabilities,
            "tests": len(self.index),
            "generation": self.generation,
            "max_payload": self.options.max_payload,
            "watch_error": self.reloader.watch_error if self.reloader is not None else None,
            "discovery_errors": self._load_errors(),
        }
        self._control(control.HELLO, body)
        stdout, stderr = self.channel.capture.take()
        emit_output(self.write, stdout, stderr, self.version)

    # -- the event loop ------------------------------------------------------------------

    def _drain(self) -> None:
        """Execute queued commands until one starts a batch (or a quit)."""
        while self.batch is None and self.queue and not self.stopping and not self.signals:
            self._execute(self.queue.popleft())

    def _step(self) -> None:
        self._drain()
        if self._finished():
            return
        poller = select.poll()
        if not self.input_closed and not self.stopping:
            poller.register(self.channel.commands_fd, select.POLLIN)
        poller.register(self._wakeup_r, select.POLLIN)
        poller.register(self.channel.packets_fd, 0)  # errors only: the client went away
        batch = self.batch
        timeout_ms = TIDY_INTERVAL_MS if self.spawner.untidy else None
        if batch is not None:
            for fd in batch.fds():
                poller.register(fd, select.POLLIN)
            stdin_fd = batch.stdin_fd()
            if stdin_fd is not None:
                poller.register(stdin_fd, select.POLLOUT)
            deadline = batch.deadline()
            if deadline is not None:
                wait_ms = max(0, int((deadline - time.monotonic()) * 1000) + 1)
                timeout_ms = wait_ms if timeout_ms is None else min(timeout_ms, wait_ms)
        ready = dict(poller.poll(timeout_ms))
        if ready.get(self.channel.packets_fd, 0) & _CLIENT_GONE:
            raise ClientGone("the client closed the server's stdout")
        self.spawner.reap_exited()
        self._handle_signals()
        if self.channel.commands_fd in ready:
            self._read_commands()
        batch = self.batch
        if batch is None:
            return
        if any(fd in ready for fd in batch.fds()):
            batch.on_readable()
        stdin_fd = batch.stdin_fd()
        if stdin_fd is not None and stdin_fd in ready:
            batch.on_stdin_writable()
        deadline = batch.deadline()
        if deadline is not None and time.monotonic() >= deadline:
            batch.on_deadline()
        if batch.done:
            self._batch_finished()

    def _read_commands(self, *, resumed: bool = False) -> None:
        if not resumed:
            try:
                data = os.read(self.channel.commands_fd, READ_SIZE)
            except OSError as error:
                if error.errno == errno.EINTR:
                    return
                data = b""
            self.decoder.receive_data(data)
        while True:
            try:
                event = self.decoder.next_event()
            except FrameError as error:
                self._frame_error(error)
                continue
            if event is NEED_DATA:
                return
            if event is END_OF_INPUT:
                self.input_closed = True
                if self.batch is not None:
                    self.batch.send_stdin(b"")  # nobody can answer a test reading stdin now
                return
            self._accept(event)

    def _accept(self, command: Command) -> None:
        if isinstance(command, Stdin):
            self._stdin(command)
        elif isinstance(command, Cancel):
            self._cancel(command)
        else:
            self.queue.append(command)
            self._drain()

    def _execute(self, command: Command) -> None:
        if not isinstance(command, Quit):
            self._apply_changes(command)
        if isinstance(command, ListTests):
            if self._listing is None or self._listing[0] is not self.index:
                self._listing = (self.index, list_packets(self.index.ids, self.version))
            for chunk in self._listing[1]:
                self.write(chunk)
            self._complete(command, tests=len(self.index), discovery_errors=self._load_errors())
        elif isinstance(command, RunTests):
            self._start_batch(command)
        elif isinstance(command, Reload):
            if self.reloader is None:
                self._complete(
                    command,
                    status="error",
                    code="not-supported",
                    message="this server was started with --no-reload; restart it to pick up "
                    "source changes",
                )
            else:
                self._complete(command)
        elif isinstance(command, Quit):
            self._complete(command)
            self.stopping = True

    # -- reloading -----------------------------------------------------------------------

    def _apply_changes(self, command: Command) -> None:
        """Before ``command``: reload changed modules, or restart when that is not safe."""
        if self.reloader is None:
            return
        with self.channel.suite_fds.during():  # files the reloaded modules keep open
            report = self.reloader.apply(self.index, force=isinstance(command, Reload))
        if report is None:
            return
        self.generation += 1
        self._control(
            control.RELOAD,
            {
                "generation": self.generation,
                "changed": report.changed,
                "reloaded": report.reloaded,
                "added": report.added,
                "removed": report.removed,
                "restarted": report.restart is not None,
                "reason": report.restart,
            },
        )
        if report.restart is not None:
            self.restart(command, report.restart)
        self.index = report.index
        self.spawner.index = report.index
        self.spawner.discard_standby()
        gc.freeze()
        if self.options.isolation == "fork":
            self.spawner.prepare_standby()

    def restart(self, current: Command, reason: str) -> NoReturn:
        """Re-execute the server on the same pipes, handing over every pending command."""
        self.channel.log(f"restarting: {reason}")
        pending = [encode_command(current)]
        pending += [encode_command(command) for command in self.queue]
        pending.append(self.decoder.unparsed())
        fd, path = tempfile.mkstemp(prefix="testserver-resume-")
        write_all(fd, b"".join(pending))
        os.close(fd)
        self.spawner.close()
        if self.reloader is not None:
            self.reloader.close()
        self._restore_signals()
        self.channel.restore_stdio()
        env = dict(os.environ)
        env[RESUME_ENV] = path
        env[GENERATION_ENV] = str(self.generation)
        argv = [sys.executable, "-m", "testserver", *self.options.argv]
        os.execve(sys.executable, argv, env)

    # -- commands ------------------------------------------------------------------------

    def _start_batch(self, command: RunTests) -> None:
        requested = list(command.test_ids) if command.test_ids else list(self.index.ids)
        found, unknown = self.index.resolve(requested)
        if unknown:
            reporter = PacketResult(self.write, subunit_version=self.version)
            for test_id in unknown:
                reporter.report_missing(test_id)
        ids = [test_id for test_id, _ in found]
        if self.options.isolation == "none":
            self._send_batch_complete(command, self._run_in_process(found, unknown))
            return
        batch = BatchRun(
            command.id,
            ids,
            self.spawner,
            self.write,
            unknown=unknown,
            timeout=self.options.timeout,
            subunit_version=self.version,
        )
        self.batch, self.batch_command = batch, command
        if self.input_closed:
            batch.send_stdin(b"")
        batch.start()
        if batch.done:
            self._batch_finished()

    def _run_in_process(self, found: list, unknown: list[str]) -> BatchResult:
        tracker = run_in_process(
            found,
            self.write,
            self.channel.capture,
            subunit_version=self.version,
            should_stop=lambda: bool(self.signals),
            on_interrupt=lambda: self.signals.append(signal.SIGINT),
            unknown=unknown,
            subtests=self.options.subtests,
        )
        reaping.sweep(set())  # no workers here: every child left is a test's
        # self.signals is left for _handle_signals: SIGTERM must still stop the server
        return tracker.result(interrupted=bool(self.signals))

    def _batch_finished(self) -> None:
        batch, command = self.batch, self.batch_command
        assert batch is not None and command is not None
        self.batch = self.batch_command = None
        assert batch.result is not None
        self._send_batch_complete(command, batch.result)
        for cancel in self.pending_cancels:
            self._complete(cancel, cancelled=command.id)
        self.pending_cancels.clear()
        if self.options.isolation == "fork" and not self.stopping:
            self.spawner.prepare_standby()

    def _send_batch_complete(self, command: RunTests, result: BatchResult) -> None:
        self._complete(command, status=result.status, message=result.message, **result.fields())

    def _stdin(self, command: Stdin) -> None:
        if self.batch is None:
            self._complete(
                command,
                status="error",
                code="not-running",
                message="no run-tests batch is running, so no test is reading stdin",
            )
            return
        self.batch.send_stdin(command.data)
        self._complete(command, bytes=len(command.data))

    def _cancel(self, command: Cancel) -> None:
        if self.batch is None:
            self._complete(command, cancelled=None, message="nothing was running")
            return
        self.pending_cancels.append(command)
        self.batch.cancel()

    def _frame_error(self, error: FrameError) -> None:
        body = control.frame_error_body(
            error.command_id, error.command_name, error.code, error.message, self.generation
        )
        self._control(control.COMPLETE, body)

    # -- output --------------------------------------------------------------------------

    def _complete(
        self,
        command: Command,
        *,
        status: str = "ok",
        message: str | None = None,
        **fields: Any,
    ) -> None:
        body = control.completion_body(
            command.id, command.name, self.generation, status=status, message=message, **fields
        )
        self._control(control.COMPLETE, body)

    def _control(self, name: str, body: dict[str, Any]) -> None:
        now = time.time_ns()
        try:
            data = control.encode_control(
                name, body, timestamp_ns=now, subunit_version=self.version
            )
        except LocalProtocolError:  # larger than one packet: shorten the long lists
            body = control.shorten(body)
            data = control.encode_control(
                name, body, timestamp_ns=now, subunit_version=self.version
            )
        self.write(data)

    # -- signals -------------------------------------------------------------------------

    def _install_signals(self) -> None:
        self._wakeup_r, self._wakeup_w = (make_private(fd) for fd in os.pipe())
        os.set_blocking(self._wakeup_r, False)
        os.set_blocking(self._wakeup_w, False)
        self._old_wakeup = signal.set_wakeup_fd(self._wakeup_w)
        self._old_handlers = {
            number: signal.signal(number, self._on_signal)
            for number in (signal.SIGINT, signal.SIGTERM)
        }
        self._old_handlers.update(reaping.forward_signals(self._signal_target))

    def _signal_target(self) -> int | None:
        """Where a test's signal to the server goes: the running worker, else nowhere (with
        ``--isolation none`` the defaults are back while tests run, see run_in_process)."""
        return None if self.batch is None else self.batch.worker_pid()

    def _restore_signals(self) -> None:
        signal.set_wakeup_fd(self._old_wakeup)
        for number, handler in self._old_handlers.items():
            signal.signal(number, handler)
        for fd in (self._wakeup_r, self._wakeup_w):
            os.close(fd)
        self._wakeup_r = self._wakeup_w = -1

    def _on_signal(self, number: int, frame: object) -> None:
        self.signals.append(number)

    def _handle_signals(self) -> None:
        try:
            while os.read(self._wakeup_r, 512):
                pass
        except BlockingIOError:
            pass
        signals, self.signals = self.signals, []
        for number in signals:
            if self.batch is not None:
                self.batch.cancel()
            if number == signal.SIGTERM:
                self.stopping = True
