"""Warm runs for testrepository and stestr: ``testserver-client`` and ``testserver-stestr-python``.

testr and stestr start a fresh backend process for every listing and every partition and close
its stdin, so they cannot talk to a long-running server themselves. These two commands are
that backend: each one asks the warm-server daemon (:mod:`testserver.backends.daemon`) to list or
run the tests on a server that already imported them, copies the subunit stream to stdout and
exits with the status one-shot mode would have given::

    testserver-client [discover [START [PATTERN [TOP]]]] [-s START] [-t TOP] [-p PATTERN]
                      [--list] [--load-list FILE] [--daemon-idle SECONDS] [NAME ...]
    testserver-stestr-python -m stestr.subunit_runner.run discover -t TOP PATH [--list |
                      --load-list FILE]

``.testr.conf``: ``test_command=testserver-client discover -t . -s pkg/tests $LISTOPT
$IDOPTION``; stestr: ``PYTHON=testserver-stestr-python stestr run``. The stestr shim hands
any other ``-m MODULE ...`` (or anything else) to the real Python unchanged, with ``exec``.
Without the console scripts, ``python -m testserver.backends.testr`` is the client and ``python -m
testserver.backends.testr --stestr`` the shim.

The daemon is started on demand (detached, logging to ``daemon.log`` beside its socket) and
stops after ``--daemon-idle`` seconds without requests (default 900). When it cannot be
reached or started, or ``TESTSERVER_NO_DAEMON`` or ``TESTSERVER_SHARD`` (see
:data:`SHARD_ENV`) is set, the command runs one-shot mode in this process (``python -m
testserver ...``); it says so on stderr when the daemon failed, and for ``--shard``, an
option the daemon does not serve. Exit status: as one-shot mode (0; 2 for ``--list`` with
import errors, and for usage errors), or 1 when the warm server died or the daemon went
away mid-stream (then the stream also has a failing test saying so).

**Where the daemon listens.** A Unix socket ``daemon.sock`` in a directory only its user can
enter (mode 0700, checked before every connect): ``<project>/.testserver/``, the project
being the nearest directory above the working directory with a ``pyproject.toml``, ``.git``,
``.testr.conf``... (:mod:`testserver.clients.project`; ``TESTSERVER_DAEMON_DIR`` overrides it).
Never a TCP port.

**The daemon protocol** (version :data:`DAEMON_PROTOCOL`), one request per connection:

1. The client sends one line of JSON (UTF-8, ending with LF, at most 64 MiB)::

       {"v": 1, "version": "<testserver version>", "op": "run" | "list" | "status" | "stop",
        "cwd": "/abs/project", "python": "/abs/bin/python",
        "server_args": ["-s", "calc/tests", "-p", "test*.py", "-t", "."],
        "ids": ["pkg.T.test_a", ...] | null, "env": {"NAME": "value", ...},
        "idle": 900 | null}

   ``cwd``, ``python`` and ``server_args`` (the arguments of ``python -m testserver
   --serve``) plus the environment variables whose names start with ``PYTHON`` choose the
   warm server; ``env`` is the environment a new server gets. ``ids`` is the ``--load-list``
   content (``null``: every test). ``idle`` replaces the daemon's idle timeout.
   ``status`` and ``stop`` need only ``v``, ``version`` and ``op``.
2. For ``run`` and ``list`` the daemon answers with raw subunit v2 (2.1) packets, exactly
   what one-shot mode would write (no control events), then one final control packet
   ``testserver.complete`` (a file packet with no test id, MIME type ``application/json``)
   whose JSON body has ``exit`` (the exit status), and optionally ``stderr`` (text for the
   client's stderr), ``warm`` (an already running server was used), ``server_pid`` and
   ``fallback`` (true: nothing was run; the client should run one-shot mode itself, e.g.
   because the daemon runs another testserver version; ``reason`` says why). The client
   consumes that packet and does not forward it. A stream that ends without it means the
   daemon died. For ``status`` and ``stop`` the answer is one line of JSON.
3. The daemon closes the connection. If the client closes first, the daemon cancels the run.

Startup cost is the point: this module imports only ``os``, ``sys``, ``socket``, ``json`` and
``zlib`` on the happy path (no testtools, subunit, unittest, dataclasses or argparse; check
with ``python -X importtime -m testserver.backends.testr --list``). It therefore reads the final
packet with a few lines of its own instead of the full decoder of :mod:`testserver.wire.packets`.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import zlib

from testserver import __version__
from testserver.clients import project
from testserver.clients.project import MAX_UNIX_PATH, unix_address  # noqa: F401  (re-exported)
from testserver.wire.constants import EXIT_USAGE, READ_SIZE
from testserver.wire.packetformat import (
    FLAG_FILE_CONTENT,
    FLAG_MIME_TYPE,
    FLAG_TIMESTAMP,
    LENGTH_OFFSET,
    SIGNATURE,
    TEST_SCOPED_FLAGS,
    TIMESTAMP_SECONDS_SIZE,
    VERSION_2,
    VERSION_MASK,
    varint,
)

DAEMON_PROTOCOL = 1
"""Version of the one-request-per-connection protocol between client and daemon."""

SOCKET_NAME = "daemon.sock"
LOCK_NAME = "daemon.lock"
"""Held (``flock``) by the running daemon for its whole life: one daemon per directory."""
LOG_NAME = "daemon.log"

DEFAULT_IDLE = 900.0
"""Seconds without requests after which the daemon stops: 15 minutes of a coffee break."""

START_TIMEOUT = 15.0
"""How long a client waits for a daemon it started to accept connections."""

CONNECT_POLL = 0.01
"""Seconds between connection attempts while a daemon starts."""

TRAILER_MAX = 1 << 16
"""Bytes held back from stdout until the end: the final packet is always shorter than this
(its ``stderr`` text is cut to a few KiB by the daemon)."""

NO_DAEMON_ENV = "TESTSERVER_NO_DAEMON"
"""Set (non-empty) to skip the daemon and always run one-shot mode."""

SHARD_ENV = "TESTSERVER_SHARD"
"""As :data:`testserver.cli.SHARD_ENV`: a shard is listed and run by one-shot mode, so that
the listing and every run of its parts divide the suite alike."""

STESTR_RUNNER = "stestr.subunit_runner.run"
"""The module stestr runs as ``$PYTHON -m stestr.subunit_runner.run discover ...``."""

COMPLETE = b"testserver.complete"
ERROR_TEST_ID = "testserver.daemon"
"""Id of the failing test that reports a warm server or the daemon dying mid-request."""

EXIT_ERROR = 1

_IGNORED_FLAGS = ("-v", "-q", "-b", "-c", "-f", "--locals")
"""``subunit.run``'s display options: accepted and ignored, as one-shot mode does."""

