"""``--worker-command`` end to end: a real server, real ssh, a real testserver behind it.

The server under test is ``python -m testserver --serve`` (or one-shot mode) over real
pipes; its remote workers are ``ssh`` commands to the asyncssh server of :mod:`sshfixture`,
which start another testserver on a copy of the project. Streams are decoded with
python-subunit's ``ByteStreamToStreamResult``; the ``worker-K`` tags say who ran what.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from serverproc import (
    DEFAULT_TIMEOUT,
    PROJECTS,
    ServerProcess,
    save_as_editors_do,
    subunit_events,
)
from sshfixture import (  # noqa: F401 - the fixtures
    SSHServer,
    finals,
    project,
    release,
    ssh_server,
)

from testserver.wire.commands import Cancel, Quit, RunTests, Stdin
from testserver.wire.control import STDIN_WANTED, decode_control
from testserver.wire.events import Packet

WORK = "rbasic.test_work.Work"
GATE = "rbasic.test_work.Gate.test_waits"
ASKS = "rbasic.test_work.Asks.test_readline"
ALL = {f"{WORK}.test_a", f"{WORK}.test_b", f"{WORK}.test_c", f"{WORK}.test_d", GATE, ASKS}
LOAD = ("-t", ".", "-s", "rbasic")


def remote(ssh: SSHServer, root: Path, *, gate: bool = True) -> str:
    """The ``--worker-command`` for a testserver on the project at ``root`` through ssh."""
    env = {"RBASIC_GATE": str(root / "gate.fifo")} if gate else {}
    return ssh.serve_command(root, *LOAD, env=env)


def started(test_id: str, tag: str | None):
    """A predicate: ``test_id`` started, in worker ``tag`` (``None``: the only worker)."""
    tags = None if tag is None else (tag,)
    return lambda p: p.test_id == test_id and p.status == "inprogress" and p.tags == tags


def serve(root: Path, *args: str) -> ServerProcess:
    return ServerProcess(root, *LOAD, *args)


def finish(server: ServerProcess) -> None:
    server.request(Quit("q"))
    assert server.wait() == 0


def test_a_remote_and_a_local_worker_share_a_batch(ssh_server, project):  # noqa: F811
    command = remote(ssh_server, project, gate=False)
    server = serve(project, "--jobs", "1", "--worker-command", command)
    try:
        ids = tuple(sorted(ALL - {ASKS}))  # no test waits for input here
        transcript = server.request(RunTests("r", ids))
        assert transcript.complete["status"] == "ok", transcript.complete
        assert "lost" not in transcript.complete
        results = finals(transcript.raw)
        assert set(results) == set(ids)
        assert {status for status, _ in results.values()} == {"success"}
        tags = {tags for _, tags in results.values()}
        assert tags == {frozenset({"worker-0"}), frozenset({"worker-1"})}  # both ran tests
        finish(server)
    finally:
        server.kill()


def test_remote_workers_only_stay_connected_between_batches(ssh_server, project):  # noqa: F811
    command = remote(ssh_server, project, gate=False).replace(
        "echo $$ > remote.pid", "echo $$ >> connections"
    )
    server = serve(project, "--jobs", "0", "--worker-command", command)
    try:
        first = server.request(RunTests("one", (f"{WORK}.test_a",)))
        second = server.request(RunTests("two", tuple(sorted(ALL - {ASKS}))))
        assert finals(first.raw) == {f"{WORK}.test_a": ("success", frozenset())}  # one worker
        assert set(finals(second.raw)) == ALL - {ASKS}
        assert {tags for _, tags in finals(second.raw).values()} == {frozenset()}
        assert len((project / "connections").read_text().split()) == 1  # one ssh, still warm
        finish(server)
    finally:
        server.kill()
    remote_pid = int((project / "connections").read_text())
    assert not _alive(remote_pid)  # quit reached it: the remote server exited with us


def test_a_remote_killed_mid_batch_loses_nothing(ssh_server, project):  # noqa: F811
    server = serve(project, "--jobs", "1", "--worker-command", remote(ssh_server, project))
    try:
        # Units go out in the requested order: worker-0 takes test_a, worker-1 the gate.
        order = (f"{WORK}.test_a", GATE, f"{WORK}.test_b", f"{WORK}.test_c", f"{WORK}.test_d")
        server.send(RunTests("r", order))
        before = server.read_until(started(GATE, "worker-1"))
        os.kill(int((project / "remote.pid").read_text()), signal.SIGKILL)
        rest = server.wait_complete("r")
        complete = rest.complete
        assert complete["status"] == "ok", complete  # every test ran, the gate test too
        assert complete["not_run"] == [] and "crashes" not in complete
        [lost] = complete["lost"]
        assert lost.startswith("worker-1: remote ")
        assert "disconnected: the remote's output ended before the unit completed" in lost
        assert "COMMAND exited with status 137" in lost
        results = finals(before.raw + rest.raw)
        assert results == {test_id: ("success", frozenset({"worker-0"})) for test_id in order}
        finish(server)
        assert "worker-1 lost: remote " in server.stderr_text()
    finally:
        server.kill()


def test_a_remote_whose_command_fails_to_start(ssh_server, project):  # noqa: F811
    refused = ssh_server.command("true").replace(f"-p {ssh_server.port}", "-p 1")
    server = serve(project, "--jobs", "1", "--worker-command", refused)
    try:
        transcript = server.request(RunTests("r", tuple(sorted(ALL - {ASKS}))))
        complete = transcript.complete
        assert complete["status"] == "ok", complete  # the local worker ran everything
        assert {tags for _, tags in finals(transcript.raw).values()} == {frozenset({"worker-0"})}
        [lost] = complete["lost"]
        assert "failed to start: its output ended before the remote's hello" in lost
        assert "COMMAND exited with status 255" in lost  # ssh's own failure
        assert "Connection refused" in lost  # the tail of ssh's stderr
        finish(server)
        assert "failed to start" in server.stderr_text()
    finally:
        server.kill()


def test_cancel_reaches_the_remote(ssh_server, project):  # noqa: F811
    server = serve(project, "--jobs", "0", "--worker-command", remote(ssh_server, project))
    try:
        server.send(RunTests("r", (GATE, f"{WORK}.test_a")))
        before = server.read_until(started(GATE, None))
        server.send(Cancel("c"))
        rest = server.wait_complete("r")
        assert rest.complete["status"] == "cancelled"
        assert rest.complete["not_run"] == [f"{WORK}.test_a"]
        assert finals(before.raw + rest.raw) == {GATE: ("fail", frozenset())}
        assert b"cancelled" in _attachment(before.packets + rest.packets, GATE, "traceback")
        cancel = server.wait_complete("c")
        assert cancel.complete["cancelled"] == "r"
        finish(server)
    finally:
        server.kill()


def test_stdin_reaches_the_remote_test_that_waits(ssh_server, project):  # noqa: F811
    server = serve(project, "--jobs", "1", "--worker-command", remote(ssh_server, project))
    try:
        # worker-0 takes test_a, worker-1 (the remote) the test that reads stdin.
        server.send(RunTests("r", (f"{WORK}.test_a", ASKS)))
        wanted = server.read_until(lambda p: _control(p, STDIN_WANTED) is not None)
        assert _control(wanted.packets[-1], STDIN_WANTED) == {"id": "r", "test_id": ASKS}
        server.send(Stdin("in", b"hello\n"))
        rest = server.wait_complete("r")
        assert finals(wanted.raw + rest.raw)[ASKS] == ("success", frozenset({"worker-1"}))
        output = _attachment(wanted.packets + rest.packets, ASKS, "stdout")
        assert output == b"read 'hello\\n'\n"
        finish(server)
    finally:
        server.kill()


def test_one_shot_mode_with_a_lost_remote_reports_the_rest_not_run(ssh_server, project):  # noqa: F811
    command = remote(ssh_server, project).replace("exec env", "exit 7; exec env")
    result = subprocess.run(
        [sys.executable, "-m", "testserver", *LOAD, "--jobs", "0", "--worker-command", command],
        cwd=project,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=DEFAULT_TIMEOUT,
    )
    assert result.returncode == 1, result.stderr
    results = finals(result.stdout)
    assert set(results) == ALL and {s for s, _ in results.values()} == {"fail"}
    tracebacks = [e for e in subunit_events(result.stdout) if e.get("file_name") == "traceback"]
    assert all(b"no worker was left to run it" in e["file_bytes"] for e in tracebacks)
    assert all(b"COMMAND exited with status 7" in e["file_bytes"] for e in tracebacks)
    assert b"worker-0 lost" in result.stderr


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _control(packet: Packet, name: str) -> dict | None:
    control = decode_control(packet)
    return control[1] if control is not None and control[0] == name else None


def _attachment(packets: list[Packet], test_id: str, name: str) -> bytes:
    return b"".join(p.file_bytes for p in packets if p.test_id == test_id and p.file_name == name)


def test_testserver_run_passes_worker_commands_on(ssh_server, project):  # noqa: F811
    command = remote(ssh_server, project, gate=False)
    argv = [sys.executable, "-m", "testserver", "run", "--no-daemon", *LOAD]
    argv += ["--format", "subunit", "--worker-command", command]
    ids = sorted(ALL - {ASKS})
    result = subprocess.run(
        [*argv, *ids], cwd=project, capture_output=True, timeout=DEFAULT_TIMEOUT
    )
    assert result.returncode == 0, result.stderr
    results = finals(result.stdout)
    assert set(results) == set(ids) and {s for s, _ in results.values()} == {"success"}
    assert frozenset({"worker-1"}) in {tags for _, tags in results.values()}  # the remote ran


def test_a_remote_test_past_the_timeout_fails_and_the_remote_is_started_again(
    ssh_server,  # noqa: F811
    project,  # noqa: F811
):
    server = serve(
        project, "--jobs", "0", "--timeout", "1", "--worker-command", remote(ssh_server, project)
    )
    try:
        transcript = server.request(RunTests("r", (GATE, f"{WORK}.test_a")))
        complete = transcript.complete
        assert complete["status"] == "ok", complete  # each test got its result
        [crash] = complete["crashes"]
        assert crash.startswith(f"{GATE}: timed out after 1 s (remote ")
        assert "was killed by testserver" in crash and "lost" not in complete
        assert finals(transcript.raw) == {
            GATE: ("fail", frozenset()),
            f"{WORK}.test_a": ("success", frozenset()),  # on a new connection
        }
        finish(server)
    finally:
        server.kill()


def test_a_warm_remote_reloads_its_own_tree_between_batches(ssh_server, project):  # noqa: F811
    command = remote(ssh_server, project, gate=False)
    server = serve(project, "--no-reload", "--jobs", "0", "--worker-command", command)
    try:
        first = server.request(RunTests("one", (f"{WORK}.test_c",)))
        assert finals(first.raw) == {f"{WORK}.test_c": ("success", frozenset())}
        save_as_editors_do(
            project / "rbasic" / "test_work.py", "self.assertEqual(1, 1)", "self.assertEqual(1, 2)"
        )
        second = server.request(RunTests("two", (f"{WORK}.test_c",)))  # the local one: --no-reload
        assert finals(second.raw) == {f"{WORK}.test_c": ("fail", frozenset())}
        assert not second.controls("testserver.reload")  # the remote's reload stays there
        finish(server)
    finally:
        server.kill()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--worker-command", " "), "--worker-command: the command is empty"),
        (("--jobs", "0"), "0 local workers needs at least one --worker-command"),
        (
            ("--isolation", "none", "--worker-command", "true"),
            "--worker-command needs --isolation worker or fork",
        ),
    ],
)
def test_bad_worker_options_are_usage_errors(args: tuple[str, ...], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "testserver", "--serve", *LOAD, *args],
        cwd=PROJECTS / "remote_basic",
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=DEFAULT_TIMEOUT,
    )
    assert (result.returncode, result.stdout) == (2, b"")
    assert message in result.stderr.decode()
