"""``testserver bridge [SERVER ARGS]``: JSON lines in and out, on one warm server, for editors.

An editor starts ``testserver bridge -t . -s tests`` once per project and keeps it running.
The bridge starts one ``python -m testserver --serve`` (which reloads changed modules before
each command), reads one JSON command per line on stdin and writes JSON lines on stdout: the
events of :mod:`testserver.clients.jsonout` (tests with file and line, output, reload, summary) and
a few of its own. ``spec/json-output.md`` section 6 is the normative description::

    {"id": 1, "command": "run", "tests": ["pkg.test_m.T.test_x", "pkg.test_n"]}
    {"id": 2, "command": "list"}
    {"command": "stdin", "data": "p secret\\n"}      (for the test waiting for input)
    {"command": "cancel"}  {"command": "reload"}  {"command": "quit"}

Once its server has loaded the tests, and again whenever a new server replaces one that died,
the bridge writes ``{"event": "ready", "tests": 12, "load_errors": [...], ...}``: an editor
shows "loading" from the start until then. Every command gets one
``{"event": "complete", "id": ..., "command": ..., "status": ...}``;
a line that is not a command gets ``{"event": "error", ...}`` and the bridge goes on. While
a test runs, what it prints arrives as ``test-output`` events, and when it waits for input
(a ``(Pdb)`` prompt) a ``stdin-wanted`` event follows.

Three threads: the main one executes the queued commands (``run``, ``list``, ``reload``,
``quit``) one at a time; a reader thread parses stdin and forwards ``stdin`` and ``cancel``
at once, even while a run waits for input; a pump thread is the only reader of the server's
stream and writes the events in stream order. A server that restarts itself is followed
transparently; one that dies is reported and replaced at the next command.
"""

from __future__ import annotations

import argparse
import codecs
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from testserver.clients.bridgemessages import (
    BadRequest,
    Request,
    parse_request,
    ready_fields,
    select_tests,
)
from testserver.clients.client import Client, ClientError
from testserver.clients.console import (
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_OK,
    add_reload_arguments,
    add_server_arguments,
    reload_arguments,
    server_arguments,
)
from testserver.clients.jsonout import JsonRenderer, Locator
from testserver.clients.runs import Assembler, Outcome, Started, Tally
from testserver.wire.clientsession import Completed, ControlReceived, StreamPacket
from testserver.wire.commands import Cancel, Command, ListTests, Quit, Reload, RunTests, Stdin
from testserver.wire.constants import READ_SIZE
from testserver.wire.control import STDIN_WANTED
from testserver.wire.events import Packet

IMMEDIATE = frozenset({"stdin", "cancel"})
"""Commands forwarded at once, even while a run is in progress (the others wait their turn)."""

OUTPUT_NAMES = frozenset({"stdout", "stderr"})
"""Test attachments streamed as ``test-output`` events while the test runs."""

MAX_LINE_BYTES = 64 << 20
"""Longest command line: the server's default payload limit, which a run could not exceed."""

ECHO_LENGTH = 200
"""Characters of a malformed line quoted back in its ``error`` event."""

PROMPT_LENGTH = 200
"""Characters kept of a test's unfinished last line of stdout, the ``stdin-wanted`` prompt."""

QUIT_TIMEOUT = 10.0
"""Seconds to wait for the server's stream to end after ``quit`` before killing it."""


# -- the bridge --------------------------------------------------------------------------


class _Run:
    """A run in progress: its tally, and the test output being streamed."""

    def __init__(self, request: Request, tally: Tally) -> None:
        self.request = request
        self.tally = tally
        self.began = time.perf_counter()
        self.decoders: dict[tuple[str, str], codecs.IncrementalDecoder] = {}
        self.prompts: dict[str, str] = {}