_SERVER_OPTIONS = ("--isolation", "--timeout", "--subunit-version", "--subtests")
"""Options passed through to the warm server (and so part of what selects it)."""

_LOAD_OPTIONS = {
    "-s": "start",
    "--start-directory": "start",
    "-t": "top",
    "--top-level-directory": "top",
    "-p": "pattern",
    "--pattern": "pattern",
}

_VALUE_OPTIONS = frozenset({*_LOAD_OPTIONS, *_SERVER_OPTIONS, "--load-list"})


class UsageError(Exception):
    """The command line is wrong; the message says how."""


class Unsupported(Exception):
    """The command line asks for something only one-shot mode does (``argv`` is for it)."""

    def __init__(self, message: str, argv: list[str]) -> None:
        super().__init__(message)
        self.argv = argv


class DaemonUnavailable(Exception):
    """The daemon cannot be reached or started; the message says why."""


class Invocation:
    """What one ``testserver-client`` command line asks for."""

    __slots__ = ("argv", "idle", "list_only", "load_list", "server_args")

    def __init__(self) -> None:
        self.argv: list[str] = []
        """The arguments for one-shot mode (``--daemon-idle`` removed)."""
        self.list_only = False
        self.load_list: str | None = None
        self.server_args: list[str] = []
        """The arguments of ``python -m testserver --serve`` for the warm server."""
        self.idle: float | None = None


# --------------------------------------------------------------------------- arguments


