"""One-shot mode: a drop-in for ``python -m subunit.run`` that writes one stream and exits.

``python -m testserver [discover ...] [--list] [--load-list FILE]`` lists or runs the tests,
writing plain subunit v2 (2.1 for subtests) with no control events, then exits 0, or 2 when
listing finds import errors (after an ``import errors`` attachment), as ``subunit.run`` does.
Tests still run in a forked worker, so a test that kills its process is reported, not fatal.
A requested test that did not run gets an explicit failing record, and the exit status is 1.
"""

from __future__ import annotations

import os
import select
import signal
import time
from dataclasses import dataclass

from testserver.engine.fds import make_private
from testserver.engine.loading import TestIndex
from testserver.engine.results import PacketResult
from testserver.engine.subtests import packet_result
from testserver.serve import reaping
from testserver.serve.batch import BatchRun, run_in_process
from testserver.serve.channel import PrivateChannel
from testserver.serve.server import PacketWriter, emit_output, list_packets
from testserver.serve.worker import WorkerOptions, WorkerSpawner
from testserver.wire.batchtracking import BatchResult
from testserver.wire.packets import file_packets

EXIT_IMPORT_ERRORS = 2
"""Exit status of ``--list`` when a module failed to import (as ``subunit.run``)."""

EXIT_NOT_RUN = 1
"""Exit status of a run in which a requested test did not run (interrupted, unknown id,
a failed fixture, a broken ``TestCase.run``): never 0 then."""


@dataclass
class OneShotOptions:
    """What one-shot mode was asked to do."""

    list_only: bool = False
    test_ids: list[str] | None = None
    isolation: str = "fork"
    subunit_version: str = "2.1"
    subtests: str = "report"
    timeout: float | None = None


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
    found, unknown = index.resolve(ids)
    result = packet_result(
        write, subtests=options.subtests, subunit_version=version, capture=channel.capture
    )
    for test_id in unknown:
        result.report_missing(test_id)
    if options.isolation == "none":
        interrupted: list[int] = []
        tracker = run_in_process(
            found,
            write,
            channel.capture,
            subunit_version=version,
            should_stop=lambda: bool(interrupted),
            on_interrupt=lambda: interrupted.append(signal.SIGINT),
            unknown=unknown,
            subtests=options.subtests,
        )
        reaping.sweep(set())
        outcome = tracker.result(interrupted=bool(interrupted))
    else:
        outcome = _run_forked(index, channel, options, write, [i for i, _ in found], unknown)
    _report_not_run(result, list(outcome.not_run), outcome.status == "cancelled")
    return 0 if outcome.status == "ok" else EXIT_NOT_RUN


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
                mime_type="text/plain;charset=utf8",
                subunit_version=version,
            )
        )
    )
    return EXIT_IMPORT_ERRORS


def _report_not_run(result: PacketResult, not_run: list[str], cancelled: bool) -> None:
    """An explicit failing record for each requested test that did not run.

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
    for test_id in dict.fromkeys(not_run):
        result.report_failure(test_id, f"testserver: this test was not run: {reason}.\n")


def _run_forked(index, channel, options, write, ids: list[str], unknown: list[str]) -> BatchResult:
    spawner = WorkerSpawner(
        index,
        WorkerOptions(
            subunit_version=options.subunit_version,
            interactive_stdin=False,
            subtests=options.subtests,
        ),
        suite_fds=channel.suite_fds.still_open,
    )
    batch = BatchRun(
        "oneshot",
        ids,
        spawner,
        write,
        unknown=unknown,
        timeout=options.timeout,
        subunit_version=options.subunit_version,
    )
    interrupted: list[int] = []
    wake_r, wake_w = (make_private(fd) for fd in os.pipe())
    os.set_blocking(wake_w, False)
    previous_wakeup = signal.set_wakeup_fd(wake_w)
    previous = signal.signal(signal.SIGINT, lambda number, frame: interrupted.append(number))
    forwarded = reaping.forward_signals(batch.worker_pid)
    try:
        batch.start()
        while not batch.done:
            if interrupted:  # Ctrl-C: cancel the batch (the worker has its own process group)
                batch.cancel()
                interrupted.clear()
            deadline = batch.deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([*batch.fds(), wake_r], [], [], timeout)
            if wake_r in ready:
                os.read(wake_r, 512)
            if set(ready) & set(batch.fds()):
                batch.on_readable()
            deadline = batch.deadline()
            if deadline is not None and time.monotonic() >= deadline:
                batch.on_deadline()
    finally:
        signal.signal(signal.SIGINT, previous)
        reaping.restore_handlers(forwarded)
        signal.set_wakeup_fd(previous_wakeup)
        os.close(wake_r)
        os.close(wake_w)
        spawner.close()  # waits for the worker and ends every process its tests left
    assert batch.result is not None
    return batch.result
