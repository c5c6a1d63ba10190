"""The one event type of a subunit 2.1 stream: :class:`Packet`.

A packet is the StreamResult idea made concrete: every field is optional, and the meaning
comes from which are set. A test status (``test_id`` + ``status``), a file attachment
(``file_name`` + ``file_bytes`` + ``mime_type``, ``eof`` on the last chunk) and a global
control event (a file with no ``test_id``) are all packets.
"""

from __future__ import annotations

from dataclasses import dataclass

from testserver.wire.errors import LocalProtocolError

STATUSES: tuple[str | None, ...] = (
    None,
    "exists",
    "inprogress",
    "success",
    "uxsuccess",
    "skip",
    "fail",
    "xfail",
)
"""Test statuses in wire order: the index is the 3-bit status code of a subunit v2 packet."""

FINAL_STATUSES = frozenset({"success", "uxsuccess", "skip", "fail", "xfail"})
"""Statuses that end a test: after one of these the test has finished."""

MAX_TIMESTAMP_SECONDS = 2**32 - 1
"""Timestamps carry seconds as an unsigned 32-bit integer on the wire."""

NANOSECONDS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Packet:
    """One subunit 2.1 event.

    ``timestamp_ns`` is nanoseconds since the Unix epoch (the wire keeps seconds and
    nanoseconds). ``tags`` is ``None`` when absent; a tuple keeps the wire order so that
    encoding a decoded packet gives the same bytes. A file is present when ``file_name`` is
    not ``None``; ``file_bytes`` is its chunk. ``parent_test_id`` is the 2.1 extension (flag
    ``0x0008``): the id of the test this one is a subtest of.
    """

    test_id: str | None = None
    status: str | None = None
    timestamp_ns: int | None = None
    tags: tuple[str, ...] | None = None
    mime_type: str | None = None
    file_name: str | None = None
    file_bytes: bytes = b""
    route_code: str | None = None
    runnable: bool = True
    eof: bool = False
    parent_test_id: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise LocalProtocolError(
                f"unknown test status {self.status!r}; expected one of {STATUSES[1:]} or None"
            )
        ts = self.timestamp_ns
        if ts is not None and not (0 <= ts < (MAX_TIMESTAMP_SECONDS + 1) * NANOSECONDS):
            raise LocalProtocolError(f"timestamp_ns {ts!r} is outside 0 .. 2**32 seconds")
        if self.file_name is None and self.file_bytes:
            raise LocalProtocolError("file_bytes given without a file_name")
        if self.tags is not None and not isinstance(self.tags, tuple):
            raise LocalProtocolError(f"tags must be a tuple of str or None, not {self.tags!r}")

    @property
    def is_final(self) -> bool:
        """True when this packet carries a status that ends its test."""
        return self.status in FINAL_STATUSES
