"""The ``testserver`` launcher (``scripts/testserver``), installed as ``pip install`` does.

Each test builds a real install in a temporary directory: a venv whose site-packages holds
the ``testserver`` package (a link to this checkout, where a wheel would put it) and finds
its dependencies through a ``.pth``, the launcher as ``bin/testserver`` and a console script
``bin/testserver-cli`` (the full CLI). The launcher is then driven through a real daemon at
a pseudo-terminal. To tell which path a command took, ``testserver-cli`` is replaced by a
trap that exits 99: a warm run that still succeeds never started the full CLI.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from daemonproc import descendants, describe, gone
from serverproc import PROJECTS, project_copy
from terminal import read_terminal, run_at_terminal

from testserver.clients.project import DAEMON_DIR_ENV

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120
TRAPPED = 99
"""Exit status of the trap put in place of ``testserver-cli``."""

ENV = {
    k: v
    for k, v in os.environ.items()
    if k not in ("TESTSERVER_NO_DAEMON", DAEMON_DIR_ENV, "NO_COLOR", "COLUMNS")
}
ANSI = re.compile(r"\x1b\[[0-9;]*m")
TIMING = re.compile(r"in \d+\.\d+s")
ARGS = ("-t", ".", "-s", "cpass")

CONSOLE_SCRIPT = """#!{python}
import re
import sys
from testserver.cli import main
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit(main())
"""
"""What pip writes for ``testserver-cli = "testserver.cli:main"``."""


class Install:
    """A regular install of testserver in ``root``: a venv, the launcher, the full CLI."""

    def __init__(self, root: Path) -> None:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
        self.bin = root / "bin"
        self.python = self.bin / "python"
        purelib = subprocess.run(
            [str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        Path(purelib, "testserver").symlink_to(ROOT / "testserver")
        Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        self.launcher = self.bin / "testserver"
        shutil.copy(ROOT / "scripts" / "testserver", self.launcher)
        self.cli = self.bin / "testserver-cli"
        self.write_cli(CONSOLE_SCRIPT)

    def write_cli(self, template: str) -> None:
        self.cli.write_text(template.format(python=self.python))
        self.cli.chmod(0o755)

    def trap_cli(self) -> None:
        """Make the full CLI exit 99 (its first line still names the interpreter)."""
        self.write_cli(f"#!{{python}}\nimport sys\nsys.exit({TRAPPED})\n")

    def at_terminal(self, *args: str, cwd: Path) -> tuple[int, str]:
        """``testserver ARGS`` with stdin, stdout and stderr on a pseudo-terminal."""
        code, shown = run_at_terminal(
            [str(self.launcher), *args], cwd=cwd, env=ENV, stdin_tty=True, stderr_tty=True
        )
        text = ANSI.sub("", shown.decode("utf-8", "replace")).replace("\r\n", "\n")
        return code, TIMING.sub("in T", text)

    def piped(self, *args: str, cwd: Path, command: Path | None = None, env=None):
        return subprocess.run(
            [str(command or self.launcher), *args],
            cwd=cwd,
            env=env or ENV,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )


@pytest.fixture
def install(tmp_path) -> Install:
    return Install(tmp_path / "venv")


def stop_daemon_of(project: Path) -> None:
    """Stop the project's daemon (if any); check that it and all its processes are gone."""
    full = [sys.executable, "-m", "testserver", "daemon"]
    status = subprocess.run([*full, "status"], cwd=project, env=ENV, capture_output=True)
    pids = set()
    if status.returncode == 0:
        pid = json.loads(status.stdout)["pid"]
        pids = {pid, *descendants(pid)}
    subprocess.run([*full, "stop"], cwd=project, env=ENV, capture_output=True, check=True)
    left = {pid: describe(pid) for pid in pids if not gone(pid)}
    assert not left, f"processes left after stop: {left}"


