"""The daemon's warm servers: ``python -m testserver --serve`` processes, pooled by key.

:class:`WarmServer` starts one server, waits for its hello, copies its stderr into the daemon
log (:class:`StderrPump`) and stops it (``quit``, then kill). :class:`Pool` hands servers to
the requests of :mod:`testserver.backends.daemon`, one request per server at a time: an idle server
of the request's :class:`ServerKey` if there is one, else a new one, up to
:data:`MAX_SERVERS_PER_KEY` (beyond that the request waits). It drops servers found dead,
stops those idle too long, and keeps at most :data:`MAX_SERVERS`. The daemon's :func:`log`
is here too, since both modules write to it.
"""

from __future__ import annotations

import collections
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

from testserver.clients.client import Client, ClientError
from testserver.wire.commands import Quit
from testserver.wire.constants import EXIT_USAGE

MAX_SERVERS_PER_KEY = max(2, os.cpu_count() or 2)
"""Servers per key: testr's default concurrency is the CPU count; more would only queue."""

MAX_SERVERS = 32
"""Servers across all keys; beyond this the least recently used idle ones are stopped."""

HELLO_TIMEOUT = 600.0
"""Seconds a new server may take to import the tests and say hello before it is killed."""

QUIT_TIMEOUT = 10.0
"""How long a stopping server may take to exit before it is killed."""

STDERR_TAIL = 4000
"""Characters of a server's stderr quoted when it fails (and the cap on ``stderr`` sent)."""

KEY_ENV_PREFIX = "PYTHON"
"""Environment variables with this prefix (PYTHONPATH, ...) are part of a server's key."""

_log_lock = threading.Lock()


def log(message: str) -> None:
    """One timestamped line on stderr (the daemon's log file when detached)."""
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} testserver-daemon[{os.getpid()}]: {message}\n"
    with _log_lock:
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


def describe_returncode(code: int | None) -> str:
    """Say in words how a process with ``Popen.returncode`` ``code`` ended."""
    if code is None:
        return "it is still running"
    if code < 0:
        try:
            return f"it was killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"it was killed by signal {-code}"
    return f"it exited with status {code}"


# --------------------------------------------------------------------------- warm servers


@dataclass(frozen=True)
class ServerKey:
    """What makes two requests able to share a warm server."""

    project: str
    python: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]

    @classmethod
    def from_request(cls, request: dict[str, Any]) -> ServerKey:
        """The key of a request, its paths resolved: ``calc/tests``, ``./calc/tests`` and
        ``/abs/calc/tests`` (from the same directory, or through a symbolic link) share it."""
        env = request["env"]
        project = os.path.realpath(request["cwd"])
        return cls(
            project=project,
            python=request["python"],
            args=canonical_args(project, request["server_args"]),
            env=tuple(sorted((k, v) for k, v in env.items() if k.startswith(KEY_ENV_PREFIX))),
        )


PATH_OPTIONS = frozenset({"-s", "--start-directory", "-t", "--top-level-directory", "--watch"})
"""``--serve`` options whose value is a directory, resolved in a :class:`ServerKey`."""


