"""The pure client session core (wire/clientsession.py): ids, routing, completions, the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from testserver.clients.client import Client, ServerClosed
from testserver.wire.clientsession import (
    CLIENT_TRANSITIONS,
    ClientEvent,
    ClientSession,
    ClientState,
    Completed,
    ControlReceived,
    HelloReceived,
    Lost,
    StrayCompletion,
    StreamPacket,
)
from testserver.wire.commands import Cancel, ListTests, Quit, Reload, RunTests, Stdin
from testserver.wire.control import COMPLETE, HELLO, RELOAD, STDIN_WANTED, control_packet
from testserver.wire.errors import LocalProtocolError, RemoteProtocolError
from testserver.wire.events import Packet
from testserver.wire.framing import FrameDecoder
from testserver.wire.packets import PacketDecoder, encode_packet
from testserver.wire.sessionerror import SessionError


def hello(generation: int = 0) -> Packet:
    return control_packet(HELLO, {"protocol": 1, "generation": generation})


def complete(command_id: str | None, status: str = "ok", **fields: Any) -> Packet:
    return control_packet(COMPLETE, {"id": command_id, "status": status, **fields})


def opened() -> ClientSession:
    session = ClientSession()
    assert isinstance(session.receive(hello()), HelloReceived)
    return session


def test_send_returns_the_frame_the_server_decodes() -> None:
    session = ClientSession()
    command = RunTests(session.new_id(), ("a", "b"))
    decoder = FrameDecoder()
    decoder.receive_data(session.send(command))
    assert decoder.next_event() == command
    assert list(session.outstanding) == [command.id]


def test_fresh_ids_and_no_reuse_while_outstanding() -> None:
    session = ClientSession(id_prefix="bridge-")
    assert [session.new_id() for _ in range(3)] == ["bridge-1", "bridge-2", "bridge-3"]
    session.send(ListTests("x"))
    with pytest.raises(LocalProtocolError, match="'x' is still outstanding"):
        session.send(Reload("x"))
    with pytest.raises(LocalProtocolError, match="invalid command id"):
        ClientSession(id_prefix="no spaces")


def test_the_first_packet_must_be_a_hello() -> None:
    with pytest.raises(RemoteProtocolError, match="expected testserver.hello first"):
        ClientSession().receive(Packet("a", "success"))
    assert isinstance(ClientSession(expect_hello=False).receive(Packet("a")), StreamPacket)


def test_packets_belong_to_the_oldest_queued_command() -> None:
    """stdin and cancel have no events: a run's packets stay the run's (client.Run)."""
    session = opened()
    session.send(Stdin("s", b""))
    session.send(RunTests("r"))
    session.send(Cancel("c"))
    session.send(ListTests("l"), collect=True)
    assert session.receive(Packet("a", "inprogress")) == StreamPacket(
        Packet("a", "inprogress"), "r"
    )
    got = session.receive(complete("c", cancelled="r"))
    assert isinstance(got, Completed) and got.command == Cancel("c")
    assert session.owner() == "r"
    assert isinstance(session.receive(complete("r", "cancelled")), Completed)
    assert session.receive(Packet("a", "exists")).command_id == "l"
    done = session.receive(complete("l", tests=1))
    assert isinstance(done, Completed) and done.packets == (Packet("a", "exists"),)
    assert list(session.outstanding) == ["s"]


def test_completion_status() -> None:
    session = opened()
    session.send(RunTests("r"))
    session.send(Reload("x"))
    assert not session.receive(complete("r", "cancelled")).failed
    assert session.receive(complete("x", "error", code="not-supported")).failed


def test_a_hello_may_arrive_at_any_point() -> None:
    """A server that restarted for a reload says hello again in the middle of a command."""
    session = opened()
    session.send(RunTests("r"))
    session.receive(control_packet(RELOAD, {"generation": 1, "restarted": True}))
    assert session.generation == 1
    got = session.receive(hello(generation=1))
    assert got == HelloReceived({"protocol": 1, "generation": 1}) and session.hello == got.body
    assert session.owner() == "r"


def test_control_events_name_their_command() -> None:
    session = opened()
    session.send(RunTests("r"))
    got = session.receive(control_packet(STDIN_WANTED, {"test_id": "a"}))
    assert got == ControlReceived(STDIN_WANTED, {"test_id": "a"}, "r")


def test_completions_of_no_outstanding_command_are_stray() -> None:
    """A malformed frame's completion (id null) or a foreign id matches nothing."""
    session = opened()
    session.send(RunTests("r"))
    assert isinstance(session.receive(complete(None, "error", code="bad-frame")), StrayCompletion)
    assert isinstance(session.receive(complete("zzz")), StrayCompletion)
    assert list(session.outstanding) == ["r"]