def parse_args(argv: list[str]) -> Invocation:
    """Parse a ``testserver-client`` command line (the subset of one-shot mode it serves).

    Raises :class:`UsageError` for a bad ``--daemon-idle``, and :class:`Unsupported` for an
    option the warm path does not serve (one-shot mode then handles, or rejects, it).
    """
    inv = Invocation()
    inv.argv, inv.idle = _take_daemon_idle(argv)
    load: dict[str, str | None] = {"start": None, "top": None, "pattern": None}
    extra: list[str] = []
    names: list[str] = []
    args = iter(inv.argv)
    for arg in args:
        option, equals, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if option in _VALUE_OPTIONS and not equals:
            value = next(args, None)  # type: ignore[arg-type]
            if value is None:
                raise Unsupported(f"{option} needs a value", inv.argv)
        if option in _LOAD_OPTIONS:
            load[_LOAD_OPTIONS[option]] = value
        elif option == "--load-list":
            inv.load_list = value
        elif option in _SERVER_OPTIONS:
            extra += [option, value]
        elif option in ("-l", "--list"):
            inv.list_only = True
        elif arg.startswith("-") and arg != "-":
            if arg not in _IGNORED_FLAGS:
                raise Unsupported(f"option {arg} is not served by the daemon", inv.argv)
        else:
            names.append(arg)
    if names[:1] == ["discover"] and len(names) > 4:
        raise Unsupported("discover takes at most START, PATTERN and TOP", inv.argv)
    inv.server_args = _server_args(load, names) + extra
    return inv


def _take_daemon_idle(argv: list[str]) -> tuple[list[str], float | None]:
    """``argv`` without ``--daemon-idle SECONDS`` (not an option of one-shot mode), and it."""
    rest: list[str] = []
    idle = None
    args = iter(argv)
    for arg in args:
        if arg == "--daemon-idle":
            idle = _seconds(next(args, ""))
        elif arg.startswith("--daemon-idle="):
            idle = _seconds(arg.partition("=")[2])
        else:
            rest.append(arg)
    return rest, idle


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--daemon-idle needs a number of seconds, not {text!r}") from None
    if not value > 0:
        raise UsageError("--daemon-idle must be positive")
    return value


def _server_args(load: dict[str, str | None], names: list[str]) -> list[str]:
    """``--serve`` arguments in a canonical form, so equal requests select the same server."""
    if names and names[0] != "discover":
        return list(names)
    for attribute, value in zip(("start", "pattern", "top"), names[1:]):
        if load[attribute] is None:
            load[attribute] = value
    args = ["-s", load["start"] or ".", "-p", load["pattern"] or "test*.py"]
    if load["top"] is not None:
        args += ["-t", load["top"]]
    return args


def read_load_list(path: str) -> list[str]:
    """Test ids from a ``--load-list`` file: UTF-8, one per line, blank lines ignored."""
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


# --------------------------------------------------------------------------- the socket


def socket_dir(start: str | None = None) -> str:
    """The daemon's directory: ``<project root>/.testserver`` (see the project module)."""
    return project.daemon_dir(project.find_root(start)[0])


def private_dir(directory: str, *, create: bool) -> None:
    """Make sure ``directory`` is ours alone (mode 0700, our uid), creating it if asked.

    A socket in a directory that someone else can write to could be theirs: connecting to it
    would hand them our tests, our environment and our output.
    """
    if create:
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
        except OSError as error:
            raise DaemonUnavailable(f"cannot create {directory}: {error}") from None
    problem = project.private_problem(directory)
    if problem is not None:
        raise DaemonUnavailable(problem)


def connect(directory: str) -> socket.socket:
    """Connect to the daemon listening in ``directory`` (which must be private)."""
    private_dir(directory, create=False)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(unix_address(os.path.join(directory, SOCKET_NAME)))
    except OSError as error:
        sock.close()
        raise DaemonUnavailable(f"no daemon at {directory}: {error.strerror}") from None
    return sock


def start_daemon(directory: str, idle: float | None):
    """Start a detached daemon for ``directory``; return its ``subprocess.Popen``.

    The daemon exits with status 0 at once if another one is starting or running there.
    """
    import subprocess

    private_dir(directory, create=True)
    log = os.open(os.path.join(directory, LOG_NAME), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    command = [
        sys.executable,
        "-m",
        "testserver.backends.daemon",
        "serve",
        "--socket-dir",
        directory,
    ]
    if idle is not None:
        command += ["--idle", repr(idle)]
    try:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # no terminal signals; outlives this process
            close_fds=True,  # above all not our stdout: testr reads it until end of file
        )
    except OSError as error:
        raise DaemonUnavailable(f"cannot start the daemon: {error}") from None
    finally:
        os.close(log)


