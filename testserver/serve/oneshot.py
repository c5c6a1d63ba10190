"""One-shot mode: a drop-in for ``python -m subunit.run`` that writes one stream and exits.

``python -m testserver [discover ...] [--list] [--load-list FILE]`` lists or runs the tests,
writing plain subunit v2 (2.1 for subtests) with no control events, then exits 0, or 2 when
listing finds import errors (after an ``import errors`` attachment), as ``subunit.run`` does.
Tests still run in a forked worker, so a test that kills its process is reported, not fatal.
A requested test that did not run gets an explicit failing record, and the exit status is 1.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass

from testserver.engine.loading import TestIndex
from testserver.engine.results import PacketResult
from testserver.serve import reaping
from testserver.serve.channel import PrivateChannel
from testserver.serve.driver import PacketWriter, RunOptions, SessionDriver
from testserver.serve.server import emit_output, list_packets
from testserver.wire.commands import ListTests, Reload, RunTests
from testserver.wire.packets import TEXT_MIME, file_packets
from testserver.wire.sessionactions import Action

EXIT_IMPORT_ERRORS = 2
"""Exit status of ``--list`` when a module failed to import (as ``subunit.run``)."""

EXIT_NOT_RUN = 1
"""Exit status of a run in which a requested test did not run (interrupted, unknown id,
a failed fixture, a broken ``TestCase.run``): never 0 then."""


@dataclass
class OneShotOptions(RunOptions):
    """What one-shot mode was asked to do."""

    list_only: bool = False
    test_ids: list[str] | None = None
    isolation: str = "fork"  # one batch: nothing to reuse a worker for


def run_oneshot(index: TestIndex, channel: PrivateChannel, options: OneShotOptions) -> int:
    """List or run, writing subunit to the private stdout; return the exit code."""
    write = PacketWriter(channel.packets_fd)
    version = options.subunit_version
    stdout, stderr = channel.capture.take()
    emit_output(write, stdout, stderr, version)
    ids = list(index.ids) if options.test_ids is None else options.test_ids
    if options.list_only:
        return _list(index, ids, write, version)
    reaping.become_subreaper()  # orphans of tests come back here, to be ended
    completion = OneShotRun(index, channel, options, ids).run_batch()
    reporter = PacketResult(write, subunit_version=version)
    cancelled = completion["status"] == "cancelled"
    _report_not_run(reporter, completion["not_run"], cancelled, completion.get("lost", []))
    return 0 if completion["status"] == "ok" else EXIT_NOT_RUN


class OneShotRun(SessionDriver):
    """One ``run-tests`` of ``ids`` and end of input, through a ``ServerSession``:
    the warm server's batch machinery, with the completion kept instead of written."""

    handled_signals = (signal.SIGINT,)  # Ctrl-C cancels the run; SIGTERM keeps its default

    def __init__(
        self, index: TestIndex, channel: PrivateChannel, options: OneShotOptions, ids: list[str]
    ) -> None:
        super().__init__(
            index, channel, options, can_reload=False, interactive_stdin=False, standby=False
        )
        self.ids = ids
        self.completion: dict | None = None

    def run_batch(self) -> dict:
        """Run the batch; return its completion body (``status``, ``not_run``, ...)."""
        self._install_signals()
        try:
            self._act(self.session.receive_command(RunTests("oneshot", ()), time.monotonic()))
            if not self.exited:
                self._act(self.session.receive_end_of_input())
            self.run()
        finally:
            self._restore_signals()
            self.close_remotes()
            self.spawner.close()  # waits for the worker and ends every process its tests left
        assert self.completion is not None
        return self.completion

    def requested(self, command: RunTests) -> list[str]:
        return self.ids  # an empty --load-list runs nothing, where RunTests(()) runs all

    def send(self, body: dict) -> None:
        self.completion = body

    def execute(self, command: ListTests | Reload) -> list[Action]:
        raise AssertionError(f"one-shot mode sends no {command.name}")


def _list(index: TestIndex, ids: list[str], write: PacketWriter, version: str) -> int:
    listed = [i for i in ids if i in index]
    for chunk in list_packets(listed, version):
        write(chunk)
    if not index.errors:
        return 0
    text = "\n".join(error.traceback for error in index.errors).encode("utf-8")
    write(
        b"".join(
            file_packets(
                "import errors",
                text,
                mime_type=TEXT_MIME,
                subunit_version=version,
            )
        )
    )
    return EXIT_IMPORT_ERRORS


def _report_not_run(
    result: PacketResult, not_run: list[str], cancelled: bool, lost: list[str]
) -> None:
    """An explicit failing record for each requested test that did not run (``lost``: the
    remote workers lost in the run, and why).

    Consumers of ``subunit.run`` streams (testr, stestr, subunit2junitxml) know no
    "not run": without a record they would count nothing, and the run would look green.
    """
    if cancelled:
        reason = "the run was interrupted before it started"
    else:
        reason = (
            "the run ended without a result for it: its class or module fixture failed "
            "(reported as its own error), or something replaced or broke unittest's "
            "TestCase.run"
        )
    if lost and not cancelled:
        reason = (
            "the run ended without a result for it: no worker was left to run it (lost: "
            + "; ".join(lost)
            + "), or its class or module fixture failed"
        )
    for test_id in dict.fromkeys(not_run):
        result.report_failure(test_id, f"testserver: this test was not run: {reason}.\n")
