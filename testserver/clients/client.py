"""A Python client for a testserver: start or attach, list, run, cancel, feed stdin.

The client talks to any pair of pipes: a local ``python -m testserver --serve`` it starts,
or one reached through ``ssh host python -m testserver --serve``; it never assumes the server
is a local process. It imports only the wire layer (no testtools, no subunit), so a client
process starts fast.

    with Client.spawn(["-t", ".", "-s", "tests"], cwd=project) as client:
        ids = client.list()
        run = client.run(ids[:3])
        for packet in run:
            ...
        print(run.complete["outcomes"])

``client.run_into(ids, result)`` feeds a run into any testtools ``StreamResult`` instead
(:mod:`testserver.clients.streamfeed`).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from testserver.wire.clientsession import (
    ClientSession,
    ClientState,
    Completed,
    HelloReceived,
    Lost,
    Received,
)
from testserver.wire.commands import Cancel, Command, ListTests, Quit, Reload, RunTests, Stdin
from testserver.wire.constants import READ_SIZE
from testserver.wire.errors import PacketError, RemoteProtocolError
from testserver.wire.events import Packet
from testserver.wire.packets import PacketDecoder
from testserver.wire.sentinels import END_OF_INPUT, NEED_DATA

STDERR_TAIL = 4000
"""How much of a dead server's stderr an error message quotes."""


class ClientError(Exception):
    """Base of the errors a client raises."""

    lost: tuple[Lost, ...] = ()
    """Set on the error that ended the session (end of output, output not understood): the
    commands sent that will never complete, oldest first, each with its ``context``."""


class ServerClosed(ClientError):
    """The server closed its output: it exited (cleanly, or see :class:`ServerDied`)."""


class ServerDied(ServerClosed):
    """The server process ended abnormally; ``returncode`` and ``stderr`` say how."""

    def __init__(self, message: str, returncode: int | None, stderr: str) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


class CommandFailed(ClientError):
    """The server completed a command with status ``error``; ``complete`` is its event."""

    def __init__(self, complete: dict[str, Any]) -> None:
        super().__init__(f"{complete.get('command')}: {complete.get('message')}")
        self.complete = complete


class ProtocolViolation(ClientError):
    """The server's output is not a valid subunit stream."""


class Reply:
    """What one queued command gets, packet by packet, up to its own completion.

    The one "wait for my completion" of every client: the library, the daemon and the debug
    client read through a :class:`Reply` (the editor bridge, whose single reader serves many
    commands, reads :meth:`Client.receive` and acts on each ``Completed``).
    """

    def __init__(self, client: Client, command_id: str) -> None:
        self.client = client
        self.id = command_id
        self.completed: Completed | None = None
        """The command's ``Completed``, once it arrived."""

    @property
    def complete(self) -> dict[str, Any] | None:
        """The completion's body, once it arrived."""
        return None if self.completed is None else self.completed.body

    def step(self, timeout: float | None = None) -> tuple[Packet, Received] | None:
        """The next packet before the completion, with what the session makes of it; ``None``
        once the completion arrived. ``TimeoutError`` if nothing came within ``timeout``."""
        if self.completed is not None:
            return None
        packet, received = self.client.receive(timeout)
        if isinstance(received, Completed) and received.command.id == self.id:
            self.completed = received
            return None
        return packet, received

    def events(self) -> Iterator[tuple[Packet, Received]]:
        """Each packet before the completion, with what the session makes of it."""
        while (item := self.step()) is not None:
            yield item

    def __iter__(self) -> Iterator[Packet]:
        for packet, _ in self.events():
            yield packet


class Run(Reply):
    """The packets of one ``run-tests`` as they arrive; ``complete`` is set at the end."""

    def cancel(self) -> None:
        """Ask the server to cancel this run (safe from another thread)."""
        self.client.cancel()

    def send_stdin(self, data: bytes) -> None:
        """Send ``data`` to the running test's stdin (``b""``: end of input)."""
        self.client.send_stdin(data)

    def feed(self, result: Any) -> dict[str, Any]:
        """Feed this run into ``result``, any object with testtools' ``StreamResult``
        interface; return the completion (see :mod:`testserver.clients.streamfeed`)."""
        from testserver.clients.streamfeed import StreamResultFeed  # only when asked: datetime

        return StreamResultFeed(result).feed_run(self)


