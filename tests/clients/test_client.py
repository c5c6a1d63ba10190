"""The client library against a real server: a command's reply, and what a dead server loses."""

from __future__ import annotations

import pytest
from serverproc import PROJECTS

from testserver.clients.client import Client, Reply, ServerClosed, ServerDied
from testserver.wire.clientsession import Lost, StreamPacket
from testserver.wire.commands import ListTests, RunTests

SLEEPS = "cslow.test_slow.Slow.test_b_sleeps"


@pytest.fixture
def slow() -> Client:
    client = Client.spawn(["-t", ".", "-s", "cslow"], cwd=PROJECTS / "cli_slow")
    yield client
    client.close()


def test_a_reply_ends_at_its_own_completion_and_keeps_it(slow):
    reply = slow.follow(ListTests(slow.new_id()))
    ids = [packet.test_id for packet in reply]
    assert ids == [f"cslow.test_slow.Slow.test_{n}" for n in ("a_fast", "b_sleeps", "c_after")]
    assert reply.completed is not None and reply.complete == reply.completed.body
    assert reply.complete["id"] == reply.id and reply.step() is None


def test_the_error_that_ends_the_stream_lists_the_commands_lost_with_their_context(slow):
    command = RunTests(slow.new_id(), (SLEEPS,))
    slow.send(command, context="the editor's request")
    reply = Reply(slow, command.id)
    while True:  # wait until the test sleeps, then kill the server under it
        item = reply.step()
        assert item is not None
        if isinstance(item[1], StreamPacket) and item[0].status == "inprogress":
            break
    assert slow.process is not None
    slow.process.kill()
    with pytest.raises(ServerDied) as died:
        while reply.step() is not None:
            pass
    assert died.value.lost == (Lost(command, "the editor's request"),)
    assert slow.session.outstanding == {}
    with pytest.raises(ServerClosed) as closed:
        slow.send(ListTests(slow.new_id()), context="too late")
    assert closed.value.lost == () and slow.session.outstanding == {}
