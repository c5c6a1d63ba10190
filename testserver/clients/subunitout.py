"""``testserver run --format subunit``: a clean, results-only subunit v2 stream on stdout.

A capture of ``python -m testserver --serve`` is a *protocol* stream: it carries control
events (``testserver.hello``, ``testserver.complete``...) that python-subunit's tools take for
output (``subunit-stats`` prints their JSON, ``subunit2junitxml`` writes it into the XML).
This renderer writes only the packets of tests and the output outside tests, re-encoded as
they arrive, so ``testserver run --format subunit | subunit2junitxml`` (or ``subunit-stats``,
``subunit2pyunit``, ``testr load``) reads exactly what ``python -m subunit.run`` would give:

- ``--subtests report`` (the default) keeps every subtest as a test of its own (subunit 2.1
  packets with a parent test id), as ``--serve`` does;
- ``--subtests fold`` leaves subtests out: their parent's final status already says ``fail``
  when one of them failed, with a traceback naming them, so the totals are those of
  ``python -m subunit.run``;
- a requested test that got no result (a cancel, a runner a test broke) gets a failing
  record of its own, as in one-shot mode, so no consumer counts it as passed.
"""

from __future__ import annotations

import sys
from typing import BinaryIO, TextIO

from testserver.clients.runs import Renderer, Tally
from testserver.wire.events import Packet
from testserver.wire.packets import encode_packet
from testserver.wire.synthetic import not_run_test

SUBTEST_MODES = ("report", "fold")
"""Values of ``--subtests``."""


class SubunitRenderer(Renderer):
    """Re-encodes a run's test packets (no control events) onto a binary stream."""

    def __init__(
        self,
        stream: BinaryIO,
        *,
        subtests: str = "report",
        version: str = "2.1",
        err: TextIO | None = None,
    ) -> None:
        if subtests not in SUBTEST_MODES:
            raise ValueError(f"subtests must be one of {SUBTEST_MODES}, not {subtests!r}")
        self.stream = stream
        self.err = err
        self.fold = subtests == "fold"
        self.version = version

    def packet(self, packet: Packet) -> None:
        if self.fold and packet.parent_test_id is not None:
            return
        self.stream.write(encode_packet(packet, subunit_version=self.version))

    def message(self, text: str) -> None:
        print(f"testserver: {text}", file=self.err or sys.stderr, flush=True)

    def finish(self, tally: Tally) -> None:
        status = tally.complete.get("status")
        for test_id in tally.not_run:
            self.stream.write(b"".join(not_run_test(test_id, status, subunit_version=self.version)))
        self.stream.flush()