class _Pending:
    """What the bridge attaches to a command it sends (the session's ``context``): the
    editor's request, the run it drives, and the event its sender waits on."""

    def __init__(self, request: Request | None, run: _Run | None = None) -> None:
        self.request = request
        """The editor's command to complete, or ``None`` for the bridge's own."""
        self.run = run
        self.done = threading.Event()
        self.body: dict[str, Any] = {}
        """The completion (or the failure) it got."""
        self.packets: tuple[Packet, ...] = ()
        """Its collected packets (a ``list-tests``: the ``exists`` ones)."""
        self._settled = False
        self._lock = threading.Lock()

    def settle(self, body: dict[str, Any], packets: tuple[Packet, ...] = ()) -> bool:
        """Record its outcome; ``False`` if it had one already (a send that failed and the
        end of the stream may both report a lost command)."""
        with self._lock:
            if self._settled:
                return False
            self._settled = True
        self.body, self.packets = body, packets
        return True


class BridgeRenderer(JsonRenderer):
    """The JSON renderer, made safe for several threads; a closed stdout calls ``on_closed``."""

    def __init__(self, stream: TextIO, locator: Locator, on_closed: Callable[[], None]) -> None:
        super().__init__(stream, locator)
        self.lock = threading.Lock()
        self.closed = False
        self.on_closed = on_closed

    def emit(self, event: str, **fields: Any) -> None:
        with self.lock:
            if self.closed:
                return
            try:
                super().emit(event, **fields)
                return
            except (BrokenPipeError, ValueError):  # ValueError: the stream was closed
                self.closed = True
        self.on_closed()


