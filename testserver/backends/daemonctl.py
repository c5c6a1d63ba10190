"""``testserver daemon start|stop|status|serve``: the commands that manage a project's daemon.

``serve`` runs the daemon (:class:`testserver.backends.daemon.Daemon`) in this process once it holds
the directory's lock; ``start`` connects, or starts it detached as the clients do; ``stop``
asks it to stop and waits until its process is gone; ``status`` prints what it serves, with
the project it belongs to (:mod:`testserver.clients.project`). ``python -m
testserver.backends.daemon`` runs these commands too.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

from testserver.backends import testr
from testserver.backends.daemon import CANCEL_TIMEOUT, Daemon
from testserver.backends.pool import QUIT_TIMEOUT, log
from testserver.clients import project
from testserver.wire.constants import EXIT_USAGE


def _lock(directory: str) -> int | None:
    """Take the daemon lock of ``directory`` (an fd), or ``None`` if another daemon holds it."""
    fd = os.open(os.path.join(directory, testr.LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _listening(directory: str) -> bool:
    try:
        testr.connect(directory).close()
    except testr.DaemonUnavailable:
        return False
    return True


def serve(directory: str, idle: float) -> int:
    """Run a daemon for ``directory`` in this process, unless one already runs there."""
    testr.private_dir(directory, create=True)
    project.ensure_gitignore(directory)
    directory = os.path.abspath(directory)
    deadline = time.monotonic() + testr.START_TIMEOUT
    while _lock(directory) is None:
        # Another daemon is starting, serving or stopping: leave it if it serves, else wait.
        if _listening(directory) or time.monotonic() > deadline:
            log("another daemon holds the lock; exiting")
            return 0
        time.sleep(0.05)
    os.chdir(directory)  # bind a short relative path: long absolute ones do not fit sun_path
    try:
        os.unlink(testr.SOCKET_NAME)  # a dead daemon's socket: we hold the lock
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o177)
    try:
        listener.bind(testr.SOCKET_NAME)
    finally:
        os.umask(umask)
    os.chmod(testr.SOCKET_NAME, 0o600)
    listener.listen(128)
    # The lock fd stays open until the process is gone: `stop` waits for exactly that.
    return Daemon(listener, directory, idle).serve()


def _ask(directory: str, op: str) -> dict[str, Any]:
    with testr.connect(directory) as sock:
        testr.send_request(sock, testr.base_request(op))
        return testr.read_line(sock)


def _stop(directory: str) -> int:
    try:
        answer = _ask(directory, "stop")
    except testr.DaemonUnavailable:
        lock = _lock(directory) if os.path.isdir(directory) else None
        if lock is not None:  # no daemon: remove what a killed one left behind
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, testr.SOCKET_NAME))
            os.close(lock)
        print(f"testserver daemon: not running ({directory})")
        return 0
    deadline = time.monotonic() + QUIT_TIMEOUT + CANCEL_TIMEOUT + 5
    while (lock := _lock(directory)) is None:  # released when the daemon process is gone
        if time.monotonic() > deadline:
            print(f"testserver daemon: pid {answer.get('pid')} did not stop", file=sys.stderr)
            return 1
        time.sleep(0.05)
    os.close(lock)
    print(f"testserver daemon: stopped (pid {answer.get('pid')})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="testserver daemon",
        description="The project's daemon, which keeps warm test servers for `testserver run` "
        "at a terminal and for testserver-client (testr, stestr). It starts on demand; these "
        "commands manage it. The project is the nearest directory above the working "
        "directory (or --project) holding pyproject.toml, setup.py, setup.cfg, tox.ini, "
        ".testr.conf, .stestr.conf, .git or .hg.",
    )
    parser.add_argument("command", choices=("start", "stop", "status", "serve"))
    parser.add_argument(
        "--project", metavar="DIR", help="the project (default: found from the working directory)"
    )
    parser.add_argument(
        "--socket-dir",
        metavar="DIR",
        help="the daemon's directory (default: PROJECT/.testserver, or $TESTSERVER_DAEMON_DIR)",
    )
    parser.add_argument(
        "--idle",
        type=float,
        default=testr.DEFAULT_IDLE,
        metavar="SECONDS",
        help="start/serve: stop after this long without requests (default %(default)g)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``testserver daemon start|stop|status|serve``."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    root, marked = project.find_root(args.project)
    directory = os.path.abspath(args.socket_dir or project.daemon_dir(root))
    if args.idle <= 0:
        print("testserver daemon: --idle must be positive", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "serve":
            return serve(directory, args.idle)
        if args.command == "stop":
            return _stop(directory)
        if args.command == "start":
            testr.connect_or_start(directory, args.idle).close()
        status = _ask(directory, "status")
    except testr.DaemonUnavailable as error:
        if args.command == "status":
            if not marked and not args.socket_dir:
                print(
                    f"testserver daemon: {root} is not inside a project (no "
                    f"{', '.join(project.MARKERS)} in it or above it); use --project DIR",
                    file=sys.stderr,
                )
            answer = {"running": False, "project": root, "socket_dir": directory}
            print(json.dumps({**answer, "reason": str(error)}))
        else:
            print(f"testserver daemon: {error}", file=sys.stderr)
        return 1
    if args.command == "start":
        print(f"testserver daemon: running (pid {status['pid']}), socket {status['socket']}")
    else:
        print(json.dumps({"project": root, **status}, indent=2))
    return 0
