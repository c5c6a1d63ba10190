"""The warm-server daemon and its client (``python -m testserver.backends.testr``), end to end.

Every test gets its own ``TESTSERVER_DAEMON_DIR`` (so its own daemon), real subprocesses and real
Unix sockets. The fixture (``tests/daemonproc.py``) stops the daemon and checks that the
daemon, its servers and their workers are all gone.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
from daemonproc import DaemonHandle
from processes import gone
from serverproc import copy_project, subunit_events

from testserver.backends import testr
from testserver.clients.project import DAEMON_DIR_ENV
from testserver.wire.control import encode_control
from testserver.wire.packets import decode_packets, encode_status, file_packets

BASIC_ARGS = ["discover", "-t", ".", "-s", "dbasic"]
BASIC_IDS = {
    "dbasic.test_one.TestOne.test_a": "success",
    "dbasic.test_one.TestOne.test_b": "success",
    "dbasic.test_one.TestOne.test_skip": "skip",
    "dbasic.test_two.TestTwo.test_c": "success",
    "dbasic.test_two.TestTwo.test_fail": "fail",
    "dbasic.test_two.TestTwo.test_print": "success",
}
WAIT = 60.0
"""Upper bound for anything the tests wait for (they poll; nothing asserts on time)."""


# --------------------------------------------------------------------------- helpers


def wait_until(predicate, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def statuses(stdout: bytes) -> dict[str, str]:
    """Final status per test id, after checking python-subunit parses the stream cleanly."""
    assert not [e for e in subunit_events(stdout) if e.get("test_id") == "subunit.parser"]
    result = {}
    for packet in decode_packets(stdout):
        if packet.test_id and packet.status and packet.status != "inprogress":
            result[packet.test_id] = packet.status
    return result


def attachment(stdout: bytes, name: str, test_id: str | None = None) -> str:
    packets = decode_packets(stdout)
    data = b"".join(p.file_bytes for p in packets if p.file_name == name and p.test_id == test_id)
    return data.decode("utf-8", "replace")


@pytest.fixture
def daemon():
    handle = DaemonHandle()
    yield handle
    handle.close()


# --------------------------------------------------------------------------- arguments


def start_backend(daemon, project, args: list[str], output: int) -> subprocess.Popen:
    """``testserver-client ARGS`` (the warm testr backend) on ``daemon``, not waited for."""
    return subprocess.Popen(
        [sys.executable, "-m", "testserver.backends.testr", *args],
        cwd=project,
        env=daemon.env,
        stdout=output,
        stderr=output,
    )


def test_parse_args_canonical_server_args():
    inv = testr.parse_args(["discover", "-t", ".", "-s", "pkg/tests", "--list"])
    assert inv.server_args == ["-s", "pkg/tests", "-p", "test*.py", "-t", "."]
    assert inv.list_only and inv.load_list is None
    same = testr.parse_args(["discover", "pkg/tests", "test*.py", "."])
    assert same.server_args == inv.server_args


def test_parse_args_keeps_oneshot_argv_without_daemon_options():
    inv = testr.parse_args(["-s", "t", "--daemon-idle", "5", "--load-list=ids.txt", "-v"])
    assert inv.idle == 5.0
    assert inv.load_list == "ids.txt"
    assert inv.argv == ["-s", "t", "--load-list=ids.txt", "-v"]
    assert testr.parse_args(["--daemon-idle=7"]).idle == 7.0


def test_parse_args_names_and_server_options():
    inv = testr.parse_args(["pkg.test_x", "--isolation", "none", "--timeout=3"])
    assert inv.server_args == ["pkg.test_x", "--isolation", "none", "--timeout", "3"]


@pytest.mark.parametrize("argv", [["--daemon-idle", "0"], ["--daemon-idle=x"], ["--daemon-idle"]])
def test_parse_args_usage_errors(argv):
    with pytest.raises(testr.UsageError):
        testr.parse_args(argv)


@pytest.mark.parametrize("argv", [["--bogus"], ["-s"], ["-k", "x"], ["discover", *"abcd"]])
def test_parse_args_leaves_the_rest_to_oneshot(argv):
    with pytest.raises(testr.Unsupported) as caught:
        testr.parse_args([*argv, "--daemon-idle", "3"])
    assert caught.value.argv == argv


def test_client_bad_idle_exits_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "testserver.backends.testr", "--daemon-idle", "-1"],
        cwd=tmp_path,
        capture_output=True,
    )
    assert result.returncode == 2
    assert b"--daemon-idle must be positive" in result.stderr
    assert result.stdout == b""


def test_unsupported_options_run_oneshot(daemon, tmp_path):
    project = copy_project("daemon_basic", tmp_path)
    result = daemon.client(project, *BASIC_ARGS, "-k", "test_a")
    assert result.returncode == 0
    assert statuses(result.stdout) == {"dbasic.test_one.TestOne.test_a": "success"}
    assert b"option -k is not served by the daemon" in result.stderr
    bogus = daemon.client(project, *BASIC_ARGS, "--bogus")
    assert (bogus.returncode, bogus.stdout) == (2, b"")
    assert not daemon.directory.exists()  # no daemon was needed


# --------------------------------------------------------------------------- final packet


def test_split_final_packet_finds_the_daemons_packet():
    stream = bytearray(
        encode_status("a.b", "exists")
        + b"".join(file_packets("stdout", b"\xb3" * 300, test_id="a.b"))
        + encode_status("a.b", "success")
    )
    body = {"exit": 2, "stderr": "x\n" * 100, "warm": True}
    final = encode_control("testserver.complete", body, timestamp_ns=1_700_000_000_000_000_001)
    start, found = testr.split_final_packet(stream + final)
    assert (start, found) == (len(stream), body)


@pytest.mark.parametrize(
    "tail",
    [
        b"",
        encode_status("a.b", "success"),
        encode_control("testserver.hello", {"exit": 0}),  # another control event
        encode_control("testserver.complete", {"exit": 0})[:-1],  # truncated
        encode_control("testserver.complete", {"exit": 0})[:-1] + b"\x00",  # bad CRC
        b"".join(file_packets("testserver.complete", b"{}", test_id="t")),  # has a test id
    ],
)
def test_split_final_packet_rejects_anything_else(tail):
    data = bytearray(encode_status("a.b", "exists") + tail)
    assert testr.split_final_packet(data) == (len(data), None)


# --------------------------------------------------------------------------- end to end


def test_list_and_run_match_oneshot(daemon, tmp_path):
    project = copy_project("daemon_basic", tmp_path)
    listed = daemon.client(project, *BASIC_ARGS, "--list")
    assert listed.returncode == 0, listed.stderr
    expected = daemon.oneshot(project, *BASIC_ARGS, "--list")
    exists = dict.fromkeys(BASIC_IDS, "exists")
    assert statuses(listed.stdout) == statuses(expected.stdout) == exists

    ran = daemon.client(project, *BASIC_ARGS)
    assert ran.returncode == 0, ran.stderr
    assert statuses(ran.stdout) == BASIC_IDS
    assert statuses(daemon.oneshot(project, *BASIC_ARGS).stdout) == BASIC_IDS
    output = attachment(ran.stdout, "stdout", "dbasic.test_two.TestTwo.test_print")
    assert output == "hello from test_print\n"
    assert "AssertionError: 1 != 2" in attachment(
        ran.stdout, "traceback", "dbasic.test_two.TestTwo.test_fail"
    )


def test_load_list_selects_tests_for_run_and_list(daemon, tmp_path):
    project = copy_project("daemon_basic", tmp_path)
    ids = tmp_path / "ids.txt"
    ids.write_text(
        "dbasic.test_two.TestTwo.test_c\nno.such.test\n\ndbasic.test_one.TestOne.test_a\n"
    )
    listed = daemon.client(project, *BASIC_ARGS, "--list", "--load-list", str(ids))
    assert [p.test_id for p in decode_packets(listed.stdout)] == [
        "dbasic.test_two.TestTwo.test_c",
        "dbasic.test_one.TestOne.test_a",
    ]
    ran = daemon.client(project, *BASIC_ARGS, "--load-list", str(ids))
    assert ran.returncode == 1  # an unknown id is a requested test that did not run
    assert statuses(ran.stdout) == {
        "dbasic.test_two.TestTwo.test_c": "success",
        "no.such.test": "fail",
        "dbasic.test_one.TestOne.test_a": "success",
    }
    ids.write_text("")
    empty = daemon.client(project, *BASIC_ARGS, "--load-list", str(ids))
    assert (empty.returncode, empty.stdout) == (0, b"")


def test_second_run_is_warm(daemon, tmp_path):
    project = copy_project("daemon_basic", tmp_path)
    assert daemon.client(project, *BASIC_ARGS).returncode == 0
    first = daemon.status()
    assert daemon.client(project, *BASIC_ARGS, "--list").returncode == 0
    assert daemon.client(project, *BASIC_ARGS).returncode == 0
    second = daemon.status()
    assert second["pid"] == first["pid"]
    [server] = second["servers"]
    assert server["pid"] == first["servers"][0]["pid"]
    assert server["runs"] == 3
    real = os.path.realpath(project)
    assert server["project"] == real
    assert server["args"] == ["-s", f"{real}/dbasic", "-p", "test*.py", "-t", real]


def test_spellings_of_one_directory_share_a_server(daemon, tmp_path):
    project = copy_project("daemon_basic", tmp_path)
    for start in ("dbasic", "./dbasic", str(project / "dbasic"), "dbasic/../dbasic"):
        result = daemon.client(project, "discover", "-t", ".", "-s", start)
        assert result.returncode == 0, result.stderr
    [server] = daemon.status()["servers"]
    assert server["runs"] == 4


def test_warm_server_sees_edits(daemon, tmp_path):
    project = copy_project("daemon_basic", tmp_path)
    assert statuses(daemon.client(project, *BASIC_ARGS).stdout) == BASIC_IDS
    [server] = daemon.server_pids()
    module = project / "dbasic" / "test_two.py"
    module.write_text(module.read_text().replace("assertEqual(1, 2)", "assertEqual(2, 2)"))
    result = daemon.client(project, *BASIC_ARGS)
    assert statuses(result.stdout)["dbasic.test_two.TestTwo.test_fail"] == "success"
    assert daemon.server_pids() == [server]
    assert daemon.status()["servers"][0]["generation"] == 1


def test_other_load_arguments_get_another_server(daemon, tmp_path):
    project = copy_project("daemon_basic", tmp_path)
    assert daemon.client(project, *BASIC_ARGS).returncode == 0
    result = daemon.client(project, "discover", "-t", ".", "-s", "dbasic", "-p", "test_one.py")
    assert set(statuses(result.stdout)) == {i for i in BASIC_IDS if ".test_one." in i}
    assert len(daemon.server_pids()) == 2


def test_socket_is_private(daemon, tmp_path):
    project = copy_project("daemon_basic", tmp_path)
    assert daemon.client(project, *BASIC_ARGS, "--list").returncode == 0
    directory = os.stat(daemon.directory)
    assert stat.S_IMODE(directory.st_mode) == 0o700
    assert directory.st_uid == os.getuid()
    sock = os.stat(daemon.directory / testr.SOCKET_NAME)
    assert stat.S_ISSOCK(sock.st_mode)
    assert stat.S_IMODE(sock.st_mode) == 0o600
    log = os.stat(daemon.directory / testr.LOG_NAME)
    assert stat.S_IMODE(log.st_mode) & 0o077 == 0


def test_project_directory_by_default(daemon, tmp_path):
    project = copy_project("daemon_basic", tmp_path)
    del daemon.env[DAEMON_DIR_ENV]
    try:
        result = daemon.client(project, *BASIC_ARGS, "--list")
        assert result.returncode == 0, result.stderr
        directory = project / ".testserver"
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert (directory / testr.SOCKET_NAME).exists()
    finally:
        stop = daemon.command(project, ["-m", "testserver.backends.daemon", "stop"])
        assert stop.returncode == 0
    assert not (project / ".testserver" / testr.SOCKET_NAME).exists()


def test_open_directory_is_refused_and_oneshot_runs(daemon, tmp_path):
    project = copy_project("daemon_basic", tmp_path)
    daemon.directory.mkdir(mode=0o755)
    os.chmod(daemon.directory, 0o755)
    result = daemon.client(project, *BASIC_ARGS)
    assert result.returncode == 0
    assert statuses(result.stdout) == BASIC_IDS
    assert b"open to other users" in result.stderr
    assert b"one-shot mode" in result.stderr
    assert not (daemon.directory / testr.SOCKET_NAME).exists()


def test_no_daemon_environment_runs_oneshot(daemon, tmp_path):
    project = copy_project("daemon_basic", tmp_path)
    daemon.env[testr.NO_DAEMON_ENV] = "1"
    result = daemon.client(project, *BASIC_ARGS)
    assert statuses(result.stdout) == BASIC_IDS
    assert not daemon.directory.exists()


def test_import_errors_list_exits_2_like_oneshot(daemon, tmp_path):
    project = copy_project("daemon_broken", tmp_path)
    args = ["discover", "-t", ".", "-s", "dbroken"]
    listed = daemon.client(project, *args, "--list")
    expected = daemon.oneshot(project, *args, "--list")
    assert listed.returncode == expected.returncode == 2
    assert statuses(listed.stdout) == statuses(expected.stdout)
    assert "unittest.loader._FailedTest.dbroken.test_broken" in statuses(listed.stdout)
    text = attachment(listed.stdout, "import errors")
    assert "No module named 'no_such_module_for_testserver'" in text
    assert "dbroken.test_broken" in text
    ran = daemon.client(project, *args)
    assert ran.returncode == 0
    assert statuses(ran.stdout) == {
        "unittest.loader._FailedTest.dbroken.test_broken": "fail",
        "dbroken.test_ok.TestOk.test_ok": "success",
    }


def test_unloadable_start_directory_is_a_usage_error(daemon, tmp_path):
    project = copy_project("daemon_basic", tmp_path)
    result = daemon.client(project, "discover", "-t", ".", "-s", "no_such_dir")
    expected = daemon.oneshot(project, "discover", "-t", ".", "-s", "no_such_dir")
    assert result.returncode == expected.returncode == 2
    assert result.stdout == b""
    assert b"no_such_dir" in result.stderr
    assert daemon.status()["servers"] == []


def test_killed_idle_server_is_replaced(daemon, tmp_path):
    project = copy_project("daemon_basic", tmp_path)
    assert daemon.client(project, *BASIC_ARGS).returncode == 0
    [old] = daemon.server_pids()
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: gone(old), "the killed server to exit")
    result = daemon.client(project, *BASIC_ARGS)
    assert result.returncode == 0, result.stderr
    assert statuses(result.stdout) == BASIC_IDS
    [new] = daemon.server_pids()
    assert new != old


def test_server_dying_mid_run_is_a_failing_test(daemon, tmp_path):
    project = copy_project("daemon_crash", tmp_path)
    args = ["discover", "-t", ".", "-s", "dcrash"]
    result = daemon.client(project, *args)
    assert result.returncode == 1
    found = statuses(result.stdout)
    # test_a's result is reported if the server forwarded it before test_b killed the server
    assert found.get("dcrash.test_crash.TestCrash.test_a_passes") in (None, "success")
    assert found[testr.ERROR_TEST_ID] == "fail"
    reason = attachment(result.stdout, "traceback", testr.ERROR_TEST_ID)
    assert "killed by signal 9 (SIGKILL)" in reason
    assert "fresh server" in reason
    assert daemon.status()["servers"] == []
    listed = daemon.client(project, *args, "--list")  # replaced by a new server
    assert listed.returncode == 0
    assert len(statuses(listed.stdout)) == 2


def test_client_going_away_cancels_the_run_and_keeps_the_server(daemon, tmp_path):
    project = copy_project("daemon_slow", tmp_path)
    args = ["discover", "-t", ".", "-s", "dslow"]
    assert daemon.client(project, *args, "--list").returncode == 0
    [server] = daemon.server_pids()
    started = project / "dslow" / "started"
    client = start_backend(daemon, project, args, subprocess.DEVNULL)
    try:
        wait_until(started.exists, "test_waits to start")
    finally:
        client.kill()
        client.wait()

    def cancelled() -> bool:
        [status] = daemon.status()["servers"]
        return not status["busy"]

    wait_until(cancelled, "the daemon to cancel the abandoned run")
    ids = tmp_path / "ids.txt"
    ids.write_text("dslow.test_slow.TestSlow.test_quick\n")
    result = daemon.client(project, *args, "--load-list", str(ids))
    assert statuses(result.stdout) == {"dslow.test_slow.TestSlow.test_quick": "success"}
    assert daemon.server_pids() == [server]  # the cancelled batch gave the server back


def test_daemon_dying_mid_run_is_a_failing_test(daemon, tmp_path):
    project = copy_project("daemon_slow", tmp_path)
    args = ["discover", "-t", ".", "-s", "dslow"]
    client = start_backend(daemon, project, args, subprocess.PIPE)
    try:
        wait_until((project / "dslow" / "started").exists, "test_waits to start")
        status = daemon.status()
        os.kill(status["pid"], signal.SIGKILL)
        stdout, _ = client.communicate(timeout=WAIT)
    finally:
        (project / "dslow" / "release").touch()  # lets the orphaned server finish and exit
        client.kill()
        client.wait()
    assert client.returncode == 1
    found = statuses(stdout)
    assert found["dslow.test_slow.TestSlow.test_quick"] == "success"
    assert found[testr.ERROR_TEST_ID] == "fail"
    assert "closed the connection" in attachment(stdout, "traceback", testr.ERROR_TEST_ID)
    wait_until(lambda: all(gone(pid) for pid in daemon.pids), "the orphaned server to exit")


def test_killed_daemon_is_replaced(daemon, tmp_path):
    project = copy_project("daemon_basic", tmp_path)
    assert daemon.client(project, *BASIC_ARGS, "--list").returncode == 0
    old = daemon.status()
    os.kill(old["pid"], signal.SIGKILL)
    wait_until(lambda: gone(old["pid"]), "the daemon to die")
    assert (daemon.directory / testr.SOCKET_NAME).exists()  # stale: nobody listens
    # Its servers see end of input and exit by themselves.
    wait_until(lambda: all(gone(s["pid"]) for s in old["servers"]), "orphaned servers to exit")
    result = daemon.client(project, *BASIC_ARGS)
    assert result.returncode == 0, result.stderr
    assert statuses(result.stdout) == BASIC_IDS
    assert daemon.status()["pid"] != old["pid"]


def test_concurrent_requests_run_on_separate_servers(daemon, tmp_path):
    project = copy_project("daemon_parallel", tmp_path)
    args = ["discover", "-t", ".", "-s", "dpar"]
    clients = []
    for test_id in ("dpar.test_left.TestLeft.test_left", "dpar.test_right.TestRight.test_right"):
        ids = tmp_path / f"{test_id}.txt"
        ids.write_text(test_id + "\n")
        clients.append(
            subprocess.Popen(
                [sys.executable, "-m", "testserver.backends.testr", *args, "--load-list", str(ids)],
                cwd=project,
                env=daemon.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    outputs = [client.communicate(timeout=120) for client in clients]
    found = {}
    for stdout, _ in outputs:
        found.update(statuses(stdout))
    assert found == {
        "dpar.test_left.TestLeft.test_left": "success",
        "dpar.test_right.TestRight.test_right": "success",
    }
    assert len(daemon.server_pids()) == 2


def test_idle_daemon_stops_by_itself(daemon, tmp_path):
    project = copy_project("daemon_basic", tmp_path)
    assert daemon.client(project, *BASIC_ARGS, "--daemon-idle", "1").returncode == 0
    status = daemon.status()
    assert status["idle_timeout"] == 1.0
    pids = [status["pid"], *daemon.pids]
    wait_until(lambda: not daemon.status()["running"], "the idle daemon to stop")  # no activity
    wait_until(lambda: all(gone(pid) for pid in pids), "the daemon's processes to exit")
    assert not (daemon.directory / testr.SOCKET_NAME).exists()
    assert "stopping: no request for 1 s" in (daemon.directory / testr.LOG_NAME).read_text()


def test_daemon_commands(daemon, tmp_path):
    start = daemon.command(
        daemon.elsewhere, ["-m", "testserver.backends.daemon", "start", "--idle", "60"]
    )
    assert start.returncode == 0, start.stderr
    assert b"running (pid" in start.stdout
    status = daemon.status()
    assert status["running"] and status["servers"] == [] and status["idle_timeout"] == 60
    again = daemon.command(daemon.elsewhere, ["-m", "testserver.backends.daemon", "start"])
    assert f"pid {status['pid']}".encode() in again.stdout  # the same daemon
    daemon.stop()
    assert gone(status["pid"])
    stopped = daemon.command(daemon.elsewhere, ["-m", "testserver.backends.daemon", "status"])
    assert stopped.returncode == 1
    assert json.loads(stopped.stdout)["running"] is False


def test_stestr_shim_hands_other_commands_to_python(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "testserver.backends.testr",
            "--stestr",
            "-c",
            "import sys; print(sys.argv)",
        ],
        cwd=tmp_path,
        capture_output=True,
    )
    assert (result.returncode, result.stdout) == (0, b"['-c']\n")


def test_stestr_shim_serves_the_discover_runner(daemon, tmp_path):
    project = copy_project("daemon_basic", tmp_path)
    runner = ["--stestr", "-m", "stestr.subunit_runner.run", "discover", "-t", "./", "./dbasic"]
    result = daemon.client(project, *runner)
    assert result.returncode == 0, result.stderr
    assert statuses(result.stdout) == BASIC_IDS
    [server] = daemon.status()["servers"]
    real = os.path.realpath(project)
    assert server["args"] == ["-s", f"{real}/dbasic", "-p", "test*.py", "-t", real]


def test_client_imports_stay_light(daemon, tmp_path):
    project = copy_project("daemon_basic", tmp_path)
    assert daemon.client(project, *BASIC_ARGS, "--list").returncode == 0  # daemon is up
    result = daemon.command(
        project, ["-X", "importtime", "-m", "testserver.backends.testr", *BASIC_ARGS]
    )
    assert result.returncode == 0
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.decode().splitlines()
        if line.startswith("import time:") and "|" in line
    }
    heavy = {"testtools", "subunit", "unittest", "dataclasses", "argparse", "subprocess"}
    assert not heavy & imported, heavy & imported