class Bridge:
    """Editor commands in, one server in the middle, events out (see the module docstring)."""

    def __init__(self, spawn: Callable[[], Client], stream: TextIO, locator: Locator) -> None:
        self.spawn = spawn
        self.renderer = BridgeRenderer(stream, locator, self.stop_reading)
        self.client: Client | None = None
        self.dead = True
        self.pump: threading.Thread | None = None
        self.lock = threading.Lock()
        self.run: _Run | None = None
        self.last_run: tuple[str, Any] = ("", None)
        self.queue: queue.Queue[Request | None] = queue.Queue()
        self.input_closed = False
        self.quitting = False

    # -- the reader thread ---------------------------------------------------------------

    def read_commands(self, fd: int) -> None:
        """Read command lines from ``fd`` until end of input or ``quit``."""
        buffer, skipping = bytearray(), False
        while not self.input_closed:
            try:
                data = os.read(fd, READ_SIZE)
            except OSError:
                data = b""
            if not data:
                break
            buffer += data
            while b"\n" in buffer and not self.input_closed:
                line, _, rest = bytes(buffer).partition(b"\n")
                buffer[:] = rest
                if not skipping:
                    self.accept(line)
                skipping = False
            if len(buffer) > MAX_LINE_BYTES:
                if not skipping:
                    message = f"a command line is at most {MAX_LINE_BYTES} bytes"
                    self.renderer.emit("error", id=None, code="line-too-long", message=message)
                buffer.clear()
                skipping = True
        if buffer.strip() and not skipping and not self.input_closed:
            self.accept(bytes(buffer))
        self.stop_reading()

    def accept(self, line: bytes) -> None:
        """Act on one command line: forward it, queue it, or report it as malformed."""
        if not line.strip():
            return
        try:
            request = parse_request(line)
        except BadRequest as error:
            echo = line[:ECHO_LENGTH].decode("utf-8", "replace")
            self.renderer.emit(
                "error", id=error.request_id, code=error.code, message=str(error), line=echo
            )
            return
        if request.command in IMMEDIATE:
            self.forward(request)
        elif request.command == "quit":
            self.stop_reading(request)
        else:
            self.queue.put(request)

    def forward(self, request: Request) -> None:
        """Send ``stdin`` or ``cancel`` to the server now."""
        client = self.client
        assert client is not None  # attached before the reader thread starts
        if request.command == "stdin":
            command: Command = Stdin(client.new_id(), request.data.encode("utf-8"))
        else:
            command = Cancel(client.new_id())
        self._send(client, command, _Pending(request))

    def stop_reading(self, request: Request | None = None) -> None:
        """No more commands (end of input, ``quit``, stdout closed): finish and exit.

        A test that waits for input now gets end of input, since none can come.
        """
        if self.input_closed:
            return
        self.input_closed = True
        client = self.client
        if self.run is not None and client is not None:
            self._send(client, Stdin(client.new_id(), b""), _Pending(None))
        self.queue.put(request)

    # -- the main thread: queued commands ------------------------------------------------

    def attach(self, client: Client) -> None:
        """Use ``client`` from now on, say it is ready and start reading its stream."""
        with self.lock:
            self.client, self.dead = client, False
        self.renderer.emit("ready", **ready_fields(client.hello))
        self.pump = threading.Thread(target=self._pump, args=(client,), daemon=True)
        self.pump.start()

    def serve(self) -> int:
        """Execute queued commands until ``quit`` or end of input; return the exit status."""
        while True:
            request = self.queue.get()
            if request is None or request.command == "quit":
                return self.quit(request)
            if self._ensure_server(request):
                getattr(self, "do_" + request.command)(request)

    def do_list(self, request: Request) -> None:
        """``list``: one ``test`` event with status ``exists`` per selected test."""
        chosen = self._select(request)
        if chosen is None:
            return
        selected, unmatched = chosen
        self.renderer.listing(selected)
        self._complete(request, {"status": "ok", "tests": len(selected), "unmatched": unmatched})

    def do_run(self, request: Request) -> None:
        """``run``: a ``start``, the tests' events, a ``summary`` (the pump writes those)."""
        chosen = self._select(request)
        if chosen is None:
            return
        selected, unmatched = chosen
        tally = Tally(unmatched=unmatched)
        if not selected:
            tally.complete = {"status": "ok"}
            self.renderer.start(0)
            self.renderer.finish(tally)
            self._complete(request, {"status": "ok", "ran": 0, "ok": False})
            return
        client = self.client
        assert client is not None
        command = RunTests(client.new_id(), tuple(selected) if request.tests else ())
        run = _Run(request, tally)
        self.renderer.start(len(selected))
        with self.lock:
            self.run, self.last_run = run, (command.id, request.id)
        pending = _Pending(request, run)
        self._send(client, command, pending)
        pending.done.wait()
        with self.lock:
            self.run = None

    def do_reload(self, request: Request) -> None:
        """``reload``: apply source changes now (a ``reload`` event if anything changed)."""
        client = self.client
        assert client is not None
        pending = _Pending(request)
        self._send(client, Reload(client.new_id()), pending)
        pending.done.wait()

    def quit(self, request: Request | None) -> int:
        """Stop the server (after what is queued before) and return 0."""
        client = self.client
        self.quitting = True
        if client is not None and not self.dead:
            pending = _Pending(None)
            self._send(client, Quit(client.new_id()), pending)
            pending.done.wait()
            if self.pump is not None:
                self.pump.join(QUIT_TIMEOUT)
        if client is not None:
            client.close(QUIT_TIMEOUT)
        if request is not None:
            self._complete(request, {"status": "ok"})
        return EXIT_OK

    def _ensure_server(self, request: Request) -> bool:
        if not self.dead:
            return True
        if self.client is not None:
            self.client.close(QUIT_TIMEOUT)
            self.renderer.message("starting a new server")
        try:
            client = self.spawn()
        except (OSError, ClientError) as error:
            message = f"cannot start the server: {error}"
            self._complete(request, {"status": "error", "code": "no-server", "message": message})
            return False
        self.attach(client)
        return True

    def _list(self, request: Request) -> list[str] | None:
        """The server's test ids (changes reloaded first); ``None`` after reporting a failure."""
        client = self.client
        assert client is not None
        pending = _Pending(None)
        self._send(client, ListTests(client.new_id()), pending, collect=True)
        pending.done.wait()
        if pending.body.get("status") != "ok":
            self._complete(request, pending.body)
            return None
        return [p.test_id for p in pending.packets if p.status == "exists" and p.test_id]

    def _select(self, request: Request) -> tuple[list[str], list[str]] | None:
        """The request's selected ids and unmatched selectors (each reported as a message);
        ``None`` after reporting that the listing failed."""
        ids = self._list(request)
        if ids is None:
            return None
        selected, unmatched = select_tests(ids, request.tests)
        for selector in unmatched:
            self.renderer.message(f"no test matches {selector!r}")
        return selected, unmatched

    # -- talking to the server -----------------------------------------------------------

    def _send(
        self, client: Client, command: Command, pending: _Pending, *, collect: bool = False
    ) -> None:
        """Send ``command`` with ``pending`` as its context: its ``Completed`` (or its ``Lost``
        when the server dies) completes ``pending``."""
        with self.lock:
            alive = client is self.client and not self.dead
        if not alive:
            self._fail(pending, "no-server", "the server is not running")
            return
        try:
            client.send(command, collect=collect, context=pending)
        except ClientError as error:
            self._fail(pending, "server-died", str(error))

    def _fail(self, pending: _Pending, code: str, message: str) -> None:
        if not pending.settle({"status": "error", "code": code, "message": message}):
            return
        if pending.request is not None:
            self._complete(pending.request, pending.body)
        pending.done.set()

    def _complete(self, request: Request, body: dict[str, Any]) -> None:
        fields = {k: v for k, v in body.items() if k not in ("id", "command")}
        if request.command == "cancel" and fields.get("cancelled") is not None:
            server_id, request_id = self.last_run
            fields["cancelled"] = request_id if fields["cancelled"] == server_id else None
        self.renderer.emit("complete", id=request.id, command=request.command, **fields)

    # -- the pump thread -----------------------------------------------------------------

    def _pump(self, client: Client) -> None:
        assembler = Assembler()
        while True:
            try:
                received = client.receive()[1]
            except ClientError as error:
                self._server_gone(client, error)
                return
            if isinstance(received, StreamPacket):
                self._on_stream(received.packet, assembler)
            elif isinstance(received, Completed):
                self._on_complete(received)
            elif isinstance(received, ControlReceived):
                if received.name == STDIN_WANTED:
                    self._on_stdin_wanted(received.body)
                else:
                    self.renderer.control(received.name, received.body)
            # a hello (the server restarted itself: the client keeps it) or a stray
            # completion (of no command of ours) needs nothing

    def _on_stream(self, packet: Packet, assembler: Assembler) -> None:
        if packet.status == "exists":  # a listing's: its session collects them
            return
        run = self.run
        if run is not None and packet.test_id and packet.file_name in OUTPUT_NAMES:
            self._stream_output(run, packet.test_id, packet.file_name, packet.file_bytes)
        for item in assembler.feed(packet):
            if isinstance(item, Started):
                self.renderer.started(item)
            elif isinstance(item, Outcome):
                if run is not None:
                    self._flush_output(run, item.test_id)
                    run.tally.add(item)
                self.renderer.finished(item)
            else:
                if run is not None:
                    run.tally.output.append(item)
                self.renderer.output(item)

    def _stream_output(self, run: _Run, test_id: str, name: str, data: bytes) -> None:
        decoder = run.decoders.get((test_id, name))
        if decoder is None:
            decoder = run.decoders[test_id, name] = codecs.getincrementaldecoder("utf-8")("replace")
        self._emit_output(run, test_id, name, decoder.decode(data))

    def _flush_output(self, run: _Run, test_id: str) -> None:
        for name in sorted(OUTPUT_NAMES):
            decoder = run.decoders.pop((test_id, name), None)
            if decoder is not None:
                self._emit_output(run, test_id, name, decoder.decode(b"", final=True))
        run.prompts.pop(test_id, None)

    def _emit_output(self, run: _Run, test_id: str, name: str, text: str) -> None:
        if not text:
            return
        if name == "stdout":
            line = (run.prompts.get(test_id, "") + text).rpartition("\n")[2]
            run.prompts[test_id] = line[-PROMPT_LENGTH:]
        self.renderer.emit(
            "test-output", run=self.renderer.run, test_id=test_id, name=name, text=text
        )

    def _on_stdin_wanted(self, body: dict[str, Any]) -> None:
        client, run, test_id = self.client, self.run, body.get("test_id")
        unanswered = self.input_closed or (run is not None and not run.request.input)
        if unanswered and client is not None:  # nobody will type: end of input
            self._send(client, Stdin(client.new_id(), b""), _Pending(None))
            return
        self.renderer.emit(
            "stdin-wanted",
            run=self.renderer.run,
            id=None if run is None else run.request.id,
            test_id=test_id,
            prompt="" if run is None else run.prompts.get(str(test_id), ""),
        )

    def _on_complete(self, completed: Completed) -> None:
        pending, body = completed.context, completed.body
        if not isinstance(pending, _Pending) or not pending.settle(body, completed.packets):
            return
        run = pending.run
        if run is not None:
            for test_id, _ in list(run.decoders):
                self._flush_output(run, test_id)
            run.tally.complete = body
            run.tally.elapsed = time.perf_counter() - run.began
            self.renderer.finish(run.tally)
            self._complete(run.request, {**body, "ok": run.tally.ok})
        elif pending.request is not None:
            self._complete(pending.request, body)
        pending.done.set()

    def _server_gone(self, client: Client, error: ClientError) -> None:
        """The stream ended: every command in ``error.lost`` fails (the session's list)."""
        with self.lock:
            if client is not self.client:
                return
            self.dead = True
        if not self.quitting:
            if self.run is not None:
                self.renderer.message(f"the server failed: {error}")
            self.renderer.emit("error", id=None, code="server-died", message=str(error))
        for lost in error.lost:
            if isinstance(lost.context, _Pending):
                self._fail(lost.context, "server-died", str(error))


