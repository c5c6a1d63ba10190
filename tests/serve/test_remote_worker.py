"""A :class:`RemoteWorker` slot against a real testserver behind a real SSH server.

Each test drives the slot as the pool's driver does (poll its fds, call ``on_readable`` and
``on_stdin_writable``) over ``ssh`` to the asyncssh server of :mod:`sshfixture`, and decodes
what it wrote with python-subunit's ``ByteStreamToStreamResult``.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from serverproc import DEFAULT_TIMEOUT, subunit_events
from sshfixture import (  # noqa: F401 - the fixtures
    SSHServer,
    finals,
    project,
    release,
    ssh_server,
)

from testserver.serve.poolworker import WorkerEnd
from testserver.serve.remote import RemoteWorker
from testserver.wire.batchtracking import Crash
from testserver.wire.control import STDIN_WANTED, decode_control
from testserver.wire.packets import decode_packets
from testserver.wire.splitting import classify, split_packets

WORK = "rbasic.test_work.Work"
GATE = "rbasic.test_work.Gate.test_waits"


class Slot:
    """A remote slot of one batch and what it wrote and fed."""

    def __init__(self, worker: RemoteWorker, command_id: str = "batch1") -> None:
        self.worker = worker
        self.out = bytearray()
        self.fed: list[bytes] = []
        worker.attach(command_id, self.out.extend, self._feed)

    def _feed(self, raw: bytes):
        self.fed.append(raw)
        return classify(raw)

    def run(self, until: Callable[[bytes], bool] = lambda out: False) -> WorkerEnd | None:
        """Poll until the unit ends (its :class:`WorkerEnd`) or ``until(out)`` (``None``),
        as the driver does: its fds, its stdin, and its exit while that is awaited."""
        deadline = time.monotonic() + DEFAULT_TIMEOUT
        while not until(bytes(self.out)):
            poller = select.poll()
            for fd in self.worker.fds():
                poller.register(fd, select.POLLIN)
            stdin_fd = self.worker.stdin_fd()
            if stdin_fd is not None:
                poller.register(stdin_fd, select.POLLOUT)
            assert time.monotonic() < deadline, f"timed out; wrote {bytes(self.out)!r}"
            check = self.worker.exit_check_deadline()
            wait = 1000 if check is None else max(0, int((check - time.monotonic()) * 1000))
            ready = dict(poller.poll(wait))
            if stdin_fd in ready:
                self.worker.on_stdin_writable()
            end = None
            if any(fd in ready for fd in self.worker.fds()):
                end = self.worker.on_readable()
            if end is None and self.worker.exit_check_deadline() is not None:
                end = self.worker.check_exit()
            if end is not None:
                return end
        return None


@pytest.fixture
def remote(ssh_server: SSHServer, project: Path) -> Iterator[RemoteWorker]:  # noqa: F811
    gate = project / "gate.fifo"
    command = ssh_server.serve_command(
        project, "-t", ".", "-s", "rbasic", env={"RBASIC_GATE": str(gate)}
    )
    logged: list[str] = []
    worker = RemoteWorker(command, 3, log=logged.append)
    yield worker
    release(gate)
    worker.shutdown()
    assert not worker.connected


def test_a_unit_runs_remotely_and_its_packets_carry_the_worker_tag(remote):
    slot = Slot(remote)
    remote.dispatch((f"{WORK}.test_a", f"{WORK}.test_b"))
    assert slot.run() == WorkerEnd()
    assert finals(bytes(slot.out)) == {
        f"{WORK}.test_a": ("success", {"worker-3"}),
        f"{WORK}.test_b": ("success", {"worker-3"}),
    }
    events = subunit_events(bytes(slot.out))
    assert all(e.get("test_tags") == {"worker-3"} for e in events if e.get("test_id")), events
    output = [e for e in events if e.get("file_name") == "stdout"]
    assert output[0]["file_bytes"] == b"b ran\n"
    assert slot.fed == split_packets(bytearray(slot.out))  # each packet fed, then written
    assert not any(decode_control(p) for p in decode_packets(bytes(slot.out)))  # no hello


def test_an_untagged_slot_relays_the_packets_as_they_were(remote):
    slot = Slot(remote)
    remote.attach("batch1", slot.out.extend, slot._feed, tagged=False)
    remote.dispatch((f"{WORK}.test_b",))
    assert slot.run() == WorkerEnd()
    packets = decode_packets(bytes(slot.out))
    assert [(p.test_id, p.status, p.file_name) for p in packets] == [
        (f"{WORK}.test_b", "inprogress", None),
        (f"{WORK}.test_b", None, "stdout"),
        (f"{WORK}.test_b", "success", None),
    ]
    assert all(p.tags is None for p in packets)
    assert packets[0].timestamp_ns and packets[2].timestamp_ns  # kept from the remote


def test_the_connection_stays_warm_across_units_and_batches(remote):
    first = Slot(remote)
    remote.dispatch((f"{WORK}.test_a",))
    assert first.run() == WorkerEnd()
    pid, hello_pid = remote.pid(), remote.hello["pid"]
    remote.close()  # the batch ended: the remote stays
    second = Slot(remote, "batch2")
    remote.dispatch((f"{WORK}.test_c", f"{WORK}.test_d"))
    assert second.run() == WorkerEnd()
    assert (remote.pid(), remote.hello["pid"]) == (pid, hello_pid)
    assert set(finals(bytes(second.out))) == {f"{WORK}.test_c", f"{WORK}.test_d"}


def test_a_remote_killed_mid_unit_ends_it_with_the_reason_then_reconnects(
    remote,
    project,  # noqa: F811
):
    slot = Slot(remote)
    remote.dispatch((f"{WORK}.test_a", GATE, f"{WORK}.test_b"))
    assert slot.run(until=lambda out: _started(out, GATE)) is None
    os.kill(int((project / "remote.pid").read_text()), signal.SIGKILL)
    end = slot.run()
    assert end is not None and end.cause is not None
    assert "disconnected: the remote's output ended before the unit completed" in end.cause
    assert "COMMAND exited with status 137" in end.cause  # ssh passes on the kill
    assert not remote.connected
    assert finals(bytes(slot.out)) == {f"{WORK}.test_a": ("success", {"worker-3"})}
    release(project / "gate.fifo")
    again = Slot(remote, "batch2")
    remote.dispatch((f"{WORK}.test_b",))
    assert again.run() == WorkerEnd()
    assert finals(bytes(again.out)) == {f"{WORK}.test_b": ("success", {"worker-3"})}


def test_a_command_that_fails_to_start_says_how(ssh_server):  # noqa: F811
    worker = RemoteWorker(ssh_server.command("cd /nonexistent/src && python -m testserver"), 1)
    slot = Slot(worker)
    worker.dispatch((f"{WORK}.test_a",))
    end = slot.run()
    assert end is not None and end.cause is not None
    assert "failed to start: its output ended before the remote's hello" in end.cause
    assert "COMMAND exited with status 2" in end.cause
    assert "/nonexistent/src" in end.cause  # the shell's own message, from its stderr
    assert slot.out == b"" and not worker.connected


def test_cancel_reaches_the_remote_and_its_unit_completes(remote, project):  # noqa: F811
    slot = Slot(remote)
    remote.dispatch((GATE, f"{WORK}.test_a"))
    assert slot.run(until=lambda out: _started(out, GATE)) is None
    remote.interrupt()
    assert slot.run() == WorkerEnd()
    found = finals(bytes(slot.out))
    assert found == {GATE: ("fail", {"worker-3"})}  # test_a: not run, as the remote said
    traceback = [e for e in subunit_events(bytes(slot.out)) if e.get("file_name") == "traceback"]
    assert b"cancelled" in traceback[0]["file_bytes"]


def test_stdin_wanted_comes_under_the_batch_id_and_stdin_reaches_the_test(remote):
    slot = Slot(remote, "mybatch")
    remote.dispatch(("rbasic.test_work.Asks.test_readline",))
    assert slot.run(until=lambda out: bool(_controls(out, STDIN_WANTED))) is None
    wanted = _controls(bytes(slot.out), STDIN_WANTED)
    assert wanted == [{"id": "mybatch", "test_id": "rbasic.test_work.Asks.test_readline"}]
    remote.send_stdin(b"hello\n")
    remote.on_stdin_writable()
    assert slot.run() == WorkerEnd()
    output = [e for e in subunit_events(bytes(slot.out)) if e.get("file_name") == "stdout"]
    assert b"".join(e["file_bytes"] for e in output) == b"read 'hello\\n'\n"


def _started(out: bytes, test_id: str) -> bool:
    return any(p.test_id == test_id and p.status == "inprogress" for p in decode_packets(out))


def _controls(out: bytes, name: str) -> list[dict]:
    found = []
    for packet in decode_packets(out):
        control = decode_control(packet)
        if control is not None and control[0] == name:
            found.append(control[1])
    return found


def test_a_crash_report_is_tagged_as_the_remote_packets_are(remote):
    slot = Slot(remote)
    crash = Crash("rbasic.x.X.test_x", "timed out", "testserver: the worker process ...\n")
    remote.report_crash(crash)  # the session's ReportCrash after a kill
    assert finals(bytes(slot.out)) == {"rbasic.x.X.test_x": ("fail", frozenset({"worker-3"}))}
