"""The session core against today's real server: the same frames give the same completions.

Two replays. One write of frames (a malformed one, ``stdin`` and ``cancel`` with nothing running, a
``run-tests`` with a duplicate and an unknown id, ``list-tests``, ``reload`` on a server
without reload, ``quit``, and a command after it) goes to a real ``python -m testserver
--serve``. The same bytes go through the real ``FrameDecoder`` into a
:class:`ServerSession`, whose driver replays the real batch's packets. Both must write the
same completions in the same order, with one difference allowed: a batch with unknown ids
is ``"incomplete"`` in the core (the new status rule), ``"ok"`` in a server without it.
Then a batch whose worker dies twice: reporting the deaths where the real server saw them,
the core names the same victims and causes, redispatches the same rests and completes with
the same body.
"""

from __future__ import annotations

from typing import Any

from serverproc import ServerProcess, Transcript

from testserver.wire.commands import Cancel, ListTests, Quit, Reload, RunTests, Stdin
from testserver.wire.control import COMPLETE
from testserver.wire.errors import FrameError
from testserver.wire.framing import FrameDecoder, encode_command
from testserver.wire.packets import encode_packet
from testserver.wire.sentinels import END_OF_INPUT, NEED_DATA
from testserver.wire.serversession import ServerSession
from testserver.wire.sessionactions import (
    Action,
    Dispatch,
    Execute,
    Exit,
    ReportCrash,
    Send,
    StartBatch,
)

OUT = "ebasic.test_outcomes.Outcomes."
UNKNOWN = "ebasic.no_such_test"
FRAMES = b"".join(
    [
        b"frobnicate x1 0\n",
        encode_command(Stdin("s1", b"x")),
        encode_command(Cancel("c1")),
        encode_command(
            RunTests("r1", (OUT + "test_pass", OUT + "test_fail", UNKNOWN, OUT + "test_pass"))
        ),
        encode_command(ListTests("l1")),
        encode_command(Reload("x2")),
        encode_command(Quit("q1")),
        encode_command(ListTests("l2")),
    ]
)


def run_real() -> Transcript:
    server = ServerProcess("e2e_basic", "-t", ".", "-s", "ebasic", "--no-reload")
    try:
        server.send_raw(FRAMES)  # one write under PIPE_BUF: the server reads it whole
        transcript = server.wait_complete("l2")
        assert server.wait() == 0
    finally:
        server.kill()
    return transcript


class ReplayDriver:
    """Drives a ServerSession with the frames, replaying the real server's batch."""

    def __init__(self, real: Transcript) -> None:
        self.real = real
        self.session = ServerSession(can_reload=False)
        self.sent: list[dict[str, Any]] = []
        self.listed = [p.test_id for p in real.packets if p.status == "exists"]
        self.dispatched: Dispatch | None = None

    def run(self, data: bytes) -> list[dict[str, Any]]:
        decoder = FrameDecoder()
        decoder.receive_data(data)
        decoder.receive_data(b"")
        while True:
            try:
                event = decoder.next_event()
            except FrameError as error:
                self.act(
                    self.session.receive_frame_error(
                        error.command_id, error.command_name, error.code, error.message
                    )
                )
                continue
            if event is END_OF_INPUT or event is NEED_DATA:
                break
            self.act(self.session.receive_command(event, 0.0))
        self.replay_batch()
        return self.sent

    def replay_batch(self) -> None:
        """The dispatched batch's packets, as the real worker wrote them, then its end."""
        assert self.dispatched is not None
        for packet in self.real.packets:
            if packet.test_id in self.dispatched.test_ids:  # the worker's, not unknown ids'
                self.session.worker_packet(encode_packet(packet), 0.0)
        self.act(self.session.batch_ended())

    def real_completion(self, command_id: str) -> dict[str, Any]:
        return next(b for b in self.real.controls(COMPLETE) if b["id"] == command_id)

    def act(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self.sent.append(action.body)
            elif isinstance(action, StartBatch):
                requested = list(action.command.test_ids)
                found = [i for i in requested if i in self.listed]
                unknown = [i for i in requested if i not in self.listed]
                self.act(self.session.batch_resolved(found, unknown))
            elif isinstance(action, Dispatch):
                self.dispatched = action  # the worker runs while the rest of the frames is read
            elif isinstance(action, Execute):
                real = self.real_completion(action.command.id)
                fields = {
                    k: v
                    for k, v in real.items()
                    if k not in ("id", "command", "status", "generation")
                }
                self.act(self.session.command_finished(**fields))
            else:
                assert isinstance(action, Exit), action


def test_the_core_completes_like_the_real_server() -> None:
    real = run_real()
    ours = ReplayDriver(real).run(FRAMES)
    theirs = real.controls(COMPLETE)
    assert (
        [b["id"] for b in ours]
        == [b["id"] for b in theirs]
        == [
            "x1",
            "s1",
            "c1",
            "r1",
            "l1",
            "x2",
            "q1",
            "l2",
        ]
    )
    for mine, real_body in zip(ours, theirs, strict=True):
        if mine["id"] == "r1":
            assert mine["status"] == "incomplete" and real_body["status"] in ("ok", "incomplete")
            assert mine["unknown"] == [UNKNOWN] and mine["ran"] == 3
            mine, real_body = dict(mine), dict(real_body)
            for body in (mine, real_body):
                del body["status"]
                body.pop("message", None)
        assert mine == real_body
        assert list(mine) == list(real_body)  # the same JSON key order, so the same bytes


CRASHES = "ecrash.test_crashes.Crashes."
CRASH_MARK = b"testserver: the worker process running this test "


def replay_with_deaths(session: ServerSession, real: Transcript) -> list[Action]:
    """Feed the real batch's packets; where the real server reported a worker's death, report
    it to the session instead, and check the session writes the same crash text."""
    actions: list[Action] = []
    skip_fail_of = None
    for packet in real.packets:
        if packet.file_name == "traceback" and packet.file_bytes.startswith(CRASH_MARK):
            cause = packet.file_bytes[len(CRASH_MARK) : -2].decode()  # without ".\n"
            got = session.worker_died(cause.rpartition(" before this test")[0] or cause, 1.0)
            crash = got[0]
            assert isinstance(crash, ReportCrash) and crash.crash.victim == packet.test_id
            assert crash.crash.message.encode() == packet.file_bytes
            actions += got
            skip_fail_of = packet.test_id
        elif packet.test_id == skip_fail_of and packet.status == "fail":
            skip_fail_of = None  # the crash report's own final status: the driver wrote it
        elif packet.test_id is not None:
            session.worker_packet(encode_packet(packet), 1.0)
    return actions + session.batch_ended()


def test_the_core_accounts_for_crashes_like_the_real_server() -> None:
    ids = tuple(
        CRASHES + name for name in ("test_before", "test_os_exit", "test_segfault", "test_after")
    )
    server = ServerProcess("e2e_crash", "-t", ".", "-s", "ecrash")
    try:
        real = server.request(RunTests("r", ids))
    finally:
        server.kill()
    session = ServerSession()
    session.receive_command(RunTests("r", ids), 0.0)
    session.batch_resolved(list(ids), [])
    actions = replay_with_deaths(session, real)
    dispatches = [a.test_ids for a in actions if isinstance(a, Dispatch)]
    assert dispatches == [ids[2:], ids[3:]]  # after each death, the rest to a fresh worker
    (body,) = [a.body for a in actions if isinstance(a, Send)]
    assert body == real.complete
    assert body["crashes"] == [
        CRASHES + "test_os_exit: exited with status 3",
        CRASHES + "test_segfault: killed by signal 11 (SIGSEGV)",
    ]
