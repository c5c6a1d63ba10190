"""The bridge's own messages: editor command lines parsed, selectors resolved, ``ready``.

:func:`parse_request` turns one line of JSON from the editor into a :class:`Request` or
raises :class:`BadRequest` (reported as an ``error`` event); :func:`select_tests` (that is
``runmodel.select``, the selection rule of every client) resolves the ``tests`` selectors of
``run`` and ``list``; :func:`ready_fields` builds the ``ready`` event from the server's hello.
``spec/json-output.md`` section 6 is the normative text; :mod:`testserver.clients.bridge` does the
I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from testserver.clients.runs import select as select_tests  # the one selection rule

__all__ = ["COMMANDS", "BadRequest", "Request", "parse_request", "ready_fields", "select_tests"]

COMMANDS = ("run", "list", "stdin", "cancel", "reload", "quit")
"""The ``command`` values the bridge accepts."""


@dataclass(frozen=True)
class Request:
    """One command line from the editor; ``id`` is any JSON value, echoed back."""

    command: str
    id: Any = None
    tests: tuple[str, ...] = ()
    data: str = ""
    input: bool = True
    """For ``run``: ``False`` answers a test that waits for input with end of input."""


class BadRequest(Exception):
    """A line that is not a valid command; reported as an ``error`` event."""

    def __init__(self, code: str, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


def parse_request(line: bytes) -> Request:
    """The :class:`Request` on ``line`` (UTF-8 JSON); raise :class:`BadRequest` if none."""
    try:
        obj = json.loads(line)
    except ValueError as error:  # UnicodeDecodeError included
        raise BadRequest("bad-json", f"not a line of JSON: {error}") from None
    if not isinstance(obj, dict):
        raise BadRequest("bad-command", 'a command is a JSON object, e.g. {"command": "list"}')
    request_id, command = obj.get("id"), obj.get("command")
    if command not in COMMANDS:
        expected = ", ".join(COMMANDS)
        raise BadRequest(
            "unknown-command", f"unknown command {command!r}: use {expected}", request_id
        )
    tests = obj.get("tests", [])
    if not isinstance(tests, list) or not all(isinstance(t, str) and t.strip() for t in tests):
        raise BadRequest(
            "bad-command", '"tests" must be a list of test ids or patterns', request_id
        )
    data, interactive = obj.get("data", ""), obj.get("input", True)
    if not isinstance(data, str):
        raise BadRequest("bad-command", '"data" must be a string', request_id)
    if not isinstance(interactive, bool):
        raise BadRequest("bad-command", '"input" must be true or false', request_id)
    return Request(command, request_id, tuple(t.strip() for t in tests), data, interactive)


def ready_fields(hello: dict[str, Any]) -> dict[str, Any]:
    """The ``ready`` event's fields, from the server's ``testserver.hello``."""
    errors = hello.get("discovery_errors") or []
    return {
        "server": hello.get("server"),
        "pid": hello.get("pid"),
        "tests": hello.get("tests"),
        "generation": hello.get("generation", 0),
        "reload": "reload" in (hello.get("capabilities") or ()),
        "watch_error": hello.get("watch_error"),
        "load_errors": [
            {key: error.get(key) for key in ("test_id", "module", "message")}
            for error in errors
            if isinstance(error, dict)
        ],
    }
