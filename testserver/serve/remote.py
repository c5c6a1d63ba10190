"""Remote workers: a pool slot whose units run on a testserver reached through a command.

``--worker-command 'COMMAND'`` adds a :class:`RemoteWorker` to the pool. COMMAND is run
through the shell (``ssh host 'cd src && python -m testserver --serve -s tests'``,
``kubectl exec -i POD -- ...``, ``docker exec -i ...``) and must start ``python -m
testserver --serve`` somewhere, speaking the protocol over the command's stdin and stdout.
The connection outlives batches, so the remote stays warm; each remote watches and reloads
its own tree.

For each unit the slot sends a ``run-tests`` (through a
:class:`~testserver.wire.clientsession.ClientSession`, which says when *its* completion
came), decodes the remote's packets, encodes them again with every field kept (a test's
tagged ``worker-K`` first when the pool has several workers), feeds them to the batch and
writes them. The remote's completion ends the unit (``WorkerEnd()``).
``testserver.stdin-wanted`` is passed on under the local batch's id, ``cancel`` and
``stdin`` go to the remote as commands, and the remote's other control events stay here.
When the remote's output ends first (it crashed, the network went, COMMAND failed to
start), the unit ends with ``WorkerEnd(cause, lost=True)``: the cause says so, with
COMMAND's exit status and the tail of its stderr, and the pool runs the rest of the unit
elsewhere or reports it not run. Everything is non-blocking and polled by the driver;
only :meth:`RemoteWorker.shutdown` waits, for a bounded time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

from testserver.engine.results import PacketResult
from testserver.serve.poolworker import Feed, WorkerEnd, Write, worker_name
from testserver.wire.batchtracking import Crash
from testserver.wire.clientsession import (
    ClientSession,
    Completed,
    ControlReceived,
    HelloReceived,
    StreamPacket,
)
from testserver.wire.commands import Cancel, Command, Quit, RunTests, Stdin
from testserver.wire.constants import READ_SIZE
from testserver.wire.control import STDIN_WANTED, encode_control
from testserver.wire.errors import LocalProtocolError, PacketError, RemoteProtocolError
from testserver.wire.events import Packet
from testserver.wire.packets import PacketDecoder, encode_packet
from testserver.wire.sessionerror import SessionError
from testserver.wire.splitting import split_packets
from testserver.wire.tagging import add_tag, tag_field

STDERR_TAIL_BYTES = 2048
"""Bytes of COMMAND's stderr kept for the reason of a loss: an ssh error or a traceback."""

NOISE_SAMPLE_BYTES = 200
"""Bytes kept of what the remote wrote that is not subunit (a login banner?), for the reason."""

EXIT_WAIT_SECONDS = 2.0
"""After the remote's stdout ends, how long to wait for COMMAND's exit status."""

EXIT_POLL_SECONDS = 0.02
"""Meanwhile, how often to look whether COMMAND exited."""

QUIT_WAIT_SECONDS = 5.0
"""At shutdown, how long a remote gets to answer ``quit`` and exit before it is killed."""


