"""``testserver run`` at a terminal: a thin client of the project's warm daemon.

As Gradle's and Bazel's clients do, the command does not load the tests itself: it finds
the project (:mod:`testserver.clients.project`), connects to the project's daemon (starting it the
first time, and saying so once on stderr), sends its arguments, working directory,
environment and terminal, and copies what the daemon's run writes to its stdout and stderr.
The daemon runs :func:`testserver.clients.runcommand.run_main` on a warm server it keeps for these
loading options, which applies changed sources before each run, so the second run skips
the start-up and the imports (:mod:`testserver.backends.daemonconsole`).

The daemon is used when stdin and stderr are both terminals (a person is typing), or with
``--daemon``; never with ``--no-daemon``, ``TESTSERVER_NO_DAEMON`` or ``--help``. If it
cannot be reached the run happens in this process, as with ``--no-daemon``, after saying
why. The first Ctrl-C cancels the run (the results so far are shown); a second one leaves.

Answer framing (daemon to client), after the request line: frames of a one-byte tag, a
four-byte big-endian length and that many bytes; ``o`` stdout bytes, ``e`` stderr bytes,
then one last frame: ``x`` with the exit status in ASCII digits, or ``f`` with the reason
(UTF-8) the client must run the command itself. The client sends ``c`` to cancel the run;
closing the connection cancels it too.

Start-up is what a warm run costs, so when the daemon is running this module imports only
``os``, ``sys`` and the C modules ``_socket`` and ``_json`` (not :mod:`socket`, :mod:`json`
or :mod:`testserver.backends.testr`, whose ``enum`` and ``re`` cost more than the run); it takes
:mod:`testserver.backends.testr` only to start the daemon. The ``testserver`` launcher
(``scripts/testserver``) goes further: it runs :func:`quick` in an interpreter started with
``-I -S``, which skips site-packages, and that execs the full CLI whenever no daemon is
running (``spec/daemon.md`` §10.1).
"""

from __future__ import annotations

import _json
import _socket
import os
import sys

from testserver import __version__
from testserver.clients import project

CONSOLE_OP = "console"
"""The daemon request that runs a client command for a remote terminal."""

CANCEL = b"c"
"""Sent by the client on the first Ctrl-C: cancel the run, keep streaming."""

HEADER = 5
"""Bytes before a frame's payload: the tag and the length."""

SOCKET_NAME = "daemon.sock"
NO_DAEMON_ENV = "TESTSERVER_NO_DAEMON"
"""As in :mod:`testserver.backends.testr`."""

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

_TOP_OPTIONS = ("-t", "--top-level-directory")
_START_OPTIONS = ("-s", "--start-directory")


def wants_daemon(argv: list[str]) -> bool:
    """Whether this ``testserver run`` should go through the daemon."""
    if "--no-daemon" in argv or os.environ.get(NO_DAEMON_ENV):
        return False
    if "-h" in argv or "--help" in argv:
        return False
    if "--daemon" in argv:
        return True
    return _isatty(0) and _isatty(2)


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def loading_dirs(argv: list[str]) -> tuple[str | None, str | None]:
    """``(top, start)`` as given by ``-t``/``-s`` (long forms and ``=`` included)."""
    found: dict[str, str | None] = {"top": None, "start": None}
    args = iter(argv)
    for arg in args:
        option, equals, value = arg.partition("=")
        name = "top" if option in _TOP_OPTIONS else "start" if option in _START_OPTIONS else None
        if name is not None:
            found[name] = value if equals else next(args, None)
    return found["top"], found["start"]


DAEMON_PROTOCOL = 1
"""As :data:`testserver.backends.testr.DAEMON_PROTOCOL` (a test checks that they agree)."""

READ_SIZE = 1 << 16


