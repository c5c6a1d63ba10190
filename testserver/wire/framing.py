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
the first failing check gives the code (:mod:`testserver.wire.frameheaders`):

1. ``bad-header``: the line is not printable ASCII, or not three fields separated by single
   spaces. Decoding resumes at the next line.
2. ``bad-length``: ``LENGTH`` is not 1 to 20 decimal digits. Decoding resumes at the next
   line.
3. ``payload-too-large``: ``LENGTH`` exceeds the decoder's ``max_payload``. The decoder
   *resynchronises*: it drops the following input line by line, silently, until a line that
   is a well-formed header (decoded as usual) or the end of the ``LENGTH`` announced bytes
   (decoding resumes right after them), whichever comes first. So a wrong ``LENGTH`` costs
   one error and never more than the lines up to the next frame.
4. ``unknown-command``: ``NAME`` is not a command. The payload is skipped.
5. ``bad-id``: ``ID`` is not a valid command id. The payload is skipped.
6. ``bad-payload``: a command that takes no payload has ``LENGTH`` > 0. The payload is
   skipped.

These are raised as soon as the header line is complete, so a person typing a frame sees
the error at once; the payload bytes that follow are then skipped (``LENGTH`` <=
``max_payload`` is known, so the next frame is read correctly). ``bad-payload`` for a
``run-tests`` payload is raised once the whole payload has arrived. ``header-too-long``: no
LF within :data:`MAX_HEADER_LENGTH` bytes; the decoder skips through the next LF.
``truncated``: end of input inside a frame (a partial header line or a partial payload); it
is not recoverable, and ``next_event()`` then returns ``END_OF_INPUT``. End of input while
resynchronising gives no further error.

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

from typing import NoReturn

from testserver.wire.commands import COMMAND_TYPES, Command, RunTests, Stdin
from testserver.wire.errors import FrameError, LocalProtocolError
from testserver.wire.frameheaders import (
    MAX_HEADER_LENGTH,
    MAX_LENGTH_DIGITS,
    NO_PAYLOAD,
    SYNTAX,
    BadHeader,
    Header,
    is_well_formed,
    parse_header,
    quote,
    salvage,
)
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

DEFAULT_MAX_PAYLOAD = 64 * 1024 * 1024
"""Default payload limit: far above any test id list or stdin chunk, small enough to buffer."""

MAX_ERROR_DATA = 256
"""Bytes kept in ``FrameError.data``: enough to show a bad frame, never a whole payload."""

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


