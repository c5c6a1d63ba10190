"""Command framing on the server's stdin: a sans-I/O encoder and decoder.

A client sends commands to the server as frames, one after another::

    FRAME  := NAME SP ID SP LENGTH [CR] LF PAYLOAD

The header line is printable ASCII, so a person can type frames in a terminal::

    list-tests 1 0
    run-tests 2 33
    tests.test_a.T.test_x
    tests.test_b

Decisions (``spec/protocol.md`` states the same rules):

- ``NAME`` is one of ``list-tests``, ``run-tests``, ``stdin``, ``cancel``, ``reload``,
  ``quit`` (:data:`~testserver.wire.commands.COMMAND_TYPES`).
- ``ID`` is 1 to 64 bytes of ``[A-Za-z0-9._:-]``; the server echoes it on completion.
- ``LENGTH`` is the payload size in bytes as 1 to 20 ASCII decimal digits (leading zeros
  are accepted, the encoder never writes them; ``0`` means an empty payload).
- Fields are separated by exactly one space. One CR before the LF is accepted and removed.
  A header line, CR and LF included, is at most :data:`MAX_HEADER_LENGTH` bytes.
- Empty lines (LF or CR LF alone) between frames are ignored.
- ``run-tests`` payload: UTF-8 test ids separated by LF. A trailing LF is allowed, one CR
  at the end of each line is removed, empty lines are skipped. An empty payload runs every
  test. A non-empty payload without any test id, invalid UTF-8, a NUL byte, or a CR inside
  a test id is ``bad-payload``.
- ``stdin`` payload: raw bytes for the test reading input; an empty payload is end of input.
- ``list-tests``, ``cancel``, ``reload``, ``quit`` take no payload: ``LENGTH`` must be ``0``.

Errors. :meth:`FrameDecoder.next_event` raises :class:`~testserver.wire.errors.FrameError`
after skipping the bad bytes; the caller reports it and calls ``next_event()`` again.
``code`` is one of :data:`ERROR_CODES`. A complete header line is checked in this order, and
the first failing check gives the code:

1. ``bad-header``: the line is not printable ASCII, or not three fields separated by single
   spaces. Decoding resumes at the next line.
2. ``bad-length``: ``LENGTH`` is not 1 to 20 decimal digits. Decoding resumes at the next
   line.
3. ``unknown-command``: ``NAME`` is not a command. The payload is skipped.
4. ``bad-id``: ``ID`` is not a valid command id. The payload is skipped.
5. ``bad-payload``: a command that takes no payload has ``LENGTH`` > 0. The payload is
   skipped.
6. ``payload-too-large``: ``LENGTH`` exceeds the decoder's ``max_payload``. The payload is
   skipped as it arrives, without being buffered.

These are raised as soon as the header line is complete, so a person typing a frame sees
the error at once; the payload bytes that follow are then skipped (``LENGTH`` is known, so
the next frame is read correctly). ``bad-payload`` for a ``run-tests`` payload is raised once
the whole payload has arrived. ``header-too-long``: no LF within :data:`MAX_HEADER_LENGTH`
bytes; the decoder skips through the next LF. ``truncated``: end of input inside a frame
(a partial header line or a partial payload); it is not recoverable, and ``next_event()``
then returns ``END_OF_INPUT``.

``FrameError.data`` holds the start of the discarded bytes (at most :data:`MAX_ERROR_DATA`
bytes; skipped payload bytes are not kept). ``command_name`` is set when the frame's ``NAME``
is a known command, and ``command_id`` when its ``ID`` is valid, so both are always safe to
echo; otherwise they are ``None``.

Memory: a decoder that is drained with ``next_event()`` after each ``receive_data()`` holds
at most :data:`MAX_HEADER_LENGTH` bytes plus the current payload (``LENGTH`` <=
``max_payload``) plus the last chunk. Skipped payload bytes and the rest of a too-long line
are dropped as they arrive, never buffered. :attr:`FrameDecoder.buffered_bytes` tells how
many bytes are held.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NoReturn

from testserver.wire.commands import (
    COMMAND_TYPES,
    ID_PATTERN,
    MAX_ID_LENGTH,
    Cancel,
    Command,
    ListTests,
    Quit,
    Reload,
    RunTests,
    Stdin,
)
from testserver.wire.errors import FrameError, LocalProtocolError
from testserver.wire.sentinels import END_OF_INPUT, NEED_DATA, Sentinel

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "ERROR_CODES",
    "MAX_ERROR_DATA",
    "MAX_HEADER_LENGTH",
    "MAX_LENGTH_DIGITS",
    "FrameDecoder",
    "encode_command",
]

MAX_HEADER_LENGTH = 128
"""Header line limit, CR LF included: name 10 + id 64 + length 20 + separators fits with room."""

MAX_LENGTH_DIGITS = 20
"""``LENGTH`` digits: 20 digits hold any 64-bit size, so no real payload is refused."""

DEFAULT_MAX_PAYLOAD = 64 * 1024 * 1024
"""Default payload limit: far above any test id list or stdin chunk, small enough to buffer."""

MAX_ERROR_DATA = 256
"""Bytes kept in ``FrameError.data``: enough to show a bad frame, never a whole payload."""

MAX_QUOTE = 80
"""Bytes of received input quoted in an error message, so one message fits a terminal line."""

ERROR_CODES = (
    "bad-header",
    "header-too-long",
    "unknown-command",
    "bad-id",
    "bad-length",
    "payload-too-large",
    "bad-payload",
    "truncated",
)
"""Every ``FrameError.code`` the decoder raises."""

NO_PAYLOAD = frozenset({ListTests.name, Cancel.name, Reload.name, Quit.name})
"""Commands whose ``LENGTH`` must be 0."""

_LENGTH_PATTERN = re.compile(rb"[0-9]{1,%d}" % MAX_LENGTH_DIGITS)
_PRINTABLE_PATTERN = re.compile(rb"[\x20-\x7e]*")
_TOKEN_PATTERN = re.compile(rb"[\x21-\x7e]+")
_SYNTAX = "'NAME ID LENGTH'"


def encode_command(command: Command) -> bytes:
    """Return the frame for ``command``: its header line and its payload.

    ``RunTests`` ids are joined by LF without a trailing LF; no ids gives an empty payload
    (run every test). Raise :class:`LocalProtocolError` for anything that is not a command
    or cannot be framed (a test id with a NUL or a lone surrogate).
    """
    if type(command) not in COMMAND_TYPES.values():
        raise LocalProtocolError(f"cannot frame {command!r}: not a testserver command")
    if isinstance(command, RunTests):
        payload = _encode_test_ids(command.test_ids)
    elif isinstance(command, Stdin):
        payload = bytes(command.data)
    else:
        payload = b""
    header = f"{command.name} {command.id} {len(payload)}\n".encode("ascii")
    return header + payload


def _encode_test_ids(test_ids: tuple[str, ...]) -> bytes:
    for test_id in test_ids:
        if "\0" in test_id:
            raise LocalProtocolError(f"cannot frame test id {test_id!r}: it contains NUL")
    try:
        return "\n".join(test_ids).encode("utf-8")
    except UnicodeEncodeError as error:
        raise LocalProtocolError(f"cannot frame test ids as UTF-8: {error}") from None


def _quote(data: bytes) -> str:
    """``data`` as a bytes literal, shortened to :data:`MAX_QUOTE` bytes."""
    if len(data) > MAX_QUOTE:
        return f"{bytes(data[:MAX_QUOTE])!r}..."
    return repr(bytes(data))


def _salvage(line: bytes, *, complete: bool) -> tuple[str | None, str | None]:
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


@dataclass(frozen=True, slots=True)
class _Header:
    """A header line that passed every check: what the payload decoder needs."""

    raw: bytes
    """The header line as received, CR and LF included."""
    line: bytes
    """The header line without CR and LF, for messages."""
    name: str
    id: str
    length: int


class FrameDecoder:
    """Turn bytes from the server's stdin into commands, h11 style.

    Feed bytes with :meth:`receive_data` (``b""`` means end of input) and call
    :meth:`next_event` until it returns ``NEED_DATA`` (feed more) or ``END_OF_INPUT``.
    ``max_payload`` bounds the ``LENGTH`` of a frame (``payload-too-large`` above it).
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        if not isinstance(max_payload, int) or max_payload < 0:
            raise LocalProtocolError(f"max_payload must be an int >= 0, not {max_payload!r}")
        self.max_payload = max_payload
        self._buffer = bytearray()
        self._closed = False
        self._finished = False
        self._header: _Header | None = None
        self._skip = 0
        self._skip_line = False
        self._skipped_header = b""

    @property
    def buffered_bytes(self) -> int:
        """How many received bytes the decoder holds (skipped bytes are never held)."""
        return len(self._buffer)

    def unparsed(self) -> bytes:
        """The received bytes not yet returned as a command (a partial frame), to hand over.

        A server that re-executes itself passes these to its successor, which feeds them to
        a new decoder first. A payload being skipped after an error is not included.
        """
        if self._header is not None:
            return self._header.raw + bytes(self._buffer)
        return bytes(self._buffer)

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the stream; ``b""`` means the stream has ended."""
        if not data:
            self._closed = True
            return
        if self._closed:
            raise LocalProtocolError("receive_data() called with bytes after end of input")
        if isinstance(data, memoryview):
            data = data.tobytes()
        start = 0
        if not self._buffer and (self._skip or self._skip_line):
            start = self._drop_skipped(data)
        self._buffer += memoryview(data)[start:]

    def next_event(self) -> Command | Sentinel:
        """Return the next command, ``NEED_DATA`` or ``END_OF_INPUT``.

        Raise :class:`FrameError` for a malformed frame, after skipping its bytes.
        """
        if self._finished:
            return END_OF_INPUT
        if self._skip or self._skip_line:
            del self._buffer[: self._drop_skipped(self._buffer)]
            if self._skip or self._skip_line:
                return self._starved()
        if self._header is not None:
            return self._read_payload(self._header)
        return self._read_header()

    # -- skipping -------------------------------------------------------------------------

    def _drop_skipped(self, data: bytes | bytearray) -> int:
        """Account for skipped bytes at the start of ``data``; return how many to drop."""
        if self._skip_line:
            end = data.find(b"\n")
            if end < 0:
                return len(data)
            self._skip_line = False
            return end + 1
        count = min(self._skip, len(data))
        self._skip -= count
        return count

    def _starved(self) -> Sentinel:
        """Out of bytes while skipping: wait for more, or report the cut-off payload."""
        if not self._closed:
            return NEED_DATA
        self._finished = True
        if self._skip_line:
            return END_OF_INPUT
        line = self._skipped_header
        name, id_ = _salvage(line, complete=True)
        raise FrameError(
            f"end of input inside the payload of {_quote(line)}: {self._skip} more payload "
            "bytes were expected",
            code="truncated",
            recoverable=False,
            command_name=name,
            command_id=id_,
        )

    def _skip_payload(self, line: bytes, length: int) -> None:
        self._skip = length
        self._skipped_header = line
        del self._buffer[: self._drop_skipped(self._buffer)]

    # -- headers --------------------------------------------------------------------------

    def _read_header(self) -> Command | Sentinel:
        while True:
            end = self._buffer.find(b"\n", 0, MAX_HEADER_LENGTH)
            if end < 0:
                return self._no_header_yet()
            raw = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            line = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
            if line:
                break
        header = self._check_header(raw, line)
        if header.length == 0 or header.name in NO_PAYLOAD:
            return self._build(header, b"")
        self._header = header
        return self._read_payload(header)

    def _no_header_yet(self) -> Sentinel:
        if len(self._buffer) >= MAX_HEADER_LENGTH:
            data = bytes(self._buffer[:MAX_HEADER_LENGTH])
            del self._buffer[:MAX_HEADER_LENGTH]
            self._skip_line = True
            del self._buffer[: self._drop_skipped(self._buffer)]
            name, id_ = _salvage(data, complete=False)
            raise FrameError(
                f"no end of line within {MAX_HEADER_LENGTH} bytes: expected {_SYNTAX}, got "
                f"{_quote(data)}; the rest of the line is skipped",
                code="header-too-long",
                data=data,
                command_name=name,
                command_id=id_,
            )
        if not self._closed:
            return NEED_DATA
        self._finished = True
        if not self._buffer:
            return END_OF_INPUT
        data = bytes(self._buffer)
        self._buffer.clear()
        name, id_ = _salvage(data, complete=False)
        raise FrameError(
            f"end of input inside a frame header: got {_quote(data)} without a newline; "
            f"expected {_SYNTAX} ending with a newline",
            code="truncated",
            data=data,
            recoverable=False,
            command_name=name,
            command_id=id_,
        )

    def _check_header(self, raw: bytes, line: bytes) -> _Header:
        """Parse a non-empty header line or raise the first :class:`FrameError` that applies."""
        fields = line.split(b" ")
        if not _PRINTABLE_PATTERN.fullmatch(line) or len(fields) != 3 or not all(fields):
            self._header_error(line, raw, "bad-header", self._bad_header_reason(line, fields))
        name_b, id_b, length_b = fields
        if not _LENGTH_PATTERN.fullmatch(length_b):
            self._header_error(
                line,
                raw,
                "bad-length",
                f"LENGTH must be the payload size as 1 to {MAX_LENGTH_DIGITS} decimal digits, "
                f"got {_quote(length_b)} in {_quote(line)}",
            )
        length = int(length_b)
        name = name_b.decode("ascii")
        if name not in COMMAND_TYPES:
            self._header_error(
                line,
                raw,
                "unknown-command",
                f"unknown command {name!r}; expected one of {', '.join(COMMAND_TYPES)}",
                skip=length,
            )
        if not ID_PATTERN.match(id_b):
            self._header_error(
                line,
                raw,
                "bad-id",
                f"bad command id {_quote(id_b)}; use 1 to {MAX_ID_LENGTH} characters of "
                "A-Z a-z 0-9 . _ : -",
                skip=length,
            )
        if length and name in NO_PAYLOAD:
            self._header_error(
                line,
                raw,
                "bad-payload",
                f"{name!r} takes no payload but LENGTH is {length}; "
                f"send '{name} {id_b.decode('ascii')} 0'",
                skip=length,
            )
        if length > self.max_payload:
            self._header_error(
                line,
                raw,
                "payload-too-large",
                f"LENGTH {length} exceeds the limit of {self.max_payload} bytes (send the "
                "data in several smaller frames)",
                skip=length,
            )
        return _Header(raw, line, name, id_b.decode("ascii"), length)

    @staticmethod
    def _bad_header_reason(line: bytes, fields: list[bytes]) -> str:
        bad = _PRINTABLE_PATTERN.match(line).end()  # type: ignore[union-attr]
        if bad < len(line):
            what = "a tab" if line[bad : bad + 1] == b"\t" else f"byte {line[bad]:#04x}"
            return (
                f"expected {_SYNTAX} in printable ASCII, got {_quote(line)} with {what} "
                f"at offset {bad}"
            )
        if not all(fields):
            return (
                f"expected {_SYNTAX} separated by single spaces, got {_quote(line)} with an "
                "empty field"
            )
        return f"expected {_SYNTAX}, got {_quote(line)} with {len(fields)} field(s)"

    def _header_error(
        self, line: bytes, raw: bytes, code: str, reason: str, *, skip: int | None = None
    ) -> NoReturn:
        """Raise ``code`` for a bad header line; skip ``skip`` payload bytes first."""
        name, id_ = _salvage(line, complete=True)
        if skip is None:
            message = f"{reason}; skipped the line"
        elif skip == 0:
            message = f"{reason}; skipped the frame"
        else:
            self._skip_payload(line, skip)
            message = f"{reason}; skipping the frame and its {skip} payload bytes"
        raise FrameError(
            message,
            code=code,
            data=raw[:MAX_ERROR_DATA],
            command_name=name,
            command_id=id_,
        )

    # -- payloads -------------------------------------------------------------------------

    def _read_payload(self, header: _Header) -> Command | Sentinel:
        if len(self._buffer) < header.length:
            if not self._closed:
                return NEED_DATA
            self._finished = True
            data = (header.raw + self._buffer[:MAX_ERROR_DATA])[:MAX_ERROR_DATA]
            got = len(self._buffer)
            self._buffer.clear()
            self._header = None
            raise FrameError(
                f"end of input inside the payload of {_quote(header.line)}: got {got} of "
                f"{header.length} payload bytes",
                code="truncated",
                data=bytes(data),
                recoverable=False,
                command_name=header.name,
                command_id=header.id,
            )
        payload = bytes(self._buffer[: header.length])
        del self._buffer[: header.length]
        self._header = None
        return self._build(header, payload)

    def _build(self, header: _Header, payload: bytes) -> Command:
        if header.name == RunTests.name:
            return RunTests(header.id, self._test_ids(header, payload) if payload else ())
        if header.name == Stdin.name:
            return Stdin(header.id, payload)
        return COMMAND_TYPES[header.name](header.id)

    def _test_ids(self, header: _Header, payload: bytes) -> tuple[str, ...]:
        """Split a ``run-tests`` payload into test ids, or raise ``bad-payload``."""
        if b"\0" in payload:
            self._payload_error(header, payload, f"NUL byte at offset {payload.index(0)}")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as error:
            self._payload_error(header, payload, f"invalid UTF-8 at offset {error.start}")
        test_ids = []
        for number, line in enumerate(text.split("\n"), 1):
            test_id = line[:-1] if line.endswith("\r") else line
            if "\r" in test_id:
                self._payload_error(header, payload, f"a CR inside the test id on line {number}")
            if test_id:
                test_ids.append(test_id)
        if not test_ids:
            self._payload_error(
                header,
                payload,
                "no test ids, only empty lines (send an empty payload, LENGTH 0, to run every "
                "test)",
            )
        return tuple(test_ids)

    @staticmethod
    def _payload_error(header: _Header, payload: bytes, reason: str) -> NoReturn:
        frame = header.raw + payload[:MAX_ERROR_DATA]
        raise FrameError(
            f"bad {header.name!r} payload after {_quote(header.line)}: {reason}; expected test "
            "ids in UTF-8, one per line",
            code="bad-payload",
            data=frame[:MAX_ERROR_DATA],
            command_name=header.name,
            command_id=header.id,
        )
