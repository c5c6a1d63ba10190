"""``examples/remote/.testr.conf``: testr's instance hooks over real ssh to loopback.

testrepository provisions two instances (two names of this machine), copies its id lists to
them with ``execute.sh`` and runs one-shot testserver there, through the real ``ssh`` client
and the asyncssh server of :mod:`sshfixture`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sshfixture import SSHServer, ssh_server  # noqa: F401 - the fixture
from subunit_reader import read_with_subunit

EXAMPLES = Path(__file__).parents[2] / "examples"
BIN = Path(sys.executable).parent
TOOL_TIMEOUT = 180


def test_testr_runs_calc_on_two_ssh_instances(tmp_path: Path, ssh_server: SSHServer):  # noqa: F811
    testr = BIN / "testr"
    if not testr.exists():
        pytest.skip(f"testr is not installed next to {sys.executable} (pip install '.[test]')")
    calc = shutil.copytree(EXAMPLES / "calc", tmp_path / "calc")
    config = shutil.copytree(EXAMPLES / "remote", tmp_path / "remote")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHON": sys.executable,
        "TESTSERVER_SSH": shlex.join([*ssh_server.ssh(), "-T"]),
        "TESTSERVER_REMOTE_HOSTS": "localhost 127.0.0.1",
        "TESTSERVER_REMOTE_DIR": str(calc),
    }

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(testr), *argv],
            cwd=config,
            env=env,
            capture_output=True,
            timeout=TOOL_TIMEOUT,
        )

    assert run("init").returncode == 0
    result = run("run", "--parallel", "--concurrency", "2")
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    assert "running=./provision.sh 2" in output
    executed = re.findall(r"running=\./execute\.sh (\S+) \"(/\S+)\"", output)
    assert {host for host, _ in executed} == {"localhost", "127.0.0.1"}  # one partition each
    assert "running=./dispose.sh" in output
    last = run("last", "--subunit")
    finals = {
        e["test_id"]: e["test_status"]
        for e in read_with_subunit(last.stdout)
        if e.get("test_status") not in (None, "exists", "inprogress")
    }
    listing = subprocess.run(
        [sys.executable, "-m", "testserver", "-t", ".", "-s", "calc/tests", "--list"],
        cwd=calc,
        capture_output=True,
        timeout=TOOL_TIMEOUT,
    )
    listed = {e["test_id"] for e in read_with_subunit(listing.stdout)}
    assert listed <= set(finals), listed - set(finals)  # every test ran on one instance
    assert set(finals.values()) <= {"success", "skip", "xfail"}