def _strip_eol(raw: bytes) -> bytes:
    return raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]


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
        self._header: Header | None = None
        self._skip = 0
        """Payload bytes of a bad frame still to drop (at most ``max_payload``)."""
        self._skip_line = False
        """Dropping the rest of a line longer than :data:`MAX_HEADER_LENGTH`."""
        self._resync: int | None = None
        """While resynchronising after ``payload-too-large``: announced bytes still to come."""
        self._skipped_header = b""

    @property
    def buffered_bytes(self) -> int:
        """How many received bytes the decoder holds (skipped bytes are never held)."""
        return len(self._buffer)

    def unparsed(self) -> bytes:
        """The received bytes not yet returned as a command (a partial frame), to hand over.

        A server that re-executes itself passes these to its successor, which feeds them to
        a new decoder first. A payload being skipped after an error is not included; while
        resynchronising, the partial line held is (the successor reads it as a header).
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
        while self._skip or self._skip_line or self._resync is not None:
            del self._buffer[: self._drop_skipped(self._buffer)]
            if self._skip or self._skip_line:
                return self._starved()
            if self._resync is not None and not self._resync_line():
                return self._starved()
        if self._header is not None:
            return self._read_payload(self._header)
        return self._read_header()

    # -- skipping -------------------------------------------------------------------------

    def _drop_skipped(self, data: bytes | bytearray) -> int:
        """Account for skipped bytes at the start of ``data``; return how many to drop."""
        if self._skip_line:
            limit = len(data) if self._resync is None else min(len(data), self._resync)
            end = data.find(b"\n", 0, limit)
            count = limit if end < 0 else end + 1
            self._skip_line = end < 0
            self._resynced(count)
            return count
        count = min(self._skip, len(data))
        self._skip -= count
        return count

    def _resynced(self, count: int) -> None:
        """``count`` more bytes were dropped while resynchronising (if resynchronising)."""
        if self._resync is not None:
            self._resync -= count
            if not self._resync:
                self._resync = None
                self._skip_line = False

    def _resync_line(self) -> bool:
        """Drop one line while resynchronising; return False when more bytes are needed.

        Resynchronising ends before a well-formed header line, or after the announced bytes
        (a line counts only when its LF is among them); a long line is dropped unbuffered.
        """
        left = self._resync
        assert left is not None
        end = self._buffer.find(b"\n", 0, min(left, MAX_HEADER_LENGTH))
        if end >= 0:
            if is_well_formed(_strip_eol(bytes(self._buffer[: end + 1])), self.max_payload):
                self._resync = None
            else:
                del self._buffer[: end + 1]
                self._resynced(end + 1)
            return True
        if left <= min(len(self._buffer), MAX_HEADER_LENGTH):
            del self._buffer[:left]
            self._resync = None
            return True
        if len(self._buffer) >= MAX_HEADER_LENGTH:
            del self._buffer[:MAX_HEADER_LENGTH]
            self._skip_line = True
            self._resynced(MAX_HEADER_LENGTH)
            return True
        return False

    def _starved(self) -> Sentinel:
        """Out of bytes while skipping: wait for more, or report the cut-off payload."""
        if not self._closed:
            return NEED_DATA
        self._finished = True
        if self._skip_line or self._resync is not None:
            self._buffer.clear()
            return END_OF_INPUT
        line = self._skipped_header
        name, id_ = salvage(line, complete=True)
        raise FrameError(
            f"end of input inside the payload of {quote(line)}: {self._skip} more payload "
            "bytes were expected",
            code="truncated",
            recoverable=False,
            command_name=name,
            command_id=id_,
        )

    # -- headers --------------------------------------------------------------------------

    def _read_header(self) -> Command | Sentinel:
        while True:
            end = self._buffer.find(b"\n", 0, MAX_HEADER_LENGTH)
            if end < 0:
                return self._no_header_yet()
            raw = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            line = _strip_eol(raw)
            if line:
                break
        header = parse_header(raw, line, self.max_payload)
        if isinstance(header, BadHeader):
            self._header_error(line, raw, header)
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
            name, id_ = salvage(data, complete=False)
            raise FrameError(
                f"no end of line within {MAX_HEADER_LENGTH} bytes: expected {SYNTAX}, got "
                f"{quote(data)}; the rest of the line is skipped",
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
        name, id_ = salvage(data, complete=False)
        raise FrameError(
            f"end of input inside a frame header: got {quote(data)} without a newline; "
            f"expected {SYNTAX} ending with a newline",
            code="truncated",
            data=data,
            recoverable=False,
            command_name=name,
            command_id=id_,
        )

    def _header_error(self, line: bytes, raw: bytes, bad: BadHeader) -> NoReturn:
        """Raise ``bad`` as a :class:`FrameError` after setting up its recovery."""
        if bad.recovery == "line":
            message = f"{bad.reason}; skipped the line"
        elif bad.recovery == "resync":
            self._resync = bad.length
            message = (
                f"{bad.reason}; skipped the line, and the input up to the next line that is a "
                f"well-formed header or the end of the {bad.length} announced bytes"
            )
        elif bad.length == 0:
            message = f"{bad.reason}; skipped the frame"
        else:
            self._skip = bad.length
            self._skipped_header = line
            del self._buffer[: self._drop_skipped(self._buffer)]
            message = f"{bad.reason}; skipping the frame and its {bad.length} payload bytes"
        name, id_ = salvage(line, complete=True)
        raise FrameError(
            message,
            code=bad.code,
            data=raw[:MAX_ERROR_DATA],
            command_name=name,
            command_id=id_,
        )

    # -- payloads -------------------------------------------------------------------------

    def _read_payload(self, header: Header) -> Command | Sentinel:
        if len(self._buffer) < header.length:
            if not self._closed:
                return NEED_DATA
            self._finished = True
            data = (header.raw + self._buffer[:MAX_ERROR_DATA])[:MAX_ERROR_DATA]
            got = len(self._buffer)
            self._buffer.clear()
            self._header = None
            raise FrameError(
                f"end of input inside the payload of {quote(header.line)}: got {got} of "
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

    def _build(self, header: Header, payload: bytes) -> Command:
        if header.name == RunTests.name:
            return RunTests(header.id, self._test_ids(header, payload) if payload else ())
        if header.name == Stdin.name:
            return Stdin(header.id, payload)
        return COMMAND_TYPES[header.name](header.id)

    def _test_ids(self, header: Header, payload: bytes) -> tuple[str, ...]:
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
    def _payload_error(header: Header, payload: bytes, reason: str) -> NoReturn:
        frame = header.raw + payload[:MAX_ERROR_DATA]
        raise FrameError(
            f"bad {header.name!r} payload after {quote(header.line)}: {reason}; expected test "
            "ids in UTF-8, one per line",
            code="bad-payload",
            data=frame[:MAX_ERROR_DATA],
            command_name=header.name,
            command_id=header.id,
        )
