"""The warm-server daemon behind ``testserver-client``: a pool of loaded servers per project.

testr and stestr start a new backend process per listing and per partition. The daemon keeps
``python -m testserver --serve`` processes alive between those runs, so the backend
(:mod:`testserver.backends.testr`) only forwards a request over a Unix socket and copies the stream
back. The request protocol and the socket's location are described in
:mod:`testserver.backends.testr`.

- **Keys.** A warm server is chosen by (project directory, Python executable, ``--serve``
  arguments, environment variables whose names start with ``PYTHON``). A new server gets the
  environment of the request that started it.
- **Pool.** Requests with the same key that arrive together (``testr run --parallel``) get
  different servers: an idle one if there is one, else a new one, up to
  :data:`~testserver.backends.pool.MAX_SERVERS_PER_KEY`; beyond that they wait. So parallel runs
  really run in parallel, and the next parallel run finds all its servers warm.
- **Failures.** A server found dead is dropped and replaced by the next request. A server that
  dies during a request is reported in-stream as a failing test ``testserver.daemon`` with the
  reason (exit status 1); if it was already gone when the request's command was sent (so
  nothing ran), the request is retried once on a fresh server. A server that cannot load the
  tests (``python -m testserver`` exit 2) gives the client exit status 2 and the server's
  message on stderr, as one-shot mode would.
- **Cancellation.** When a client disconnects in the middle of a run (testr was interrupted),
  the daemon cancels the batch and keeps the server.
- **Lifetime.** Started on demand by the client (detached, logging to ``daemon.log``), stopped
  by ``testserver daemon stop``, SIGTERM, or after ``--idle`` seconds without list or run
  requests (default 900; ``status`` does not count). Servers unused that long are stopped too,
  and at most :data:`~testserver.backends.pool.MAX_SERVERS` are kept. Stopping quits every server,
  and every server reaps its workers: no process is left.

Commands: ``testserver daemon start|stop|status [--project DIR] [--socket-dir DIR]`` and
``serve`` (run in the foreground, as ``start`` does detached), in
:mod:`testserver.backends.daemonctl`.

This module is the socket server: accepting connections (:class:`Daemon`), serving one request
each (:class:`Connection`), the idle shutdown and the commands. The warm servers themselves and
their pool (keys, limits, eviction) are in :mod:`testserver.backends.pool`.
"""

from __future__ import annotations

import collections
import json
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from testserver import __version__
from testserver.backends import testr
from testserver.backends.pool import (
    EXIT_USAGE,
    QUIT_TIMEOUT,
    STDERR_TAIL,
    Pool,
    ServerKey,
    StartFailed,
    WarmServer,
    log,
)
from testserver.clients.client import Client, ClientError, Reply
from testserver.wire.clientsession import Received, StreamPacket
from testserver.wire.commands import ListTests, RunTests
from testserver.wire.control import COMPLETE, encode_control
from testserver.wire.events import Packet
from testserver.wire.packets import TEXT_MIME, encode_packet, encode_status, file_packets
from testserver.wire.synthetic import failing_test

MAX_REQUEST = 64 << 20
"""Largest request line: 64 MiB holds a ``--load-list`` of a few hundred thousand ids."""

REQUEST_TIMEOUT = 30.0
"""Seconds a client has to send its request line after connecting."""

DISCONNECT_POLL = 0.5
"""While a test runs silently, how often the daemon checks whether the client went away."""

CANCEL_TIMEOUT = 30.0
"""After a client went away, how long a cancelled batch may take before its server is killed."""

TICK = 1.0
"""The main loop wakes up at least this often to check the idle timeout."""

FAILED_IMPORT_PREFIX = "unittest.loader._FailedTest."
"""Ids unittest gives the tests standing for modules that failed to import."""


# --------------------------------------------------------------------------- one request


class ConnectionGone(Exception):
    """The client closed its connection: nobody reads the stream any more."""


class NotDelivered(Exception):
    """The server was gone before it could read the request's command: safe to retry."""


class BadRequestLine(Exception):
    """The request line is not a valid request; the message says why."""


