"""python-subunit as the reference reader: what its v2 parser reports for bytes or a packet.

:func:`read_with_subunit` decodes a stream with ``subunit.ByteStreamToStreamResult`` and
returns every ``status()`` call as a keyword dict (file content normalised to ``bytes``);
:func:`subunit_view` is the dict it reports for one of our :class:`Packet` (it has no parent
id). Used by the codec tests, the end-to-end tests (through :mod:`serverproc`) and
:mod:`conformance`.
"""

from __future__ import annotations

import datetime
import io
from typing import Any

import subunit
import testtools

from testserver.clients.streamfeed import status_arguments
from testserver.wire.events import Packet

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class Recorder(testtools.StreamResult):
    """Records every ``status()`` call as a dict, bytes normalised to ``bytes``."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict] = []

    def status(self, **kwargs: Any) -> None:  # type: ignore[override]
        if kwargs.get("file_bytes") is not None:
            kwargs["file_bytes"] = bytes(kwargs["file_bytes"])
        self.events.append(kwargs)


def read_with_subunit(data: bytes, *, non_subunit_name: str | None = None) -> list[dict]:
    """Decode ``data`` with python-subunit's own v2 parser.

    With ``non_subunit_name=None`` (the default) it raises on the first byte that is not
    part of a packet; with a name such bytes become file events of that name.
    """
    recorder = Recorder()
    parser = subunit.ByteStreamToStreamResult(io.BytesIO(data), non_subunit_name=non_subunit_name)
    parser.run(recorder)
    return recorder.events


def subunit_view(packet: Packet) -> dict:
    """What python-subunit's reader reports for ``packet`` (it has no parent id): the
    library's ``StreamResultFeed`` mapping, which the codec tests thereby check too."""
    return status_arguments(packet)
