"""The warm server: read command frames, hand them to the session, write subunit packets.

``python -m testserver --serve`` loads the suite once (:mod:`testserver.engine.loading`), says
``testserver.hello``, then drives a :class:`~testserver.wire.serversession.ServerSession`
until it says ``Exit``: every frame read and every signal becomes a session event, and the
session's actions are carried out by :class:`~testserver.serve.driver.SessionDriver`. What
is left here is what only a server does: the hello, listing, reloading (or restarting the
process) before a command, and encoding control events.
"""

from __future__ import annotations

import errno
import gc
import os
import platform
import select
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from testserver import __version__
from testserver.engine.loading import LoadSpec, TestIndex
from testserver.engine.results import output_packets
from testserver.serve import reaping
from testserver.serve.channel import PrivateChannel
from testserver.serve.driver import ClientGone, RunOptions, SessionDriver
from testserver.serve.worker import write_all
from testserver.wire import control
from testserver.wire.commands import Command, ListTests, Reload, RunTests
from testserver.wire.constants import READ_SIZE
from testserver.wire.errors import FrameError, LocalProtocolError
from testserver.wire.framing import DEFAULT_MAX_PAYLOAD, FrameDecoder, encode_command
from testserver.wire.packets import encode_status
from testserver.wire.sentinels import END_OF_INPUT, NEED_DATA
from testserver.wire.sessionactions import Action

if TYPE_CHECKING:
    from collections.abc import Callable

    from testserver.hotreload.reloader import Reloader

RESUME_ENV = "TESTSERVER_RESUME"
"""Names a file of command bytes a restarting server hands to its successor (then deleted)."""

GENERATION_ENV = "TESTSERVER_GENERATION"
"""The source generation a restarted server continues from."""

LIST_CHUNK = 4096
"""``exists`` packets joined per write when listing (fewer syscalls, bounded memory)."""

_CLIENT_GONE = select.POLLERR | select.POLLHUP | select.POLLNVAL
"""Poll events on the packets fd that mean nobody reads the stream any more."""


@dataclass
class ServerOptions(RunOptions):
    """Everything ``--serve`` was asked for on the command line."""

    load: LoadSpec = field(default_factory=LoadSpec)
    max_payload: int = DEFAULT_MAX_PAYLOAD
    argv: list[str] = field(default_factory=list)
    """The command line arguments, to re-execute the server for a clean restart."""
    generation: int = 0
    resume: bytes = b""
    """Command bytes handed over by the server this one replaced (see :meth:`Server.restart`)."""


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


class Server(SessionDriver):
    """One warm server: a loaded :class:`TestIndex` behind a private channel."""

    def __init__(
        self,
        index: TestIndex,
        channel: PrivateChannel,
        options: ServerOptions,
        *,
        reloader: Reloader | None = None,
    ) -> None:
        super().__init__(
            index,
            channel,
            options,
            can_reload=reloader is not None,
            generation=options.generation,
            interactive_stdin=True,
            standby=True,
        )
        self.reloader = reloader
        self.options = options
        self.decoder = FrameDecoder(max_payload=options.max_payload)
        if options.resume:
            self.decoder.receive_data(options.resume)
        self._listing: tuple[TestIndex, list[bytes]] | None = None
        """The encoded ``exists`` packets of the current index, built at the first listing."""

    @property
    def generation(self) -> int:
        """The source generation completions are stamped with."""
        return self.session.generation

    # -- lifecycle -----------------------------------------------------------------------

    def serve(self) -> int:
        """Run until ``quit`` or end of input; return the exit code."""
        self._install_signals()
        reaping.become_subreaper()  # orphans of tests come back here, to be ended
        try:
            self._send_hello()
            gc.freeze()
            if self.standby:
                self.spawner.prepare_standby()
            if self.options.resume:
                self._read_commands(resumed=True)
            self.run()
        except ClientGone as error:
            self.channel.log(f"{error}; exiting")
            return 1
        except Exception:  # fds 1 and 2 are capture files: say it where a person can see it
            self.channel.log(f"internal error, exiting:\n{traceback.format_exc()}")
            raise
        finally:
            self.close_remotes()
            self.spawner.close()
            self._restore_signals()
            if self.reloader is not None:
                self.reloader.close()
        return 0

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
            "jobs": self.session.jobs,
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

    # -- the command channel -------------------------------------------------------------

    def _poll_inputs(self) -> list[tuple[int, int]]:
        inputs = [(self.channel.packets_fd, 0)]  # errors only: the client went away
        if not self.session.input_closed and not self.session.stopping:
            inputs.append((self.channel.commands_fd, select.POLLIN))
        return inputs

    def _on_inputs(self, ready: dict[int, int]) -> None:
        if ready.get(self.channel.packets_fd, 0) & _CLIENT_GONE:
            raise ClientGone("the client closed the server's stdout")
        if self.channel.commands_fd in ready:
            self._read_commands()

    def _read_commands(self, *, resumed: bool = False) -> None:
        if not resumed:
            try:
                data = os.read(self.channel.commands_fd, READ_SIZE)
            except OSError as error:
                if error.errno == errno.EINTR:
                    return
                data = b""
            self.decoder.receive_data(data)
        while True:  # after Exit too: frames read with the quit get their completions
            try:
                event = self.decoder.next_event()
            except FrameError as error:
                self._frame_error(error)
                continue
            if event is NEED_DATA:
                return
            if event is END_OF_INPUT:
                self._act(self.session.receive_end_of_input())
                return
            self._act(self.session.receive_command(event, time.monotonic()))

    def _frame_error(self, error: FrameError) -> None:
        session = self.session
        self._act(
            session.receive_frame_error(
                error.command_id, error.command_name, error.code, error.message
            )
        )

    # -- commands ------------------------------------------------------------------------

    def execute(self, command: ListTests | Reload) -> list[Action]:
        if isinstance(command, Reload):
            return self.session.command_finished()
        if self._listing is None or self._listing[0] is not self.index:
            self._listing = (self.index, list_packets(self.index.ids, self.version))
        for chunk in self._listing[1]:
            self.write(chunk)
        return self.session.command_finished(
            tests=len(self.index), discovery_errors=self._load_errors()
        )

    def send(self, body: dict) -> None:
        self._control(control.COMPLETE, body)

    # -- reloading -----------------------------------------------------------------------

    def prepare(self, command: ListTests | Reload | RunTests) -> None:
        """Before ``command``: reload changed modules, or restart when that is not safe."""
        if self.reloader is None:
            return
        report = self.reloader.apply(  # recording the files the reloaded modules keep open
            self.index, force=isinstance(command, Reload), record=self.channel.suite_fds.during
        )
        if report is None:
            return
        self.session.changes_applied(self.generation + 1)
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
        if self.standby:
            self.spawner.prepare_standby()

    def restart(self, current: Command, reason: str) -> NoReturn:
        """Re-execute the server on the same pipes, handing over every pending command."""
        self.channel.log(f"restarting: {reason}")
        self.write.holding = False
        self.write.flush()
        pending = [encode_command(current)]
        pending += [encode_command(command) for command in self.session.queue]
        pending.append(self.decoder.unparsed())
        fd, path = tempfile.mkstemp(prefix="testserver-resume-")
        write_all(fd, b"".join(pending))
        os.close(fd)
        self.close_remotes()
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

    # -- output --------------------------------------------------------------------------

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