def encode(value: object) -> str:
    """JSON for the request's values (dicts, lists, strings, numbers, booleans, null)."""
    if isinstance(value, str):
        return _json.encode_basestring_ascii(value)
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{encode(str(k))}:{encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(encode(item) for item in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__} in a request")


def stdout_encoding() -> str:
    """The encoding of our stdout, as the full CLI would have it: the launcher's ``-I``
    interpreter ignores ``PYTHONIOENCODING`` and ``PYTHONUTF8``, so read them here."""
    if sys.flags.ignore_environment:
        chosen = os.environ.get("PYTHONIOENCODING", "").partition(":")[0]
        if chosen:
            return chosen
        if os.environ.get("PYTHONUTF8") == "1":
            return "utf-8"
    return getattr(sys.stdout, "encoding", None) or "utf-8"


def request_for(argv: list[str], cwd: str) -> dict:
    """The daemon request of ``testserver run ARGV``."""
    try:
        columns: int | None = os.get_terminal_size(1).columns
    except OSError:
        columns = None
    request: dict = {"v": DAEMON_PROTOCOL, "version": __version__, "op": CONSOLE_OP}
    request.update(
        command="run",
        argv=argv,
        cwd=cwd,
        python=sys.executable,
        env=dict(os.environ),
        stdout_tty=_isatty(1),
        columns=columns,
        encoding=stdout_encoding(),
    )
    return request


def connect_running(directory: str):  # noqa: ANN201 - a _socket.socket
    """A connection to the daemon running in ``directory``, or ``None``."""
    if project.private_problem(directory) is not None:
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(project.unix_address(os.path.join(directory, SOCKET_NAME)))
    except OSError:
        sock.close()
        return None
    return sock


class Unavailable(Exception):
    """The daemon is not running and cannot be started; the message says why."""


def connect(directory: str) -> tuple[object, bool]:
    """A connection to the daemon of ``directory`` and whether we had to start it."""
    sock = connect_running(directory)
    if sock is not None:
        return sock, False
    from testserver.backends import testr

    try:
        return testr.connect_or_start(directory, None), True
    except testr.DaemonUnavailable as error:
        raise Unavailable(str(error)) from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def relay(sock) -> dict:  # noqa: ANN001 - a socket; not imported for its type
    """Copy the answer's frames to stdout and stderr; return what the last frame says."""
    buffer = bytearray()
    interrupts = 0
    while True:
        try:
            chunk = sock.recv(READ_SIZE)
        except KeyboardInterrupt:
            interrupts += 1
            if interrupts > 1:
                raise
            try:
                sock.sendall(CANCEL)
            except OSError:
                pass
            continue
        if not chunk:
            return {"exit": EXIT_ERROR, "lost": True}
        buffer += chunk
        while len(buffer) >= HEADER:
            size = int.from_bytes(buffer[1:HEADER], "big")
            if len(buffer) < HEADER + size:
                break
            tag, payload = buffer[0:1], bytes(buffer[HEADER : HEADER + size])
            del buffer[: HEADER + size]
            if tag == b"x":
                return {"exit": int(payload)}
            if tag == b"f":
                return {"fallback": True, "reason": payload.decode("utf-8", "replace")}
            if tag in (b"o", b"e"):
                _write_all(1 if tag == b"o" else 2, payload)
            else:
                return {"exit": EXIT_ERROR, "lost": True}


def _say(message: str) -> None:
    try:
        os.write(2, f"testserver run: {message}\n".encode("utf-8", "backslashreplace"))
    except OSError:
        pass


def _in_process(argv: list[str], reason: str | None = None) -> int:
    if reason:
        _say(f"{reason}; running without the daemon")
    from testserver.clients.runcommand import run_main

    return run_main(argv)


def _directory(argv: list[str], cwd: str) -> tuple[str, str]:
    """``(project root, daemon directory)`` for ``testserver run ARGV`` in ``cwd``."""
    top, start = loading_dirs(argv)
    root, _ = project.find_root(project.loading_start(top, start, cwd))
    return root, project.daemon_dir(root)


def _on_daemon(sock, argv: list[str], cwd: str, directory: str) -> int | str:  # noqa: ANN001
    """Run ``testserver run ARGV`` on the daemon connected to ``sock``; its exit status, or
    the reason (a string) the command must run without the daemon."""
    try:
        sock.sendall(encode(request_for(argv, cwd)).encode("ascii") + b"\n")
        answer = relay(sock)
    except KeyboardInterrupt:
        _say("aborted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 1  # whoever read our stdout is gone; closing cancels the run
    except (OSError, ValueError, TypeError) as error:
        answer = {"exit": EXIT_ERROR, "lost": True, "reason": str(error)}
    finally:
        sock.close()
    if answer.get("fallback"):
        return str(answer.get("reason"))
    if answer.get("lost"):
        _say(f"the daemon in {directory} went away in the middle of the run; see its log")
    code = answer.get("exit")
    return code if isinstance(code, int) else EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``testserver run``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not wants_daemon(argv):
        return _in_process(argv)
    cwd = os.getcwd()
    root, directory = _directory(argv, cwd)
    try:
        sock, started = connect(directory)
    except Unavailable as error:
        return _in_process(argv, str(error))
    if started:
        _say(
            f"started a background test server for {root}; it keeps the tests loaded "
            "between runs. `testserver daemon status` shows it, `testserver daemon stop` "
            "stops it (it also stops after 15 idle minutes); --no-daemon runs without it."
        )
    code = _on_daemon(sock, argv, cwd, directory)
    return _in_process(argv, code) if isinstance(code, str) else code


def quick(cli: str, argv: list[str]) -> int:
    """The launcher's fast path (``scripts/testserver``) for ``testserver run ARGV``.

    It runs in an interpreter started with ``-I -S``, which has no site-packages: when the
    daemon is wanted and already running, run the command on it; otherwise (no daemon, a
    stale one, or a daemon that hands the command back) exec the full CLI ``cli`` with the
    same arguments, which starts the daemon or runs in its own process and says why.
    """
    if wants_daemon(argv):
        cwd = os.getcwd()
        directory = _directory(argv, cwd)[1]
        sock = connect_running(directory)
        if sock is not None:
            code = _on_daemon(sock, argv, cwd, directory)
            if not isinstance(code, str):
                return code
    sys.stdout.flush()
    os.execv(cli, [cli, "run", *argv])
    return EXIT_ERROR  # not reached