def connect_or_start(directory: str, idle: float | None) -> socket.socket:
    """Connect to the daemon of ``directory``, starting it first if it is not running."""
    import time

    try:
        return connect(directory)
    except DaemonUnavailable:
        pass
    process = start_daemon(directory, idle)
    deadline = time.monotonic() + START_TIMEOUT
    log = os.path.join(directory, LOG_NAME)
    while True:
        try:
            return connect(directory)
        except DaemonUnavailable:
            status = process.poll()
            if status:  # 0 is a lost start race: another daemon is coming up
                message = f"the daemon exited with status {status}; see {log}"
                raise DaemonUnavailable(message) from None
            if time.monotonic() > deadline:
                raise DaemonUnavailable(
                    f"the daemon did not start within {START_TIMEOUT:g} s; see {log}"
                ) from None
            time.sleep(CONNECT_POLL)


def send_request(sock: socket.socket, request: dict) -> None:
    """Send one request line."""
    data = json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    sock.sendall(data + b"\n")


def read_line(sock: socket.socket) -> dict:
    """Read a one-line JSON answer (``status``, ``stop``)."""
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(READ_SIZE)
        if not chunk:
            break
        data += chunk
    try:
        answer = json.loads(data)
    except ValueError:
        raise DaemonUnavailable(f"the daemon answered {bytes(data[:200])!r}") from None
    if not isinstance(answer, dict):
        raise DaemonUnavailable(f"the daemon answered {answer!r}")
    return answer


def base_request(op: str) -> dict:
    """The fields every request has."""
    return {"v": DAEMON_PROTOCOL, "version": __version__, "op": op}


# --------------------------------------------------------------------------- the final packet