# -- command line ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``testserver bridge``."""
    parser = argparse.ArgumentParser(
        prog="testserver bridge",
        description="Serve editors: read JSON commands on stdin, one per line, and write JSON "
        "events on stdout, on one warm testserver (spec/json-output.md, section 6).",
    )
    add_server_arguments(parser)
    add_reload_arguments(
        parser, "do not reload changed modules (restart the bridge to pick up changes)"
    )
    return parser


def main(
    argv: Sequence[str] | None = None, *, stdin_fd: int | None = None, stdout: TextIO | None = None
) -> int:
    """Entry point of ``testserver bridge``: 0 after ``quit`` or end of input, 1 after
    SIGINT, 2 if the server cannot start."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    server_args = server_arguments(args) + reload_arguments(args)
    if stdout is None:
        stdout = sys.stdout
        if hasattr(stdout, "reconfigure"):
            stdout.reconfigure(encoding="utf-8", errors="strict")
    roots = [args.top or args.start or ".", *args.watch]
    bridge = Bridge(lambda: Client.spawn(server_args, stderr=None), stdout, Locator(roots))
    try:
        bridge.attach(bridge.spawn())
    except (OSError, ClientError) as error:
        print(f"testserver bridge: cannot start the server: {error}", file=sys.stderr)
        return EXIT_ERROR
    fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
    threading.Thread(target=bridge.read_commands, args=(fd,), daemon=True).start()
    try:
        return bridge.serve()
    except KeyboardInterrupt:
        bridge.quitting = True
        if bridge.client is not None:
            bridge.client.close(QUIT_TIMEOUT)
        return EXIT_FAILED
