"""One frame header line, ``NAME SP ID SP LENGTH``, checked as ``spec/protocol.md`` §3.5 says.

:func:`parse_header` is pure: it returns a :class:`Header` for a well-formed line, or a
:class:`BadHeader` naming the first failing check, its message and how the decoder recovers.
:class:`~testserver.wire.framing.FrameDecoder` turns a ``BadHeader`` into a ``FrameError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from testserver.wire.commands import (
    COMMAND_TYPES,
    ID_PATTERN,
    MAX_ID_LENGTH,
    Cancel,
    ListTests,
    Quit,
    Reload,
)

__all__ = [
    "MAX_HEADER_LENGTH",
    "MAX_LENGTH_DIGITS",
    "MAX_QUOTE",
    "NO_PAYLOAD",
    "SYNTAX",
    "BadHeader",
    "Header",
    "is_well_formed",
    "parse_header",
    "quote",
    "salvage",
]

MAX_HEADER_LENGTH = 128
"""Header line limit, CR LF included: name 10 + id 64 + length 20 + separators fits with room."""

MAX_LENGTH_DIGITS = 20
"""``LENGTH`` digits: 20 digits hold any 64-bit size, so every size parses (then is checked)."""

MAX_QUOTE = 80
"""Bytes of received input quoted in an error message, so one message fits a terminal line."""

NO_PAYLOAD = frozenset({ListTests.name, Cancel.name, Reload.name, Quit.name})
"""Commands whose ``LENGTH`` must be 0."""

SYNTAX = "'NAME ID LENGTH'"
"""The header syntax as error messages name it."""

_NAMES = frozenset(name.encode("ascii") for name in COMMAND_TYPES)
_LENGTH_PATTERN = re.compile(rb"[0-9]{1,%d}" % MAX_LENGTH_DIGITS)
_PRINTABLE_PATTERN = re.compile(rb"[\x20-\x7e]*")
_TOKEN_PATTERN = re.compile(rb"[\x21-\x7e]+")

Recovery = Literal["line", "payload", "resync"]
"""How the decoder goes on after a bad header: at the next line, after skipping ``LENGTH``
payload bytes, or by resynchronising (§3.5: skip lines up to the next well-formed header)."""


@dataclass(frozen=True, slots=True)
class Header:
    """A header line that passed every check: what the payload decoder needs."""

    raw: bytes
    """The header line as received, CR and LF included."""
    line: bytes
    """The header line without CR and LF, for messages."""
    name: str
    id: str
    length: int


@dataclass(frozen=True, slots=True)
class BadHeader:
    """The first check a header line fails: its error code, the reason, and the recovery."""

    code: str
    reason: str
    recovery: Recovery
    length: int = 0
    """The parsed ``LENGTH`` (0 when it did not parse)."""


def quote(data: bytes) -> str:
    """``data`` as a bytes literal, shortened to :data:`MAX_QUOTE` bytes."""
    if len(data) > MAX_QUOTE:
        return f"{bytes(data[:MAX_QUOTE])!r}..."
    return repr(bytes(data))


def salvage(line: bytes, *, complete: bool) -> tuple[str | None, str | None]:
    """The command name and id that can be trusted in a bad or partial header line.

    A field counts only when it is whole: followed by a space, or ending a complete line.
    The id counts only after a first field of printable ASCII (so not after a tab).
    """
    fields = line.split(b" ")
    if not complete:
        fields = fields[:-1]
    name = id_ = None
    if fields and fields[0].decode("latin-1") in COMMAND_TYPES:
        name = fields[0].decode("ascii")
    if len(fields) > 1 and _TOKEN_PATTERN.fullmatch(fields[0]) and ID_PATTERN.match(fields[1]):
        id_ = fields[1].decode("ascii")
    return name, id_


def is_well_formed(line: bytes, max_payload: int) -> bool:
    """Whether ``line`` (without CR LF) is a header that passes every check."""
    if line.split(b" ", 1)[0] not in _NAMES:  # the quick test: most lines fail here
        return False
    return isinstance(parse_header(line + b"\n", line, max_payload), Header)


def parse_header(raw: bytes, line: bytes, max_payload: int) -> Header | BadHeader:
    """Check a non-empty header line in the order of §3.5; the first failure is returned."""
    fields = line.split(b" ")
    if not _PRINTABLE_PATTERN.fullmatch(line) or len(fields) != 3 or not all(fields):
        return BadHeader("bad-header", _bad_header_reason(line, fields), "line")
    name_b, id_b, length_b = fields
    if not _LENGTH_PATTERN.fullmatch(length_b):
        return BadHeader(
            "bad-length",
            f"LENGTH must be the payload size as 1 to {MAX_LENGTH_DIGITS} decimal digits, got "
            f"{quote(length_b)} in {quote(line)}",
            "line",
        )
    length = int(length_b)
    if length > max_payload:
        return BadHeader(
            "payload-too-large",
            f"LENGTH {length} in {quote(line)} exceeds the limit of {max_payload} bytes "
            "(max_payload in testserver.hello, set with --max-payload): send the data in "
            "frames of at most that size",
            "resync",
            length,
        )
    return _check_fields(raw, line, name_b.decode("ascii"), id_b, length)


def _check_fields(
    raw: bytes, line: bytes, name: str, id_b: bytes, length: int
) -> Header | BadHeader:
    """Checks 4 to 6: NAME, ID, and LENGTH 0 for commands without a payload."""
    if name not in COMMAND_TYPES:
        return BadHeader(
            "unknown-command",
            f"unknown command {name!r}; expected one of {', '.join(COMMAND_TYPES)}",
            "payload",
            length,
        )
    if not ID_PATTERN.match(id_b):
        return BadHeader(
            "bad-id",
            f"bad command id {quote(id_b)}; use 1 to {MAX_ID_LENGTH} characters of "
            "A-Z a-z 0-9 . _ : -",
            "payload",
            length,
        )
    if length and name in NO_PAYLOAD:
        return BadHeader(
            "bad-payload",
            f"{name!r} takes no payload but LENGTH is {length}; "
            f"send '{name} {id_b.decode('ascii')} 0'",
            "payload",
            length,
        )
    return Header(raw, line, name, id_b.decode("ascii"), length)


def _bad_header_reason(line: bytes, fields: list[bytes]) -> str:
    bad = _PRINTABLE_PATTERN.match(line).end()  # type: ignore[union-attr]
    if bad < len(line):
        what = "a tab" if line[bad : bad + 1] == b"\t" else f"byte {line[bad]:#04x}"
        return (
            f"expected {SYNTAX} in printable ASCII, got {quote(line)} with {what} at offset {bad}"
        )
    if not all(fields):
        return (
            f"expected {SYNTAX} separated by single spaces, got {quote(line)} with an empty field"
        )
    return f"expected {SYNTAX}, got {quote(line)} with {len(fields)} field(s)"
