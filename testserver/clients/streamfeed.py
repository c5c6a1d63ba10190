"""Feed a run into any testtools ``StreamResult``: existing consumers on a warm server.

testtools' ``StreamResult`` interface (``startTestRun()``, ``status(...)``, ``stopTestRun()``)
is what python-subunit's ``ByteStreamToStreamResult`` drives and what testtools' consumers
read (``StreamSummary``, ``StreamToDict``, ``StreamResultRouter``, and
``StreamToExtendedDecorator`` in front of any ``unittest.TestResult``).
:class:`StreamResultFeed` drives the same interface from our own decoder, so such a consumer
can sit on ``Client.run_into(ids, result)`` (or ``run.feed(result)``) without a subunit byte
stream in between. Neither
testtools nor python-subunit is imported: any object with those three methods will do.

One packet gives one ``status()`` call with the keyword arguments python-subunit passes for
the same bytes (:func:`status_arguments`): ``test_id``, ``test_status``, ``test_tags`` (a
``set`` or ``None``), ``runnable``, ``file_name``, ``file_bytes`` (``None`` without a file),
``eof``, ``mime_type``, ``route_code`` and ``timestamp`` (an aware UTC ``datetime``, rounded to
the microsecond as python-subunit does, or ``None``). What else the feed decides:

- **Subtests.** testtools has no ``parent_test_id`` argument, and python-subunit skips the
  2.1 field; so does the feed: a subtest reaches the result as a test of its own, whose id is
  its parent's followed by its parameters (``pkg.T.test_x (i=1)``), counted by
  ``StreamSummary`` as ``subunit-stats`` counts it. A result whose ``status()`` names a
  ``parent_test_id`` parameter gets the parent's id in it as well (``None`` for a test that
  is no subtest).
- **Control events** (``testserver.hello``, ``testserver.complete``, ``testserver.reload``,
  ``testserver.stdin-wanted``) are the protocol's, not test results: they are not fed.
- **Tests that did not run.** Each id in the completion's ``not_run`` is fed as a failing test
  with a ``reason`` attachment (``wire.synthetic.not_run_test``, as ``testserver run --format
  subunit`` writes), so ``wasSuccessful()`` is false when a requested test got no result.
- **Input.** A test that waits for stdin gets end of input: nobody is typing.
- ``startTestRun()`` comes before the first event and ``stopTestRun()`` after the last, also
  when a :class:`~testserver.clients.client.ClientError` ends the run early (it propagates).
"""

from __future__ import annotations

import datetime
import inspect
from typing import TYPE_CHECKING, Any

from testserver.wire.clientsession import ControlReceived, StreamPacket
from testserver.wire.control import STDIN_WANTED
from testserver.wire.events import NANOSECONDS, Packet
from testserver.wire.packets import decode_packets
from testserver.wire.synthetic import not_run_test

if TYPE_CHECKING:
    from testserver.clients.client import Run

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)

PARENT_ARGUMENT = "parent_test_id"
"""The ``status()`` parameter that, when a result declares it, receives a subtest's parent."""


def timestamp(timestamp_ns: int | None) -> datetime.datetime | None:
    """``timestamp_ns`` as python-subunit reports it: UTC, to the nearest microsecond."""
    if timestamp_ns is None:
        return None
    seconds, nanoseconds = divmod(timestamp_ns, NANOSECONDS)
    return EPOCH + datetime.timedelta(seconds=seconds, microseconds=nanoseconds / 1000)


def status_arguments(packet: Packet) -> dict[str, Any]:
    """The keyword arguments of the ``status()`` call for ``packet``."""
    has_file = packet.file_name is not None
    return {
        "test_id": packet.test_id,
        "test_status": packet.status,
        "test_tags": None if packet.tags is None else set(packet.tags),
        "runnable": packet.runnable,
        "file_name": packet.file_name,
        "file_bytes": packet.file_bytes if has_file else None,
        "eof": packet.eof,
        "mime_type": packet.mime_type,
        "route_code": packet.route_code,
        "timestamp": timestamp(packet.timestamp_ns),
    }


def takes_parent(result: Any) -> bool:
    """Whether ``result.status`` names a ``parent_test_id`` parameter (``**kwargs`` is no
    such declaration: python-subunit never passes one)."""
    try:
        parameter = inspect.signature(result.status).parameters.get(PARENT_ARGUMENT)
    except (TypeError, ValueError):  # a callable without a signature
        return False
    return parameter is not None and parameter.kind is not inspect.Parameter.VAR_KEYWORD


class StreamResultFeed:
    """Calls ``result.status()`` for each packet it is given (see the module docstring)."""

    def __init__(self, result: Any) -> None:
        for method in ("startTestRun", "status", "stopTestRun"):
            if not callable(getattr(result, method, None)):
                raise TypeError(
                    f"{type(result).__name__} has no {method}() method: a StreamResult has "
                    "startTestRun(), status(**kwargs) and stopTestRun()"
                )
        self.result = result
        self.parent = takes_parent(result)

    def packet(self, packet: Packet) -> None:
        """One ``status()`` call for ``packet``."""
        arguments = status_arguments(packet)
        if self.parent:
            arguments[PARENT_ARGUMENT] = packet.parent_test_id
        self.result.status(**arguments)

    def not_run(self, complete: dict[str, Any]) -> None:
        """A failing test for every id of the completion's ``not_run``."""
        status = complete.get("status")
        for test_id in complete.get("not_run") or ():
            for packet in decode_packets(b"".join(not_run_test(test_id, status))):
                self.packet(packet)

    def feed_run(self, run: Run) -> dict[str, Any]:
        """Feed ``run`` from its next packet to its completion, between ``startTestRun()``
        and ``stopTestRun()``; return the completion."""
        self.result.startTestRun()
        try:
            for packet, received in run.events():
                if isinstance(received, StreamPacket):
                    self.packet(packet)
                elif isinstance(received, ControlReceived) and received.name == STDIN_WANTED:
                    run.send_stdin(b"")
            complete = run.complete or {}
            self.not_run(complete)
        finally:
            self.result.stopTestRun()
        return complete