def canonical_args(cwd: str, args: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``args`` with the directory of every :data:`PATH_OPTIONS` option made absolute and
    resolved against ``cwd``, and ``--opt=value`` split in two."""
    result: list[str] = []
    pending = False
    for arg in args:
        option, equals, value = arg.partition("=")
        if pending:
            arg = os.path.realpath(os.path.join(cwd, arg))
        elif equals and option in PATH_OPTIONS:
            result.append(option)
            arg = os.path.realpath(os.path.join(cwd, value))
        pending = not pending and not equals and arg in PATH_OPTIONS
        result.append(arg)
    return tuple(result)


class StartFailed(Exception):
    """A server could not be started; ``usage`` when it rejected its arguments (exit 2)."""

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage


class StderrPump(threading.Thread):
    """Copies a server's stderr into the daemon log and keeps its tail for error messages."""

    def __init__(self, stream: IO[bytes], pid: int) -> None:
        super().__init__(name=f"stderr-{pid}", daemon=True)
        self.stream = stream
        self.pid = pid
        self.lines: collections.deque[str] = collections.deque(maxlen=50)

    def run(self) -> None:
        for raw in self.stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            log(f"[server {self.pid}] {line}")
        self.stream.close()

    def tail(self) -> str:
        return "\n".join(self.lines)[-STDERR_TAIL:]


class WarmServer:
    """One ``python -m testserver --serve`` process and the client talking to it."""

    def __init__(self, key: ServerKey, process: subprocess.Popen[bytes], pump: StderrPump):
        self.key = key
        self.process = process
        self.pump = pump
        self.client: Client | None = None
        self.busy = False
        self.known_ids: frozenset[str] | None = None
        """The ids of its latest listing for ``testserver run`` (changed sources aside)."""
        self.runs = 0
        self.started = time.time()
        self.last_used = time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def hello(self) -> dict[str, Any]:
        """The server's latest hello (its client follows restarts)."""
        return {} if self.client is None else self.client.hello

    @property
    def generation(self) -> int | None:
        """The server's source generation, as its client's session last saw it."""
        return None if self.client is None else self.client.session.generation

    @property
    def version(self) -> str:
        """The subunit dialect the server writes, for re-encoding its packets."""
        return str(self.hello.get("subunit", "2.1"))

    @classmethod
    def start(cls, key: ServerKey, env: dict[str, str]) -> WarmServer:
        """Start a server for ``key`` and wait for its hello; raise :class:`StartFailed`."""
        argv = [key.python, "-m", "testserver", "--serve", *key.args]
        try:
            process = subprocess.Popen(
                argv,
                cwd=key.project,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as error:
            raise StartFailed(f"cannot start {' '.join(argv)}: {error}") from None
        assert process.stdin and process.stdout and process.stderr
        pump = StderrPump(process.stderr, process.pid)
        pump.start()
        server = cls(key, process, pump)
        log(f"starting server {process.pid}: {' '.join(argv)} (in {key.project})")
        ready, _, _ = select.select([process.stdout], [], [], HELLO_TIMEOUT)
        try:
            if not ready:
                raise TimeoutError(f"no hello within {HELLO_TIMEOUT:g} s")
            server.client = Client(process.stdout.fileno(), process.stdin.fileno())
        except (ClientError, OSError, TimeoutError) as error:
            how = server.death()  # waits a little: a server that said nothing is exiting
            server.close(graceful=False)
            if process.returncode == EXIT_USAGE:
                raise StartFailed(pump.tail() or str(error), usage=True) from None
            command = " ".join(argv)
            raise StartFailed(f"the test server ({command}) failed to start: {how}") from None
        log(f"server {process.pid} ready: {server.hello.get('tests')} tests")
        return server

    def alive(self) -> bool:
        return self.process.poll() is None

    def death(self) -> str:
        """Why the server is gone, for a client's error message."""
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.pump.join(1)
        tail = self.pump.tail()
        how = describe_returncode(self.process.returncode)
        return f"{how}; its stderr:\n{tail}" if tail else how

    def close(self, *, graceful: bool = True) -> None:
        """Stop the server (``quit``, then kill after :data:`QUIT_TIMEOUT`) and close pipes."""
        process = self.process
        if graceful and self.client is not None and process.poll() is None:
            try:
                self.client.send(Quit(self.client.new_id()))
            except (ClientError, OSError):
                pass
        elif process.poll() is None:
            process.kill()
        _close(process.stdin)  # end of input: the server exits even if it missed the quit
        try:
            process.wait(QUIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        _close(process.stdout)
        self.pump.join(1)

    def status(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "project": self.key.project,
            "python": self.key.python,
            "args": list(self.key.args),
            "busy": self.busy,
            "runs": self.runs,
            "tests": self.hello.get("tests"),
            "generation": self.generation,
            "started": self.started,
            "idle_for": None if self.busy else round(time.monotonic() - self.last_used, 3),
        }


def _close(stream: IO[bytes] | None) -> None:
    try:
        if stream is not None:
            stream.close()
    except OSError:
        pass


class Pool:
    """Warm servers by key; at most one request uses a server at a time."""

    def __init__(self, max_per_key: int = MAX_SERVERS_PER_KEY, max_total: int = MAX_SERVERS):
        self.max_per_key = max_per_key
        self.max_total = max_total
        self.closed = False
        self._servers: list[WarmServer] = []
        self._starting: collections.Counter[ServerKey] = collections.Counter()
        self._cond = threading.Condition()

    def acquire(self, key: ServerKey, env: dict[str, str]) -> tuple[WarmServer, bool]:
        """A server for ``key`` reserved for the caller, and whether it was already warm."""
        with self._cond:
            while True:
                if self.closed:
                    raise StartFailed("the daemon is stopping")
                self._drop_dead()
                idle = [s for s in self._servers if s.key == key and not s.busy]
                if idle:
                    server = max(idle, key=lambda s: s.last_used)
                    server.busy = True
                    return server, True
                count = sum(s.key == key for s in self._servers) + self._starting[key]
                if count < self.max_per_key:
                    self._starting[key] += 1
                    break
                self._cond.wait()
        try:
            server = WarmServer.start(key, env)
        finally:
            with self._cond:
                self._starting[key] -= 1
                self._cond.notify_all()
        with self._cond:
            server.busy = True
            self._servers.append(server)
            victims = self._over_limit()
        for victim in victims:
            victim.close()
        return server, False

    def release(self, server: WarmServer) -> None:
        """Give ``server`` back after a request it served fully."""
        with self._cond:
            server.busy = False
            server.runs += 1
            server.last_used = time.monotonic()
            closing = self.closed
            if closing:
                self._servers.remove(server)
            self._cond.notify_all()
        if closing:
            server.close()

    def discard(self, server: WarmServer) -> None:
        """Drop a server that died or misbehaved (the next request starts another)."""
        with self._cond:
            if server in self._servers:
                self._servers.remove(server)
            self._cond.notify_all()
        server.close(graceful=False)

    def evict_idle(self, max_idle: float) -> None:
        """Stop servers unused for longer than ``max_idle`` seconds."""
        now = time.monotonic()
        with self._cond:
            victims = [s for s in self._servers if not s.busy and now - s.last_used > max_idle]
            for server in victims:
                self._servers.remove(server)
        for server in victims:
            log(f"server {server.pid} idle for {max_idle:g} s: stopping it")
            server.close()

    def close_all(self) -> None:
        """Stop idle servers now and busy ones with SIGTERM (their requests then end)."""
        with self._cond:
            self.closed = True
            idle = [s for s in self._servers if not s.busy]
            for server in idle:
                self._servers.remove(server)
            for server in self._servers:
                if server.alive():
                    server.process.terminate()
            self._cond.notify_all()
        for server in idle:
            server.close()

    def status(self) -> list[dict[str, Any]]:
        with self._cond:
            return [server.status() for server in self._servers]

    def _drop_dead(self) -> None:
        for server in [s for s in self._servers if not s.busy and not s.alive()]:
            self._servers.remove(server)
            log(f"server {server.pid} died while idle ({server.death()}); it will be replaced")
            server.close(graceful=False)

    def _over_limit(self) -> list[WarmServer]:
        idle = sorted((s for s in self._servers if not s.busy), key=lambda s: s.last_used)
        victims = idle[: max(0, len(self._servers) - self.max_total)]
        for server in victims:
            self._servers.remove(server)
        return victims