def _strings(value: object) -> bool:
    """Whether ``value`` is a list of strings."""
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def check_request(request: object) -> dict[str, Any]:
    """Validate a decoded request line; return it or raise :class:`BadRequestLine`."""
    if not isinstance(request, dict) or request.get("v") != testr.DAEMON_PROTOCOL:
        raise BadRequestLine(f"expected a version {testr.DAEMON_PROTOCOL} request object")
    if request.get("op") not in ("run", "list", "status", "stop", "console"):
        raise BadRequestLine(f"unknown op {request.get('op')!r}")
    if request["op"] in ("status", "stop"):
        return request
    console = request["op"] == "console"
    checks: list[tuple[str, Callable[[Any], bool]]] = [
        ("cwd", lambda v: isinstance(v, str) and os.path.isabs(v)),
        ("python", lambda v: isinstance(v, str) and bool(v)),
        ("argv" if console else "server_args", _strings),
        ("command", lambda v: v == "run")
        if console
        else ("ids", lambda v: v is None or _strings(v)),
        (
            "env",
            lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.items() for x in x),
        ),
        ("idle", lambda v: v is None or (isinstance(v, (int, float)) and v > 0)),
    ]
    for name, valid in checks:
        if not valid(request.get(name)):
            raise BadRequestLine(f"bad {name!r} in request: {request.get(name)!r:.200}")
    return request