class RemoteWorker:
    """A remote testserver reached through ``command``: slot ``worker-K`` of every batch.

    The driver keeps one per ``--worker-command`` for the server's life; :meth:`attach`
    binds it to a batch (its id, ``write`` and ``feed``) and returns the
    :class:`~testserver.serve.poolworker.PoolWorker` slot, which is this object.
    """

    def __init__(
        self,
        command: str,
        number: int,
        *,
        subunit_version: str = "2.1",
        log: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.command = command
        self.name = worker_name(number)
        self.subunit_version = subunit_version
        self.log = log
        self.hello: dict[str, Any] | None = None
        """The remote's last ``testserver.hello`` (generation, discovery errors, cwd)."""
        self.command_id = ""
        self.tagged = True
        self.write: Write = lambda data: None
        self.feed: Feed | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._session = ClientSession(id_prefix=f"{self.name}.")
        self._decoder = PacketDecoder()
        self._out = bytearray()
        """Frames not yet written to the remote's stdin."""
        self._unit: str | None = None
        """The id of the remote ``run-tests`` of the unit running now."""
        self._stdin_held = bytearray()
        self._stdin_eof = False
        self._killed = False
        self._start_error: str | None = None
        """Why COMMAND could not even be run (the unit ends lost at the next check)."""
        self._ending: float | None = None
        """When COMMAND's stdout ended: its exit is awaited until EXIT_WAIT_SECONDS later."""
        self._stderr_tail = b""
        self._stderr_open = False
        self._noise = b""

    # -- the connection ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether COMMAND runs (its output has not ended)."""
        return self._proc is not None

    def connect(self) -> None:
        """Start COMMAND; the remote's hello is read with its first unit's packets."""
        proc = subprocess.Popen(  # noqa: S602 - running the user's command is the point
            self.command,
            shell=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own group: a Ctrl-C is ours to pass on as cancel
        )
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            assert stream is not None
            os.set_blocking(stream.fileno(), False)
        self._proc = proc
        self._session = ClientSession(id_prefix=f"{self.name}.")
        self._decoder = PacketDecoder()
        self._out.clear()
        self._killed = False
        self._ending = None
        self._stderr_tail = self._noise = b""
        self._stderr_open = True
        self.hello = None

    def pid(self) -> int | None:
        """COMMAND's local pid (the pool's sweep of stray children must spare it)."""
        return None if self._proc is None else self._proc.pid

    def attach(
        self, command_id: str, write: Write, feed: Feed, *, tagged: bool = True
    ) -> RemoteWorker:
        """Serve batch ``command_id``: its packets go to ``feed`` then ``write``, the
        packets of tests tagged ``worker-K`` when ``tagged`` (the pool has several workers)."""
        self.command_id, self.write, self.feed = command_id, write, feed
        self.tagged = tagged
        self._stdin_held.clear()
        self._stdin_eof = False
        return self

    def request_quit(self) -> None:
        """Send the remote ``quit`` (the server exits); :meth:`shutdown` waits for it."""
        if self._proc is not None:
            with contextlib.suppress(SessionError, LocalProtocolError):
                self._send(Quit(self._session.new_id()))
                self._flush()

    def shutdown(self) -> None:
        """Send ``quit`` unless sent, let the remote exit (a bounded wait: the server is
        exiting), then end COMMAND's process group."""
        if self._proc is not None and not any(
            isinstance(entry.command, Quit) for entry in self._session.outstanding.values()
        ):
            self.request_quit()
        self._disconnect(wait=QUIT_WAIT_SECONDS)

    # -- carrying out the session's actions (the PoolWorker slot) ------------------------

    def dispatch(self, test_ids: tuple[str, ...] | list[str]) -> None:
        """Send ``test_ids`` to the remote as one ``run-tests`` (connecting first if need be)."""
        if self._proc is not None and self._proc.poll() is not None:
            self._disconnect(wait=0)  # it went away while idle: start afresh
        self._start_error = None
        if self._proc is None:
            try:
                self.connect()
            except OSError as error:  # no shell, no fds: say so when the driver looks
                self._start_error = f"could not be started ({error})"
                self._unit = "unstarted"
                return
        command = RunTests(self._session.new_id(), tuple(test_ids))
        self._unit = command.id
        self._send(command)
        if self._stdin_held:
            self._send(Stdin(self._session.new_id(), bytes(self._stdin_held)))
            self._stdin_held.clear()
        if self._stdin_eof:  # each unit is a batch of its own over there
            self._send(Stdin(self._session.new_id(), b""))
        self._flush()

    def send_stdin(self, data: bytes) -> None:
        """Pass ``data`` to the remote's running test (``b""``: end of input)."""
        if not data:
            self._stdin_eof = True
        if self._unit is None:
            self._stdin_held += data  # for the next unit, as a local slot keeps it
            return
        self._send(Stdin(self._session.new_id(), bytes(data)))

    def interrupt(self) -> None:
        """The batch is cancelled: send the remote ``cancel`` (its unit then completes)."""
        if self._unit is not None:
            self._send(Cancel(self._session.new_id()))
            self._flush()

    def kill(self) -> None:
        """End COMMAND now (a timeout, or the cancel grace period passed); the unit ends
        when its output does, as a worker's death (not a loss: the session fails the test)."""
        if self._proc is not None:
            self._killed = True
            _kill_group(self._proc.pid)

    def report_crash(self, crash: Crash) -> None:
        """Fail ``crash.victim`` with the tail of COMMAND's stderr as its stderr."""
        reporter = PacketResult(self._write_tagged, subunit_version=self.subunit_version)
        reporter.report_failure(
            crash.victim, crash.message, stderr=self._stderr_tail, inprogress=crash.synthetic
        )

    def _write_tagged(self, data: bytes) -> None:
        """Write whole packets, a test's tagged as this worker's when the pool tags."""
        if self.tagged:
            field = tag_field(self.name)
            data = b"".join(add_tag(raw, field) for raw in split_packets(bytearray(data)))
        self.write(data)

    def report_leftover(self) -> None:
        """Nothing to write: the remote reported its own output outside tests."""

    def worker_pid(self) -> None:
        """Signals are not forwarded to a remote: ``None``."""
        return None

    def close(self) -> None:
        """The batch is over. A unit still out (the batch was abandoned) cannot be trusted
        to end cleanly: the connection goes; otherwise it stays, warm, for the next batch."""
        if self._unit is not None:
            self._disconnect(wait=0)
        self.feed = None

    # -- waiting -------------------------------------------------------------------------

    def fds(self) -> list[int]:
        """COMMAND's stdout (and stderr, until it ends) while a unit runs."""
        proc = self._proc
        if proc is None or self._unit is None or proc.stdout is None or self._ending:
            return []
        if proc.stderr is None or not self._stderr_open:
            return [proc.stdout.fileno()]
        return [proc.stdout.fileno(), proc.stderr.fileno()]

    def stdin_fd(self) -> int | None:
        """COMMAND's stdin while frames wait to be written."""
        proc = self._proc
        if proc is None or proc.stdin is None or not self._out:
            return None
        return proc.stdin.fileno()

    def on_stdin_writable(self) -> None:
        """Write waiting frames without blocking."""
        self._flush()

    def exit_check_deadline(self) -> float | None:
        """While COMMAND's exit is awaited (its stdout ended), when to look again."""
        if self._start_error is not None:
            return time.monotonic()
        return None if self._ending is None else time.monotonic() + EXIT_POLL_SECONDS

    def check_exit(self) -> WorkerEnd | None:
        """The unit's end once COMMAND exited (or would not, EXIT_WAIT_SECONDS on)."""
        if self._start_error is not None:
            why, self._start_error, self._unit = self._start_error, None, None
            return WorkerEnd(self._describe(why), lost=True)
        if self._ending is None or self._proc is None:
            return None
        if self._proc.poll() is None and time.monotonic() < self._ending + EXIT_WAIT_SECONDS:
            return None
        self._ending = None
        return self._lost()

    # -- events --------------------------------------------------------------------------

    def on_readable(self) -> WorkerEnd | None:
        """Read what the remote wrote; relay its packets; end the unit at its completion."""
        proc = self._proc
        if proc is None or proc.stdout is None:
            return None
        self._read_stderr(proc)
        try:
            data = os.read(proc.stdout.fileno(), READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return None
        if data:
            self._decoder.receive_data(data)
            return self._take_packets()
        self._decoder.receive_data(b"")
        end = self._take_packets()  # a whole last packet still counts
        if end is not None:
            return end
        self._ending = time.monotonic()  # its exit status says more: await it, polled
        return self.check_exit()

    def _take_packets(self) -> WorkerEnd | None:
        while True:
            try:
                event = self._decoder.next_event()
            except PacketError as error:  # keep going: the decoder skipped the bad bytes
                self._noise = (self._noise + bytes(error.data or b""))[:NOISE_SAMPLE_BYTES]
                continue
            if not isinstance(event, Packet):
                return None
            try:
                end = self._receive(event)
            except RemoteProtocolError as error:
                return self._lost(f"it does not speak the testserver protocol ({error})")
            if end is not None:
                return end
        return None  # pragma: no cover - the loop returns

    def _receive(self, packet: Packet) -> WorkerEnd | None:
        received = self._session.receive(packet)
        if isinstance(received, StreamPacket):
            self._relay(packet)
        elif isinstance(received, Completed) and received.command.id == self._unit:
            return self._unit_completed(received.body)
        elif isinstance(received, HelloReceived):
            self._on_hello(received.body)
        elif isinstance(received, ControlReceived) and received.name == STDIN_WANTED:
            body = {"id": self.command_id, "test_id": received.body.get("test_id")}
            self._relay_raw(encode_control(STDIN_WANTED, body, timestamp_ns=time.time_ns()))
        return None

    def _relay(self, packet: Packet) -> None:
        """Encode ``packet`` again, a test's first tagged with this worker's name (as a
        local worker's are, spec 4.3.2), then feed it and write it."""
        if self.tagged and packet.test_id is not None:
            packet = dataclasses.replace(packet, tags=(self.name, *(packet.tags or ())))
        self._relay_raw(encode_packet(packet, subunit_version=self.subunit_version))

    def _relay_raw(self, raw: bytes) -> None:
        if self.feed is not None:
            self.feed(raw)
        self.write(raw)

    def _on_hello(self, body: dict[str, Any]) -> None:
        self.hello = body
        errors = body.get("discovery_errors") or []
        if errors:
            modules = ", ".join(str(e.get("module")) for e in errors if isinstance(e, dict))
            self.log(f"{self.name} ({self.command}): the remote could not import {modules}")

    def _unit_completed(self, body: dict[str, Any]) -> WorkerEnd:
        self._unit = None
        if body.get("status") != "error":
            return WorkerEnd()
        reason = f"refused the unit ({body.get('code')}: {body.get('message')})"
        self._disconnect(wait=0)
        return WorkerEnd(self._describe(reason), lost=True)

    # -- internals -----------------------------------------------------------------------

    def _send(self, command: Command) -> None:
        self._out += self._session.send(command)

    def _flush(self) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or not self._out:
            return
        try:
            written = os.write(proc.stdin.fileno(), self._out)
        except (BlockingIOError, InterruptedError):
            return
        except BrokenPipeError:  # it is going: its stdout's end says how
            written = len(self._out)
        del self._out[:written]

    def _read_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        """Keep the tail of what COMMAND wrote on stderr (an ssh error, a traceback)."""
        if proc.stderr is None or not self._stderr_open:
            return
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while data := os.read(proc.stderr.fileno(), READ_SIZE):
                self._stderr_tail = (self._stderr_tail + data)[-STDERR_TAIL_BYTES:]
            self._stderr_open = False  # its end: no more polling it

    def _lost(self, why: str | None = None) -> WorkerEnd:
        """The remote's output ended (or made no sense) before the unit completed."""
        proc = self._proc
        started = self.hello is not None
        status = self._disconnect(wait=0)
        if why is None:
            if self._killed:
                why = "was killed by testserver"
            elif not started:
                why = "failed to start: its output ended before the remote's hello"
            else:
                why = "disconnected: the remote's output ended before the unit completed"
        if status is not None and proc is not None:
            why += f"; COMMAND {_describe_status(status)}"
        self._unit = None
        return WorkerEnd(self._describe(why), lost=not self._killed)

    def _describe(self, reason: str) -> str:
        """``reason`` with the command, the noise on its stdout and its stderr's tail."""
        text = f"remote {shlex.quote(self.command)} {reason}"
        if self._noise:
            text += f"; it wrote bytes that are not subunit: {self._noise[:80]!r}"
        tail = self._stderr_tail.decode("utf-8", "replace").strip()
        if tail:
            text += f"; its stderr ends: {tail[-500:]}"
        return text

    def _disconnect(self, *, wait: float) -> int | None:
        """Close COMMAND's pipes, give it ``wait`` seconds to exit, then kill its group;
        return its exit status if it exited by itself."""
        proc, self._proc = self._proc, None
        self._unit = None
        if proc is None:
            return None
        self._read_stderr(proc)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        status = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            status = proc.wait(timeout=wait) if wait else proc.poll()
        _kill_group(proc.pid)  # what it started (an ssh control master?) goes too
        proc.wait()
        self._read_stderr(proc)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        return status


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _describe_status(returncode: int) -> str:
    """Say in words how COMMAND ended (Popen's ``returncode``: negative for a signal)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    if returncode == 127:
        return "exited with status 127 (command not found)"
    return f"exited with status {returncode}"