class Client:
    """One connection to a testserver over a pair of byte pipes."""

    def __init__(
        self,
        read_fd: int,
        write_fd: int,
        *,
        process: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.process = process
        self.decoder = PacketDecoder()
        self.session = ClientSession()
        """The protocol session: ids, outstanding commands, routing (``wire/clientsession``)."""
        self._write_lock = threading.Lock()
        self._session_lock = threading.Lock()
        self.hello = self._read_hello()

    @classmethod
    def spawn(
        cls,
        server_args: Sequence[str] = (),
        *,
        cwd: str | os.PathLike[str] | None = None,
        command: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
        stderr: int | None = subprocess.PIPE,
    ) -> Client:
        """Start ``python -m testserver --serve SERVER_ARGS`` (or ``command``) and connect.

        ``command`` replaces the whole command line, e.g. ``["ssh", "host", "python", "-m",
        "testserver", "--serve"]``. ``stderr=None`` lets the server's diagnostics reach ours.
        """
        argv = list(command) if command else [sys.executable, "-m", "testserver", "--serve"]
        argv += list(server_args)
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        assert process.stdin is not None and process.stdout is not None
        return cls(process.stdout.fileno(), process.stdin.fileno(), process=process)

    # -- commands ------------------------------------------------------------------------

    def new_id(self) -> str:
        """A fresh command id."""
        with self._session_lock:
            return self.session.new_id()

    def send(self, command: Command, *, collect: bool = False, context: Any = None) -> None:
        """Write one command frame (thread-safe); ``collect`` and ``context`` as in
        :meth:`ClientSession.send`. Once the server's output ended nothing is sent (the
        command is not outstanding) and :class:`ServerClosed` is raised; if the write fails,
        the command stays outstanding and is in the ``lost`` of the error that ends the
        stream."""
        with self._write_lock:
            with self._session_lock:
                if self.session.state is ClientState.CLOSED:
                    raise self._closed_error("the server closed its output")
                data = self.session.send(command, collect=collect, context=context)
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self.write_fd, view) :]
            except BrokenPipeError:
                raise self._closed_error("the server closed its stdin") from None

    def follow(self, command: Command) -> Reply:
        """Send the queued ``command``; read what it gets through the :class:`Reply`."""
        self.send(command)
        return Reply(self, command.id)

    def request(self, command: Command) -> tuple[list[Packet], dict[str, Any]]:
        """Send ``command``; return the packets before its completion (control events
        included) and the completion; raise :class:`CommandFailed` on ``error``."""
        reply = self.follow(command)
        packets = list(reply)
        assert reply.completed is not None
        if reply.completed.failed:
            raise CommandFailed(reply.completed.body)
        return packets, reply.completed.body

    def list(self) -> list[str]:
        """Every runnable test id, in load order."""
        packets, _ = self.request(ListTests(self.new_id()))
        return [p.test_id for p in packets if p.status == "exists" and p.test_id]

    def run(self, test_ids: Iterable[str] = ()) -> Run:
        """Start running ``test_ids`` (all tests if empty); iterate the result for packets."""
        command = RunTests(self.new_id(), tuple(test_ids))
        self.send(command)
        return Run(self, command.id)

    def run_into(self, test_ids: Iterable[str], result: Any) -> dict[str, Any]:
        """Run ``test_ids`` (all if empty) into ``result``, any object with testtools'
        ``StreamResult`` interface; return the completion. See :meth:`Run.feed`."""
        return self.run(test_ids).feed(result)

    def cancel(self) -> None:
        """Cancel the running batch (its completion then has status ``cancelled``)."""
        self.send(Cancel(self.new_id()))

    def send_stdin(self, data: bytes) -> None:
        """Feed the running test's stdin; ``b""`` is end of input."""
        self.send(Stdin(self.new_id(), data))

    def reload(self) -> dict[str, Any]:
        """Apply pending source changes now; return the completion."""
        return self.request(Reload(self.new_id()))[1]

    def close(self, timeout: float = 10.0) -> int | None:
        """Ask the server to quit and wait for it; return its exit code if we started it."""
        try:
            self.send(Quit(self.new_id()))
        except ServerClosed:
            pass
        process = self.process
        if process is None:
            return None
        for stream in (process.stdin,):
            if stream is not None:
                stream.close()
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()
        finally:
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------

    def next_packet(self, timeout: float | None = None) -> Packet:
        """The next packet from the server (blocking, or up to ``timeout`` seconds)."""
        return self.receive(timeout)[0]

    def receive(self, timeout: float | None = None) -> tuple[Packet, Received]:
        """The next packet and what the session makes of it (see ``wire/clientsession``).

        At the end of the server's output every outstanding command is lost and
        :class:`ServerClosed` is raised, with those commands in its ``lost``; output that is
        not the protocol ends the session the same way with :class:`ProtocolViolation`.
        """
        packet = self._read_packet(timeout)
        try:
            with self._session_lock:
                received = self.session.receive(packet)
        except RemoteProtocolError as error:
            raise self._ended(ProtocolViolation(str(error))) from error
        if isinstance(received, HelloReceived):
            self.hello = received.body
        return packet, received

    def _read_packet(self, timeout: float | None) -> Packet:
        while True:
            try:
                event = self.decoder.next_event()
            except PacketError as error:
                message = f"bad output from the server: {error}"
                raise self._ended(ProtocolViolation(message)) from error
            if isinstance(event, Packet):
                return event
            if event is END_OF_INPUT:
                raise self._ended(self._closed_error("the server closed its output"))
            assert event is NEED_DATA
            if timeout is not None:
                ready, _, _ = select.select([self.read_fd], [], [], timeout)
                if not ready:
                    raise TimeoutError(f"no output from the server within {timeout} s")
            data = os.read(self.read_fd, READ_SIZE)
            self.decoder.receive_data(data)

    def _ended(self, error: ClientError) -> ClientError:
        """``error`` ends the session: the commands still outstanding go into its ``lost``."""
        with self._session_lock:
            if self.session.state is not ClientState.CLOSED:
                error.lost = tuple(self.session.receive_end_of_stream())
        return error

    def _read_hello(self) -> dict[str, Any]:
        received = self.receive()[1]
        assert isinstance(received, HelloReceived)  # the session checks the first packet
        return received.body

    def _closed_error(self, what: str) -> ServerClosed:
        process = self.process
        if process is None:
            return ServerClosed(what)
        try:
            returncode = process.wait(5)
        except subprocess.TimeoutExpired:
            returncode = None
        stderr = ""
        if process.stderr is not None and returncode is not None:
            stderr = process.stderr.read().decode("utf-8", "replace")[-STDERR_TAIL:]
        if returncode == 0:
            return ServerClosed(f"{what}; it exited with status 0")
        return ServerDied(
            f"{what}; it exited with status {returncode}: {stderr}", returncode, stderr
        )