class Connection:
    """Serves one connection: read the request, answer it, close."""

    def __init__(self, daemon: Daemon, conn: socket.socket) -> None:
        self.daemon = daemon
        self.conn = conn
        self.out: list[bytes] = []
        """Packets for the client not sent yet (sent before each blocking read)."""
        self.running: Reply | None = None
        """The ``run-tests`` in progress on the server."""

    def handle(self) -> None:
        try:
            request = self._read_request()
            self._dispatch(request)
        except ConnectionGone:
            pass
        except BadRequestLine as error:
            self._finish({"exit": EXIT_USAGE, "stderr": f"testserver daemon: {error}\n"})
        except Exception:  # noqa: BLE001 - a bug must not take the daemon down
            log(f"internal error:\n{traceback.format_exc()}")
            self.out.clear()
            self._finish({"exit": 1, "stderr": "testserver daemon: internal error (see log)\n"})
        finally:
            self.conn.close()

    def _read_request(self) -> dict[str, Any]:
        self.conn.settimeout(REQUEST_TIMEOUT)
        data = bytearray()
        try:
            while b"\n" not in data:
                chunk = self.conn.recv(testr.READ_SIZE)
                if not chunk:
                    raise ConnectionGone
                data += chunk
                if len(data) > MAX_REQUEST:
                    raise BadRequestLine(f"request longer than {MAX_REQUEST} bytes")
        except OSError as error:  # includes the timeout
            raise ConnectionGone from error
        self.conn.settimeout(None)
        try:
            request = json.loads(data[: data.index(b"\n")])
        except ValueError as error:
            raise BadRequestLine(f"the request is not JSON: {error}") from None
        return check_request(request)

    def _dispatch(self, request: dict[str, Any]) -> None:
        op = request["op"]
        if op == "status":
            self._send_line(self.daemon.status())
        elif op == "stop":
            self._send_line({"stopping": True, "pid": os.getpid()})
            self.daemon.request_stop("testserver daemon stop")
        elif op == "console":
            from testserver.backends import daemonconsole

            self.daemon.touch()
            try:
                daemonconsole.serve(self.daemon, self.conn, request)
            finally:
                self.daemon.touch()
        elif request.get("version") != __version__:
            reason = (
                f"the daemon runs testserver {__version__} but this client is "
                f"{request.get('version')}; run `testserver daemon stop` to restart it"
            )
            self._finish({"exit": 1, "fallback": True, "reason": reason})
        else:
            if request.get("idle"):
                self.daemon.idle = float(request["idle"])
            self._tests(request)

    def _tests(self, request: dict[str, Any]) -> None:
        self.daemon.touch()
        try:
            self._serve_tests(request)
        finally:
            self.daemon.touch()

    def _serve_tests(self, request: dict[str, Any]) -> None:
        key = ServerKey.from_request(request)
        ids = request["ids"]
        if ids == [] and request["op"] == "run":  # an empty --load-list runs nothing
            self._finish({"exit": 0})
            return
        for attempt in (1, 2):
            try:
                server, warm = self.daemon.pool.acquire(key, request["env"])
            except StartFailed as error:
                if error.usage:
                    self._finish({"exit": EXIT_USAGE, "stderr": error.message[-STDERR_TAIL:]})
                else:
                    self._fail(error.message)
                return
            try:
                if request["op"] == "list":
                    code = self._list(server, ids)
                else:
                    code = self._run(server, ids)
            except ConnectionGone:
                self._abandon(server)
                return
            except (NotDelivered, ClientError, OSError) as error:
                stopping = self.daemon.stop_reason
                reason = f"the daemon is stopping ({stopping})" if stopping else server.death()
                self.daemon.pool.discard(server)
                log(f"server {server.pid} failed during a request ({error}): {reason}")
                if isinstance(error, NotDelivered) and attempt == 1:
                    continue  # it died before our command reached it: nothing ran
                self._fail(
                    f"the warm test server (pid {server.pid}) for {key.project} stopped in the "
                    f"middle of this request: {reason}\nTests not reported did not run. The "
                    "daemon starts a fresh server for the next request."
                )
                return
            self.daemon.pool.release(server)
            self._finish({"exit": code, "warm": warm, "server_pid": server.pid})
            return

    # -- list and run ---------------------------------------------------------------------

    def _list(self, server: WarmServer, ids: list[str] | None) -> int:
        client = server.client
        assert client is not None
        listed = []
        for packet in self._collect(self._deliver(client, ListTests(client.new_id()))):
            if packet.status == "exists" and packet.test_id:
                listed.append(packet.test_id)
            elif packet.test_id is None:  # output written while loading
                self.out.append(encode_packet(packet, subunit_version=server.version))
        selected = listed
        if ids is not None:
            known = set(listed)
            selected = [test_id for test_id in ids if test_id in known]
        version = server.version
        self.out += [
            encode_status(test_id, "exists", subunit_version=version) for test_id in selected
        ]
        # The listing reflects any reload since the hello: its import failures are current.
        errors = [{"test_id": i} for i in listed if i.startswith(FAILED_IMPORT_PREFIX)]
        if not errors:
            return 0
        text = self._import_errors(server, errors)
        self.out += file_packets(
            "import errors", text, mime_type=TEXT_MIME, subunit_version=version
        )
        return EXIT_USAGE

    def _import_errors(self, server: WarmServer, errors: list[dict[str, Any]]) -> bytes:
        """The loader's tracebacks, got by running the synthetic tests of the failed imports."""
        client = server.client
        assert client is not None
        failed = tuple(e["test_id"] for e in errors if e.get("test_id"))
        tracebacks: dict[str, bytes] = collections.defaultdict(bytes)
        if failed:
            reply = client.follow(RunTests(client.new_id(), failed))
            client.send_stdin(b"")
            for packet in self._collect(reply):
                if packet.file_name == "traceback" and packet.test_id:
                    tracebacks[packet.test_id] += packet.file_bytes
        parts = []
        for error in errors:
            text = tracebacks.get(error.get("test_id") or "")
            if text:
                parts.append(text.decode("utf-8", "replace"))
            else:
                module, message = error.get("module"), error.get("message")
                parts.append(f"Failed to import test module: {module}\n{message}")
        return "\n".join(parts).encode()

    def _run(self, server: WarmServer, ids: list[str] | None) -> int:
        client = server.client
        assert client is not None
        reply = self._deliver(client, RunTests(client.new_id(), tuple(ids or ())))
        self.running = reply
        client.send_stdin(b"")  # tests see end of input, as under testr and stestr
        while (received := self._next(reply)) is not None:
            if isinstance(received, StreamPacket):
                self.out.append(encode_packet(received.packet, subunit_version=server.version))
        self.running = None
        return 0 if (reply.complete or {}).get("status") == "ok" else 1

    @staticmethod
    def _deliver(client: Client, command: ListTests | RunTests) -> Reply:
        """Send the request's first command; a server that cannot take it has not run it."""
        try:
            return client.follow(command)
        except (ClientError, OSError) as error:
            raise NotDelivered(str(error)) from error

    @staticmethod
    def _collect(reply: Reply) -> list[Packet]:
        """The packets (control events left out) up to the completion of ``reply``'s command."""
        return [got.packet for _, got in reply.events() if isinstance(got, StreamPacket)]

    def _next(self, reply: Reply) -> Received | None:
        """What the next packet of ``reply`` is, ``None`` at its completion; before blocking,
        send what is pending and watch the client."""
        try:
            item = reply.step(timeout=0)
        except TimeoutError:
            self._flush()
            while True:
                try:
                    item = reply.step(timeout=DISCONNECT_POLL)
                    break
                except TimeoutError:
                    if self._peer_closed():
                        raise ConnectionGone from None
        return None if item is None else item[1]

    def _abandon(self, server: WarmServer) -> None:
        """The client left during a run: cancel it, wait for the completion, keep the server."""
        client = server.client
        assert client is not None
        log(f"client went away; cancelling the batch on server {server.pid}")
        deadline = time.monotonic() + CANCEL_TIMEOUT
        try:
            client.cancel()
            while self.running is not None and self.running.completed is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("the cancelled batch did not complete")
                self.running.step(timeout=remaining)
        except (ClientError, OSError, TimeoutError) as error:
            log(f"server {server.pid}: {error}; stopping it")
            self.daemon.pool.discard(server)
            return
        self.daemon.pool.release(server)

    # -- output ---------------------------------------------------------------------------

    def _flush(self) -> None:
        if not self.out:
            return
        data = b"".join(self.out)
        self.out.clear()
        try:
            self.conn.sendall(data)
        except OSError as error:
            raise ConnectionGone from error

    def _peer_closed(self) -> bool:
        ready, _, _ = select.select([self.conn], [], [], 0)
        if not ready:
            return False
        try:
            return self.conn.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _fail(self, reason: str) -> None:
        """End the stream with a failing test ``testserver.daemon`` carrying ``reason``."""
        self.out += failing_test(testr.ERROR_TEST_ID, reason)
        self._finish({"exit": 1})

    def _finish(self, body: dict[str, Any]) -> None:
        if "stderr" in body:
            body["stderr"] = str(body["stderr"])[-STDERR_TAIL:]
            if not body["stderr"].endswith("\n"):
                body["stderr"] += "\n"
        self.out.append(encode_control(COMPLETE, body))
        try:
            self._flush()
        except ConnectionGone:
            pass

    def _send_line(self, body: dict[str, Any]) -> None:
        try:
            self.conn.sendall(json.dumps(body).encode() + b"\n")
        except OSError:
            pass


