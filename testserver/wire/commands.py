"""The commands a client sends on the server's stdin, one frozen type per command.

Every command carries ``id``: 1 to 64 bytes of ``[A-Za-z0-9._:-]`` chosen by the client and
echoed on the command's ``testserver.complete`` event. See ``spec/protocol.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from testserver.wire.errors import LocalProtocolError

MAX_ID_LENGTH = 64
"""Command ids are short tokens echoed back; 64 bytes fits a UUID with room to spare."""

ID_PATTERN = re.compile(rb"[A-Za-z0-9._:-]{1,64}\Z")
"""The bytes a command id may contain (ASCII only, so bytes and characters agree)."""


def check_command_id(command_id: str) -> None:
    """Raise :class:`LocalProtocolError` unless ``command_id`` is a valid command id."""
    if not isinstance(command_id, str) or not ID_PATTERN.match(command_id.encode("utf-8")):
        raise LocalProtocolError(
            f"invalid command id {command_id!r}: use 1 to {MAX_ID_LENGTH} characters "
            "of A-Z a-z 0-9 . _ : -"
        )


@dataclass(frozen=True, slots=True)
class ListTests:
    """``list-tests``: emit one ``exists`` event per runnable test, then complete."""

    name: ClassVar[str] = "list-tests"
    id: str

    def __post_init__(self) -> None:
        check_command_id(self.id)


@dataclass(frozen=True, slots=True)
class RunTests:
    """``run-tests``: run ``test_ids`` in order; an empty tuple means every test."""

    name: ClassVar[str] = "run-tests"
    id: str
    test_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_command_id(self.id)
        if not isinstance(self.test_ids, tuple):
            raise LocalProtocolError("test_ids must be a tuple of str")
        for test_id in self.test_ids:
            if not test_id or "\n" in test_id or "\r" in test_id:
                raise LocalProtocolError(
                    f"invalid test id {test_id!r}: test ids are non-empty and contain no "
                    "line breaks"
                )


@dataclass(frozen=True, slots=True)
class Stdin:
    """``stdin``: bytes for the test that is reading input; empty means end of input."""

    name: ClassVar[str] = "stdin"
    id: str
    data: bytes = b""

    def __post_init__(self) -> None:
        check_command_id(self.id)


@dataclass(frozen=True, slots=True)
class Cancel:
    """``cancel``: stop the running batch; the not-yet-run tests are reported as not run."""

    name: ClassVar[str] = "cancel"
    id: str

    def __post_init__(self) -> None:
        check_command_id(self.id)


@dataclass(frozen=True, slots=True)
class Reload:
    """``reload``: apply pending source changes now (and rediscover)."""

    name: ClassVar[str] = "reload"
    id: str

    def __post_init__(self) -> None:
        check_command_id(self.id)


@dataclass(frozen=True, slots=True)
class Quit:
    """``quit``: finish the commands before it, complete, and exit 0."""

    name: ClassVar[str] = "quit"
    id: str

    def __post_init__(self) -> None:
        check_command_id(self.id)


Command = ListTests | RunTests | Stdin | Cancel | Reload | Quit

COMMAND_TYPES: dict[str, type[Command]] = {
    cls.name: cls for cls in (ListTests, RunTests, Stdin, Cancel, Reload, Quit)
}
"""Command name on the wire -> command type."""
