"""For the remote-worker tests: a real SSH server on loopback, and the project they run.

``ssh_server``: :mod:`sshserver` (asyncssh) in a subprocess, with keys generated for the
test module; the client is the real OpenSSH ``ssh``. A test builds its
``--worker-command`` with :meth:`SSHServer.command` or :meth:`SSHServer.serve_command`.
Skipped, with the reason, when asyncssh or the ``ssh`` client is not installed.

``project``: a copy of ``tests/projects/remote_basic`` with ``gate.fifo``, the FIFO
its gate test blocks on when ``RBASIC_GATE`` names it (only remotes are given it);
:func:`release` lets that test go. :func:`finals` reads a stream with python-subunit.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverproc import copy_project
from subunit_reader import read_with_subunit

SERVER_SCRIPT = Path(__file__).parent / "sshserver.py"
START_TIMEOUT = 60.0


class SSHServer:
    """A running :mod:`sshserver`: its port and the client key that logs in."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.close()
            raise AssertionError(f"the SSH server did not start: {line!r} {self.errors()!r}")
        self.port = int(line)

    def ssh(self) -> list[str]:
        """The ``ssh`` client with the options that log in here (add a host and a command)."""
        return [
            shutil.which("ssh") or "ssh",
            *("-i", str(self.directory / "client_key"), "-p", str(self.port)),
            *("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"),
            *("-o", "BatchMode=yes", "-o", "LogLevel=ERROR"),
        ]

    def command(self, remote: str) -> str:
        """The shell command that runs ``remote`` (a shell command) through ssh."""
        return shlex.join([*self.ssh(), "localhost", remote])

    def serve_command(self, project: Path, *args: str, env: dict[str, str] | None = None) -> str:
        """ssh into ``project`` and start ``python -m testserver --serve ARGS`` there,
        noting its pid in ``project/remote.pid`` (a test kills it with that)."""
        assignments = [f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()]
        serve = shlex.join([sys.executable, "-m", "testserver", "--serve", *args])
        remote = (
            f"cd {shlex.quote(str(project))} && echo $$ > remote.pid && "
            f"exec env {' '.join(assignments)} {serve}"
        )
        return self.command(remote)

    def errors(self) -> str:
        """What the server wrote on stderr (once it has exited)."""
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode("utf-8", "replace")

    def close(self) -> None:
        """Stop the server (end of its stdin) and reap it."""
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        try:
            self.proc.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """A real SSH server on 127.0.0.1 for this module's tests."""
    if importlib.util.find_spec("asyncssh") is None:
        pytest.skip("asyncssh is not installed; pip install -e '.[test]'")
    if shutil.which("ssh") is None:
        pytest.skip("no OpenSSH client (ssh) on PATH")
    directory = tmp_path_factory.mktemp("ssh")
    os.chmod(directory, 0o700)
    server = SSHServer(directory)
    yield server
    server.close()


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A copy of ``remote_basic`` with its gate FIFO; the gate is released at the end."""
    copy = copy_project("remote_basic", tmp_path)
    os.mkfifo(copy / "gate.fifo")
    yield copy
    release(copy / "gate.fifo")


def release(gate: Path) -> None:
    """Let a test blocked on the gate go (so nothing it started outlives the test)."""
    try:
        os.close(os.open(gate, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # nothing reads it: nothing blocks on it
        pass


def finals(raw: bytes) -> dict[str, tuple[str, frozenset[str]]]:
    """Final status and tags of each test, as python-subunit reads ``raw``."""
    found = {}
    for event in read_with_subunit(raw):
        status = event.get("test_status")
        if event.get("test_id") and status not in (None, "exists", "inprogress"):
            found[event["test_id"]] = (status, frozenset(event.get("test_tags") or ()))
    return found