# --------------------------------------------------------------------------- the daemon


class Daemon:
    """Accepts connections on the listening socket until stopped or idle."""

    def __init__(self, listener: socket.socket, directory: str, idle: float) -> None:
        self.listener = listener
        self.directory = directory
        self.idle = idle
        self.pool = Pool()
        self.started = time.time()
        self.stop_reason: str | None = None
        self._active = 0
        self._last_activity = time.monotonic()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def serve(self) -> int:
        """Run until stopped; then stop every server. Returns the exit status (0)."""
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(number, lambda n, f: self.request_stop(signal.Signals(n).name))
        log(f"listening on {self.socket_path()} (idle timeout {self.idle:g} s)")
        while self.stop_reason is None:
            ready, _, _ = select.select([self.listener, self._wake_r], [], [], TICK)
            if self.listener in ready:
                self._accept()
            self._check_idle()
        log(f"stopping: {self.stop_reason}")
        self._shutdown()
        log("stopped")
        return 0

    def request_stop(self, reason: str) -> None:
        """Ask the main loop to stop (thread- and signal-safe)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._wake()

    def _wake(self) -> None:
        """Make the main loop's ``select`` return now."""
        try:
            os.write(self._wake_w, b"x")
        except OSError:  # the pipe is full: it will wake up anyway
            pass

    def touch(self) -> None:
        """Note a list or run request: the idle time counts from the last one."""
        with self._lock:
            self._last_activity = time.monotonic()

    def socket_path(self) -> str:
        return os.path.join(self.directory, testr.SOCKET_NAME)

    def status(self) -> dict[str, Any]:
        with self._lock:
            active, idle_for = self._active, time.monotonic() - self._last_activity
        return {
            "running": True,
            "pid": os.getpid(),
            "version": __version__,
            "socket": self.socket_path(),
            "log": os.path.join(self.directory, testr.LOG_NAME),
            "started": self.started,
            "idle_timeout": self.idle,
            "idle_for": 0.0 if active else round(idle_for, 3),
            "connections": active,
            "max_servers_per_key": self.pool.max_per_key,
            "servers": self.pool.status(),
        }

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with self._lock:
            self._active += 1
        thread = threading.Thread(target=self._session, args=(conn,), daemon=True)
        self._threads.add(thread)
        thread.start()

    def _session(self, conn: socket.socket) -> None:
        try:
            Connection(self, conn).handle()
        finally:
            with self._lock:
                self._active -= 1
            self._threads.discard(threading.current_thread())
            self._wake()  # re-check the idle time now

    def _check_idle(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            idle = self._active == 0 and time.monotonic() - self._last_activity >= self.idle
        if idle:
            self.request_stop(f"no request for {self.idle:g} s")
        self.pool.evict_idle(self.idle)

    def _shutdown(self) -> None:
        self.listener.close()
        try:
            os.unlink(self.socket_path())
        except OSError:
            pass
        self.pool.close_all()
        deadline = time.monotonic() + QUIT_TIMEOUT + CANCEL_TIMEOUT
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        self.pool.close_all()  # anything a session released or started meanwhile


if __name__ == "__main__":  # python -m testserver.backends.daemon start|stop|status|serve
    from testserver.backends.daemonctl import main

    sys.exit(main())