def own_project(name: str, tmp_path: Path) -> Path:
    """A copy of ``tests/projects/NAME`` with a ``pyproject.toml``: a project of its own."""
    project = project_copy(PROJECTS / name, tmp_path / "proj")
    (project / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    return project


@pytest.fixture
def project(tmp_path, install):
    """A project whose daemon, and every process of it, are gone after the test."""
    project = own_project("cli_pass", tmp_path)
    yield project
    stop_daemon_of(project)


def servers(install: Install, project: Path) -> list[dict]:
    return json.loads(install.piped("daemon", "status", cwd=project).stdout)["servers"]


def test_a_warm_run_goes_to_the_daemon_without_the_full_cli(install, project):
    code, first = install.at_terminal("run", *ARGS, cwd=project)
    assert code == 0, first
    assert "started a background test server for" in first  # the full CLI started it
    code, full = install.at_terminal("run", *ARGS, "-v", cwd=project)
    assert code == 0, full
    install.trap_cli()
    code, warm = install.at_terminal("run", *ARGS, "-v", cwd=project)
    assert code == 0, warm
    assert warm == full  # same lines, same exit status, through the fast path
    assert "started a background" not in warm
    failing = install.at_terminal("run", *ARGS, "no.such.test", cwd=project)
    assert failing[0] == 1 and "no test matches 'no.such.test'" in failing[1]
    install.write_cli(CONSOLE_SCRIPT)
    [server] = servers(install, project)
    assert server["runs"] == 4  # one warm server served every run


def test_colour_follows_the_terminal(install, project):
    install.at_terminal("run", *ARGS, cwd=project)
    install.trap_cli()
    code, shown = run_at_terminal(
        [str(install.launcher), "run", *ARGS],
        cwd=project,
        env=ENV,
        stdin_tty=True,
        stderr_tty=True,
    )
    assert code == 0
    assert b"\x1b[" in shown  # coloured, as the full CLI at a terminal
    piped = install.piped("run", "--daemon", *ARGS, cwd=project)
    assert piped.returncode == 0, piped.stderr
    assert "\x1b[" not in piped.stdout and piped.stdout.splitlines()[-1] == "OK (skipped=1)"


def test_without_a_running_daemon_the_full_cli_runs(install, project):
    install.trap_cli()
    for args in (
        ("run", *ARGS),  # no daemon yet: the full CLI starts it
        ("run", "--no-daemon", *ARGS),
        ("list", *ARGS),
    ):
        assert install.at_terminal(*args, cwd=project)[0] == TRAPPED, args
    assert install.piped("run", *ARGS, cwd=project).returncode == TRAPPED  # not a terminal
    no_daemon = {**ENV, "TESTSERVER_NO_DAEMON": "1"}
    assert install.piped("run", "--daemon", *ARGS, cwd=project, env=no_daemon).returncode == 99
    assert not (project / ".testserver" / "daemon.sock").exists()


def test_a_stale_socket_falls_back_to_the_full_cli(install, project):
    directory = project / ".testserver"
    directory.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(directory / "daemon.sock"))  # a socket file nobody listens on
    stale.close()
    install.trap_cli()
    assert install.piped("run", "--daemon", *ARGS, cwd=project).returncode == TRAPPED
    install.write_cli(CONSOLE_SCRIPT)
    result = install.piped("run", "--daemon", *ARGS, cwd=project)
    assert result.returncode == 0, result.stderr
    assert "started a background test server" in result.stderr  # replaced the stale one


def test_full_cli_commands_and_unknown_layouts(install, tmp_path):
    result = install.piped("--help", cwd=tmp_path)
    assert result.returncode == 0 and "bridge" in result.stdout
    assert install.piped("runn", cwd=tmp_path).returncode == 2
    # pip's form for an interpreter path it cannot put on a #! line: no fast path, still works
    install.write_cli("#!/bin/sh\n'''exec' \"{python}\" \"$0\" \"$@\"\n' '''\n" + CONSOLE_SCRIPT)
    result = install.piped("run", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "usage: testserver run" in result.stdout


def test_the_fast_client_reads_the_encoding_the_interpreter_ignores(tmp_path):
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from testserver.backends.warmcli import stdout_encoding\n"
        "print(stdout_encoding())"
    )
    env = {**ENV, "PYTHONIOENCODING": "latin-1:replace"}
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe, str(ROOT)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "latin-1"


def test_a_daemon_of_another_version_hands_the_run_to_the_full_cli(install, project):
    old = (
        "import sys, testserver; testserver.__version__ = '0.0.old'\n"
        "from testserver.backends.daemonctl import main; sys.exit(main())"
    )
    daemon = subprocess.Popen(
        [sys.executable, "-c", old, "serve", "--socket-dir", str(project / ".testserver")],
        cwd=project,
        env=ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in daemon.stderr:  # its log: "listening on ..." once the socket is ready
            if "listening on" in line:
                break
        install.trap_cli()
        assert install.piped("run", "--daemon", *ARGS, cwd=project).returncode == TRAPPED
        install.write_cli(CONSOLE_SCRIPT)
        result = install.piped("run", "--daemon", *ARGS, cwd=project)
        assert result.returncode == 0, result.stderr
        assert "the daemon runs testserver 0.0.old" in result.stderr
        assert "running without the daemon" in result.stderr
    finally:
        daemon.terminate()
        assert daemon.wait(TIMEOUT) == 0
        daemon.stderr.close()


def test_ctrl_c_cancels_a_warm_run_on_the_fast_path(install, tmp_path):
    project = own_project("daemon_slow", tmp_path)
    args = ("run", "-t", ".", "-s", "dslow")
    try:
        quick = "dslow.test_slow.TestSlow.test_quick"
        assert install.at_terminal(*args, quick, cwd=project)[0] == 0
        install.trap_cli()
        master, slave = pty.openpty()
        terminal = {"stdin": slave, "stdout": slave, "stderr": slave}
        command = [str(install.launcher), *args, "--format", "json"]
        client = subprocess.Popen(command, cwd=project, env=ENV, **terminal)
        os.close(slave)
        shown = b""
        waiting = b'"test_id": "dslow.test_slow.TestSlow.test_waits", "parent_id": null, "status"'
        while waiting + b': "inprogress"' not in shown:  # the JSON events, as tests start
            try:
                shown += os.read(master, 65536)
            except OSError:  # EIO: the command closed the terminal
                pytest.fail(f"the command ended before the test started: {shown!r}")
        client.send_signal(signal.SIGINT)  # the first Ctrl-C: cancel, show what ran
        assert client.wait(TIMEOUT) == 1
        events = [json.loads(line) for line in (shown + read_terminal(master)).splitlines()]
        outcomes = {e["test_id"]: e["status"] for e in events if e["event"] == "test"}
        assert outcomes[quick] == "success"
        assert (events[-1]["event"], events[-1]["ok"]) == ("summary", False)
        install.write_cli(CONSOLE_SCRIPT)
        [server] = servers(install, project)
        assert (server["busy"], server["runs"]) == (False, 2)  # back in the pool, warm
    finally:
        stop_daemon_of(project)
