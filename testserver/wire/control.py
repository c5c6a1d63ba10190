"""Control events: ``testserver.*`` JSON objects carried as global-scope subunit file packets.

A control event is a file packet with no test id, file name ``testserver.<name>``, MIME type
``application/json`` and ``eof`` set. Clients ignore keys and event names they do not know.
"""

from __future__ import annotations

import json
from typing import Any

from testserver.wire.events import Packet
from testserver.wire.packets import encode_packet

PREFIX = "testserver."
"""Every control event's file name starts with this; other names are never control events."""

HELLO = "testserver.hello"
COMPLETE = "testserver.complete"
STDIN_WANTED = "testserver.stdin-wanted"
RELOAD = "testserver.reload"
WORKER_RETIRED = "testserver.worker-retired"
"""``--isolation worker``: the worker of a batch will not run another one, and why."""

MIME_TYPE = "application/json"

PROTOCOL_VERSION = 1
"""The version of the command/control protocol described in ``spec/protocol.md``."""


def completion_body(
    command_id: str | None,
    command_name: str | None,
    generation: int,
    *,
    status: str = "ok",
    message: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The body of a ``testserver.complete`` (spec 8.3), its keys in the spec's order."""
    body: dict[str, Any] = {
        "id": command_id,
        "command": command_name,
        "status": status,
        "generation": generation,
    }
    if message is not None:
        body["message"] = message
    body.update(fields)
    return body


def frame_error_body(
    command_id: str | None, command_name: str | None, code: str, message: str, generation: int
) -> dict[str, Any]:
    """The completion of a malformed frame (spec 3.5): ``status`` ``error`` with its code."""
    return {
        "id": command_id,
        "command": command_name,
        "status": "error",
        "code": code,
        "message": message,
        "generation": generation,
    }


def control_packet(name: str, body: dict[str, Any], *, timestamp_ns: int | None = None) -> Packet:
    """The packet that carries control event ``name`` with JSON ``body``."""
    if not name.startswith(PREFIX):
        raise ValueError(f"control event names start with {PREFIX!r}: {name!r}")
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Packet(
        file_name=name,
        file_bytes=data,
        mime_type=MIME_TYPE,
        eof=True,
        timestamp_ns=timestamp_ns,
    )


def encode_control(
    name: str,
    body: dict[str, Any],
    *,
    timestamp_ns: int | None = None,
    subunit_version: str = "2.1",
) -> bytes:
    """Encode control event ``name`` with JSON ``body`` as one subunit packet."""
    packet = control_packet(name, body, timestamp_ns=timestamp_ns)
    return encode_packet(packet, subunit_version=subunit_version)


SHORTENED_LIST_LENGTH = 1000
"""Entries kept of each list in a control event too large for one packet."""


def shorten(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with every long list cut to :data:`SHORTENED_LIST_LENGTH` entries.

    The names of the cut lists go in ``"truncated"``, so a client knows it saw only a part.
    Used when an event (say a hello with 100,000 discovery errors) exceeds one packet.
    """
    short = dict(body)
    cut = [
        key
        for key, value in body.items()
        if isinstance(value, list) and len(value) > SHORTENED_LIST_LENGTH
    ]
    for key in cut:
        short[key] = body[key][:SHORTENED_LIST_LENGTH]
    short["truncated"] = cut
    return short


def decode_control(packet: Packet) -> tuple[str, dict[str, Any]] | None:
    """Return ``(name, body)`` if ``packet`` is a control event, else ``None``.

    A packet that claims to be a control event but whose payload is not a JSON object
    gives ``(name, {})``, so that a client can still see it arrived.
    """
    name = packet.file_name
    if packet.test_id is not None or name is None or not name.startswith(PREFIX):
        return None
    try:
        body = json.loads(packet.file_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return name, {}
    return name, body if isinstance(body, dict) else {}
