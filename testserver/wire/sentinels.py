"""Sentinel values returned by the sans-I/O decoders instead of events."""

from __future__ import annotations

import enum


class Sentinel(enum.Enum):
    """What a decoder's ``next_event()`` returns when it has no event to give."""

    NEED_DATA = "NEED_DATA"
    """More bytes are needed before the next event is complete."""

    END_OF_INPUT = "END_OF_INPUT"
    """``receive_data(b"")`` was called and every buffered event has been returned."""

    def __repr__(self) -> str:
        return self.value


NEED_DATA = Sentinel.NEED_DATA
END_OF_INPUT = Sentinel.END_OF_INPUT