def test_a_context_attached_to_a_command_comes_back_with_its_completion_or_loss() -> None:
    """The caller's own data rides on the outstanding entry: no id map of its own needed."""
    session = opened()
    request, other = object(), object()
    session.send(RunTests("r"), context=request)
    session.send(Quit("q"), context=other)
    got = session.receive(complete("r"))
    assert isinstance(got, Completed) and got.context is request
    assert session.outstanding["q"].context is other
    assert [lost.context for lost in session.receive_end_of_stream()] == [other]


def test_end_of_stream_ends_every_outstanding_command() -> None:
    session = opened()
    for command in (RunTests("r"), Cancel("c"), Quit("q")):
        session.send(command)
    assert session.receive_end_of_stream() == [
        Lost(RunTests("r")),
        Lost(Cancel("c")),
        Lost(Quit("q")),
    ]
    assert session.state is ClientState.CLOSED and not session.outstanding
    with pytest.raises(SessionError, match="'send' when role=client and state=CLOSED"):
        session.send(ListTests("l"))
    with pytest.raises(SessionError, match="'packet' when role=client and state=CLOSED"):
        session.receive(hello())


def test_the_table_covers_every_event() -> None:
    assert {e for row in CLIENT_TRANSITIONS.values() for e in row} == set(ClientEvent)


@given(
    st.lists(
        st.sampled_from(["list", "run", "cancel", "stdin", "reload"]), min_size=1, max_size=12
    ),
    st.data(),
)
def test_a_real_stream_completes_each_command_once(kinds: list[str], data: st.DataObject) -> None:
    """Encode a server's answer in order, decode it with the real decoder, split anywhere."""
    types = {"list": ListTests, "run": RunTests, "cancel": Cancel, "stdin": Stdin, "reload": Reload}
    session = ClientSession()
    commands = [types[kind](session.new_id()) for kind in kinds]
    for command in commands:
        session.send(command)
    stream = [hello()]
    for command in commands:
        if command.name in ("list-tests", "run-tests"):
            stream.append(
                Packet(f"t.{command.id}", "exists" if command.name == "list-tests" else "success")
            )
        stream.append(complete(command.id))
    raw = b"".join(encode_packet(p) for p in stream)
    cut = data.draw(st.integers(0, len(raw)))
    decoder = PacketDecoder()
    completed, owners = [], []
    for chunk in [c for c in (raw[:cut], raw[cut:]) if c] + [b""]:
        decoder.receive_data(chunk)
        while isinstance(event := decoder.next_event(), Packet):
            got = session.receive(event)
            if isinstance(got, Completed):
                completed.append(got.command)
            elif isinstance(got, StreamPacket):
                owners.append((got.packet.test_id, got.command_id))
    assert completed == commands
    assert all(test_id == f"t.{owner}" for test_id, owner in owners)
    assert session.receive_end_of_stream() == []


# -- the library's Client drives a ClientSession against a real server ---------------------


def test_the_client_library_keeps_its_session_in_step_with_a_real_server():
    project = Path(__file__).parent.parent / "projects" / "cli_demo"
    client = Client.spawn(["-t", ".", "-s", "cdemo"], cwd=project)
    try:
        assert client.session.state is ClientState.OPEN and client.hello == client.session.hello
        ids = client.list()
        run = client.run(ids[:2])
        packets = list(run)
        assert run.complete is not None and run.complete["id"] == run.id
        assert {p.test_id for p in packets if p.is_final} >= set(ids[:2])
        assert client.session.outstanding == {}
        quit_command = Quit(client.new_id())
        client.send(quit_command)
        assert list(client.session.outstanding) == [quit_command.id]
        with pytest.raises(ServerClosed):
            while True:
                client.next_packet()
        assert client.session.state is ClientState.CLOSED
        assert client.session.outstanding == {}
        with pytest.raises(ServerClosed):
            client.cancel()
    finally:
        client.close()
