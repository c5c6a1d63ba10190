"""Protocol errors, split by whose fault they are.

- :class:`RemoteProtocolError`: the peer sent bytes that break the protocol. Decoders raise
  it from ``next_event()`` after skipping the bad bytes, so the caller reports it in-band and
  calls ``next_event()`` again (``recoverable`` says whether the decoder could resynchronise).
- :class:`LocalProtocolError`: the caller misused the API, e.g. asked to encode an event that
  cannot be represented on the wire. It is a programming error: raise, do not report in-band.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every testserver protocol error.

    ``code`` is a short stable identifier (``"bad-name"``, ``"bad-crc"``, ...) listed in
    ``spec/protocol.md``; ``message`` says what was wrong and, where it helps, what to do.
    """

    code: str = "protocol-error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that violate the protocol.

    ``data`` holds the bytes the decoder discarded because of this error (possibly truncated
    for very large frames). ``recoverable`` is true when decoding can continue at the next
    frame or packet boundary.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        data: bytes = b"",
        recoverable: bool = True,
    ) -> None:
        super().__init__(message, code=code)
        self.data = data
        self.recoverable = recoverable


class FrameError(RemoteProtocolError):
    """A malformed command frame on the server's stdin.

    ``command_name`` and ``command_id`` carry what could be parsed of the frame header (or
    ``None``), so that the server can echo the id on its error completion.
    """

    code = "bad-frame"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        data: bytes = b"",
        recoverable: bool = True,
        command_name: str | None = None,
        command_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code, data=data, recoverable=recoverable)
        self.command_name = command_name
        self.command_id = command_id


class PacketError(RemoteProtocolError):
    """A malformed subunit v2 packet in a server's output stream."""

    code = "bad-packet"


class LocalProtocolError(ProtocolError, ValueError):
    """The caller asked for something the protocol cannot express (an API misuse)."""

    code = "local-error"
