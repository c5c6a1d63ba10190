"""One-shot mode: a drop-in for ``python -m subunit.run`` that writes one stream and exits.

``python -m testserver [discover ...] [--list] [--load-list FILE]`` lists or runs the tests,
writing plain subunit v2 (2.1 for subtests) with no control events, then exits 0, or 2 when
listing finds import errors (after an ``import errors`` attachment), as ``subunit.run`` does.
Tests still run in a forked worker, so a test that kills its process is reported, not fatal.
"""

from __future__ import annotations

import select
import signal
import time
from dataclasses import dataclass

from testserver.batch import BatchRun
from testserver.channel import PrivateChannel
from testserver.execution import run_tests
from testserver.loading import TestIndex
from testserver.results import PacketResult
from testserver.server import PacketWriter, emit_output, list_packets
from testserver.wire.packets import file_packets
from testserver.worker import WorkerOptions, WorkerSpawner

EXIT_IMPORT_ERRORS = 2
"""Exit status of ``--list`` when a module failed to import (as ``subunit.run``)."""


@dataclass
class OneShotOptions:
    """What one-shot mode was asked to do."""

    list_only: bool = False
    test_ids: list[str] | None = None
    isolation: str = "fork"
    subunit_version: str = "2.1"
    timeout: float | None = None


def run_oneshot(index: TestIndex, channel: PrivateChannel, options: OneShotOptions) -> int:
    """List or run, writing subunit to the private stdout; return the exit code."""
    write = PacketWriter(channel.packets_fd)
    version = options.subunit_version
    stdout, stderr = channel.capture.take()
    emit_output(write, stdout, stderr, version)
    ids = list(index.ids) if options.test_ids is None else options.test_ids
    if options.list_only:
        listed = [i for i in ids if i in index]
        for chunk in list_packets(listed, version):
            write(chunk)
        if index.errors:
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
        return 0
    found, unknown = index.resolve(ids)
    result = PacketResult(write, subunit_version=version, capture=channel.capture)
    for test_id in unknown:
        result.report_missing(test_id, f"testserver: no test with id {test_id!r} was found.")
    if options.isolation == "none":
        run_tests(found, result)
        return 0
    return _run_forked(index, channel, options, write, [test_id for test_id, _ in found])


def _run_forked(index, channel, options, write, ids: list[str]) -> int:
    spawner = WorkerSpawner(
        index,
        WorkerOptions(subunit_version=options.subunit_version, interactive_stdin=False),
        private_fds=channel.fds,
    )
    batch = BatchRun(
        "oneshot",
        ids,
        spawner,
        write,
        timeout=options.timeout,
        subunit_version=options.subunit_version,
    )
    interrupted = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: interrupted.append(number))
    try:
        batch.start()
        while not batch.done:
            if interrupted:
                batch.cancel()
                interrupted.clear()
            deadline = batch.deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                ready, _, _ = select.select(batch.fds(), [], [], timeout)
            except InterruptedError:
                continue
            if ready:
                batch.on_readable()
            deadline = batch.deadline()
            if deadline is not None and time.monotonic() >= deadline:
                batch.on_deadline()
    finally:
        signal.signal(signal.SIGINT, previous)
        spawner.close()
    return 1 if batch.cancelled else 0
