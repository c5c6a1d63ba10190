"""The client's side of the protocol session: fresh ids, routing, one completion per command.

:class:`ClientSession` is what every client (the library, the daemon, the editor bridge, the
debug client, the warm testr/stestr backends) otherwise writes by hand: "send a command with
a fresh id, then wait for the completion whose id matches mine". It does no I/O: :meth:`send`
returns the frame bytes to write, :meth:`receive` takes one decoded packet and says what it
is, and :meth:`receive_end_of_stream` ends every outstanding command (spec 4.1.6).

Routing (spec 4.1): queued commands (``list-tests``, ``run-tests``, ``reload``, ``quit``) run
one after another, so a packet that is not a completion belongs to the oldest outstanding
queued command; ``stdin`` and ``cancel`` have no events of their own. A ``testserver.hello``
may arrive at any point (a restart) and updates :attr:`hello`.

States: ``AWAITING_HELLO`` (until the first hello; any other first packet is the peer's
fault), ``OPEN``, ``CLOSED`` (the stream ended; sending or receiving more is a bug).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from testserver.wire.commands import Cancel, Command, Stdin, check_command_id
from testserver.wire.control import COMPLETE, HELLO, RELOAD, decode_control
from testserver.wire.errors import LocalProtocolError, RemoteProtocolError
from testserver.wire.events import Packet
from testserver.wire.framing import encode_command
from testserver.wire.sessionerror import SessionError

IMMEDIATE = (Stdin, Cancel)
"""Command types that act at once and emit no events of their own (spec 4.1)."""


class ClientState(Enum):
    """Where the client's session is (see the module docstring)."""

    AWAITING_HELLO = "AWAITING_HELLO"
    OPEN = "OPEN"
    CLOSED = "CLOSED"


class ClientEvent(Enum):
    """What a client does or sees: ``send``, ``receive``, ``receive_end_of_stream``."""

    SEND = "send"
    PACKET = "packet"
    END_OF_STREAM = "end of stream"


C, CE = ClientState, ClientEvent
CLIENT_TRANSITIONS: dict[ClientState, dict[ClientEvent, tuple[ClientState, ...]]] = {
    C.AWAITING_HELLO: {CE.SEND: (), CE.PACKET: (C.OPEN,), CE.END_OF_STREAM: (C.CLOSED,)},
    C.OPEN: {CE.SEND: (), CE.PACKET: (), CE.END_OF_STREAM: (C.CLOSED,)},
    C.CLOSED: {},
}
"""(state, event) -> the states it may lead to; ``()``: the state does not change."""


@dataclass
class Outstanding:
    """A command sent and not yet completed; ``packets`` collects its events if asked;
    ``context`` is whatever the caller attached (handed back in its ``Completed`` or ``Lost``)."""

    command: Command
    collect: bool = False
    packets: list[Packet] = field(default_factory=list)
    context: Any = None


@dataclass(frozen=True, slots=True)
class HelloReceived:
    """The server said hello (at the start, or again after a restart)."""

    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Completed:
    """``command`` completed with ``body``; ``packets`` are its events when collected;
    ``context`` is what the caller attached when sending it."""

    command: Command
    body: dict[str, Any]
    packets: tuple[Packet, ...] = ()
    context: Any = None

    @property
    def failed(self) -> bool:
        """Whether the command failed (``status`` ``"error"``; a cancelled batch did not)."""
        return self.body.get("status") == "error"


@dataclass(frozen=True, slots=True)
class StrayCompletion:
    """A completion of no outstanding command: a malformed frame's, or a foreign id."""

    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ControlReceived:
    """Another control event (``stdin-wanted``, ``reload``, unknown ones), with its owner."""

    name: str
    body: dict[str, Any]
    command_id: str | None


@dataclass(frozen=True, slots=True)
class StreamPacket:
    """A test event or output; ``command_id`` is the queued command it belongs to."""

    packet: Packet
    command_id: str | None


@dataclass(frozen=True, slots=True)
class Lost:
    """The stream ended before ``command`` completed; ``context`` as in :class:`Completed`."""

    command: Command
    context: Any = None


Received = HelloReceived | Completed | StrayCompletion | ControlReceived | StreamPacket


class ClientSession:
    """The client's protocol session (see the module docstring)."""

    role = "client"

    def __init__(self, *, id_prefix: str = "c", expect_hello: bool = True) -> None:
        check_command_id(f"{id_prefix}1")
        self.id_prefix = id_prefix
        self.state = C.AWAITING_HELLO if expect_hello else C.OPEN
        self.hello: dict[str, Any] | None = None
        self.generation: int | None = None
        self.outstanding: dict[str, Outstanding] = {}
        """Commands sent and not completed, oldest first."""
        self._ids = itertools.count(1)

    def new_id(self) -> str:
        """A command id not used before by this session."""
        return f"{self.id_prefix}{next(self._ids)}"

    def send(self, command: Command, *, collect: bool = False, context: Any = None) -> bytes:
        """Register ``command`` as outstanding and return its frame bytes to write.

        ``collect``: keep its stream packets for :attr:`Completed.packets`; ``context``: any
        object of the caller's, handed back with the command's :class:`Completed` or
        :class:`Lost` (the editor bridge attaches the editor's request).
        """
        self._move(CE.SEND, self.state)
        if command.id in self.outstanding:
            raise LocalProtocolError(
                f"command id {command.id!r} is still outstanding; use new_id() for each command"
            )
        data = encode_command(command)
        self.outstanding[command.id] = Outstanding(command, collect, context=context)
        return data

    def owner(self) -> str | None:
        """The id of the queued command whose events arrive now, if any is outstanding."""
        for command_id, entry in self.outstanding.items():
            if not isinstance(entry.command, IMMEDIATE):
                return command_id
        return None

    def receive(self, packet: Packet) -> Received:
        """Say what ``packet`` is and to which command it belongs."""
        control = decode_control(packet)
        if self.state is C.AWAITING_HELLO and (control is None or control[0] != HELLO):
            raise RemoteProtocolError(
                f"expected testserver.hello first, got {packet!r}", code="no-hello"
            )
        self._move(CE.PACKET, C.OPEN)
        if control is None:
            owner = self.owner()
            if owner is not None and self.outstanding[owner].collect:
                self.outstanding[owner].packets.append(packet)
            return StreamPacket(packet, owner)
        name, body = control
        if name == COMPLETE:
            return self._complete(body)
        if name == HELLO:
            self.hello = body
            self.generation = body.get("generation", self.generation)
            return HelloReceived(body)
        if name == RELOAD:
            self.generation = body.get("generation", self.generation)
        return ControlReceived(name, body, self.owner())

    def receive_end_of_stream(self) -> list[Lost]:
        """The server's output ended: every outstanding command is lost, oldest first."""
        self._move(CE.END_OF_STREAM, C.CLOSED)
        lost = [Lost(entry.command, entry.context) for entry in self.outstanding.values()]
        self.outstanding.clear()
        return lost

    def _complete(self, body: dict[str, Any]) -> Completed | StrayCompletion:
        command_id = body.get("id")
        entry = self.outstanding.pop(command_id, None) if isinstance(command_id, str) else None
        if entry is None:
            return StrayCompletion(body)
        generation = body.get("generation")
        if isinstance(generation, int):
            self.generation = generation
        return Completed(entry.command, body, tuple(entry.packets), entry.context)

    def _move(self, event: ClientEvent, target: ClientState) -> None:
        allowed = CLIENT_TRANSITIONS[self.state].get(event)
        if allowed is None or target not in (allowed or (self.state,)):
            raise SessionError(event, self.state, self.role)
        self.state = target