def _final_packet_at(data: bytearray, start: int) -> dict | None:
    """The body of the ``testserver.complete`` packet filling ``data[start:]``, or ``None``.

    Accepts exactly what the daemon writes: a v2 file packet without test id, tags, route code
    or parent id, optionally with timestamp and MIME type, whose length and CRC32 fit.
    """
    try:
        flags = data[start + 1] << 8 | data[start + 2]
        length, pos = varint(data, start + LENGTH_OFFSET)
        end = start + length - 4
        if start + length != len(data) or end <= pos:
            return None
        if zlib.crc32(data[start:end]) != int.from_bytes(data[end:], "big"):
            return None
        if (
            flags & VERSION_MASK != VERSION_2
            or flags & TEST_SCOPED_FLAGS
            or not flags & FLAG_FILE_CONTENT
        ):
            return None
        if flags & FLAG_TIMESTAMP:
            pos = varint(data, pos + TIMESTAMP_SECONDS_SIZE)[1]
        if flags & FLAG_MIME_TYPE:
            size, pos = varint(data, pos)
            pos += size
        size, pos = varint(data, pos)
        name = bytes(data[pos : pos + size])
        size, pos = varint(data, pos + size)
        if name != COMPLETE or pos + size != end:
            return None
        body = json.loads(data[pos:end])
    except (IndexError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def split_final_packet(data: bytearray) -> tuple[int, dict | None]:
    """Find the final packet at the end of ``data``: ``(where it starts, its body)``.

    ``(len(data), None)`` when the stream does not end with one (the daemon went away).
    """
    start = data.find(SIGNATURE, max(0, len(data) - TRAILER_MAX))
    while start >= 0:
        body = _final_packet_at(data, start)
        if body is not None:
            return start, body
        start = data.find(SIGNATURE, start + 1)
    return len(data), None


# --------------------------------------------------------------------------- relaying


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def relay(sock: socket.socket, stdout_fd: int = 1) -> tuple[int, dict | None, bool]:
    """Copy the daemon's stream to ``stdout_fd`` without its final packet.

    Returns ``(bytes forwarded, final body or None, whether bytes came at all)``.
    """
    buffer = bytearray()
    forwarded = 0
    received = False
    while True:
        try:
            chunk = sock.recv(READ_SIZE)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            break
        received = True
        buffer += chunk
        if len(buffer) > TRAILER_MAX:
            cut = len(buffer) - TRAILER_MAX
            _write_all(stdout_fd, memoryview(buffer)[:cut])
            del buffer[:cut]
            forwarded += cut
    start, body = split_final_packet(buffer)
    if start:
        _write_all(stdout_fd, memoryview(buffer)[:start])
        forwarded += start
    return forwarded, body, received


def lost_stream(reason: str) -> bytes:
    """A failing test that says the daemon went away (only built on that error path)."""
    from testserver.wire.synthetic import failing_test

    text = (
        f"testserver-client: {reason}. Tests of this run that were not reported did not run. "
        "Run again; the daemon's log (`testserver daemon status` shows where) may say why."
    )
    return b"".join(failing_test(ERROR_TEST_ID, text))


def _say(message: str) -> None:
    try:
        os.write(2, f"testserver-client: {message}\n".encode("utf-8", "backslashreplace"))
    except OSError:
        pass


def run_oneshot(inv: Invocation, reason: str | None) -> int:
    """Run one-shot mode in this process (``python -m testserver ARGS``)."""
    if reason is not None:
        _say(f"{reason}; running the tests in this process instead (one-shot mode)")
    from testserver.cli import main as oneshot_main

    return oneshot_main(inv.argv)


def run(inv: Invocation) -> int:
    """List or run through the daemon; fall back to one-shot mode when it is unavailable."""
    if os.environ.get(NO_DAEMON_ENV) or os.environ.get(SHARD_ENV):  # shards: one-shot's groups
        return run_oneshot(inv, None)
    try:
        ids = read_load_list(inv.load_list) if inv.load_list is not None else None
    except (OSError, UnicodeDecodeError) as error:
        _say(f"cannot read --load-list file: {error}")
        return EXIT_USAGE
    cwd = os.getcwd()
    request = base_request("list" if inv.list_only else "run")
    request.update(
        cwd=cwd,
        python=sys.executable,
        server_args=inv.server_args,
        ids=ids,
        env=dict(os.environ),
        idle=inv.idle,
    )
    try:
        sock = connect_or_start(socket_dir(cwd), inv.idle)
    except DaemonUnavailable as error:
        return run_oneshot(inv, str(error))
    with sock:
        try:
            send_request(sock, request)
        except OSError as error:
            return run_oneshot(inv, f"the daemon did not take the request: {error}")
        try:
            forwarded, body, received = relay(sock)
        except BrokenPipeError:
            return EXIT_ERROR  # whoever read our stdout is gone; closing cancels the run
    if body is None:
        if not received:
            return run_oneshot(inv, "the daemon closed the connection without answering")
        _write_all(1, lost_stream("the daemon closed the connection in the middle of the stream"))
        return EXIT_ERROR
    if body.get("fallback") and not forwarded:
        return run_oneshot(inv, str(body.get("reason") or "the daemon cannot serve this request"))
    if body.get("stderr"):
        _write_all(2, str(body["stderr"]).encode("utf-8", "backslashreplace"))
    exit_code = body.get("exit")
    return exit_code if isinstance(exit_code, int) else EXIT_ERROR


# --------------------------------------------------------------------------- entry points


def main(argv: list[str] | None = None) -> int:
    """``testserver-client``: list or run tests on a warm server; see the module docstring."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--stestr"]:
        return stestr_main(argv[1:])
    try:
        inv = parse_args(argv)
    except UsageError as error:
        _say(str(error))
        return EXIT_USAGE
    except Unsupported as error:
        inv = Invocation()
        inv.argv = error.argv
        return run_oneshot(inv, str(error))
    try:
        return run(inv)
    except KeyboardInterrupt:
        return 130


def stestr_main(argv: list[str] | None = None) -> int:
    """``testserver-stestr-python``: stestr's ``$PYTHON``; warm for its discover runner only."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:3] == ["-m", STESTR_RUNNER, "discover"]:
        return main(argv[2:])
    python = sys.executable
    try:
        os.execv(python, [python, *argv])
    except OSError as error:
        _say(f"cannot run {python}: {error}")
    return 127


if __name__ == "__main__":
    sys.exit(main())
