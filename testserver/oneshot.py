"""One-shot mode: a drop-in for ``python -m subunit.run`` that writes one stream and exits.

``python -m testserver [discover ...] [--list] [--load-list FILE]`` lists or runs the tests,
writing plain subunit v2 (2.1 for subtests) with no control events, then exits 0, or 2 when
listing finds import errors (after an ``import errors`` attachment), as ``subunit.run`` does.
Tests still run in a forked worker, so a test that kills its process is reported, not fatal.
"""

from __future__ import annotations

import os
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
from testserver.subtests import packet_result
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
    result = packet_result(
        write, subtests=options.subtests, subunit_version=version, capture=channel.capture
    )
    for test_id in unknown:
        result.report_missing(test_id)
    if options.isolation == "none":
        return _run_in_process(found, result)
    return _run_forked(index, channel, options, write, [test_id for test_id, _ in found])


def _run_in_process(found: list, result: PacketResult) -> int:
    """Run in this process; Ctrl-C interrupts the running test and stops the run (exit 1)."""
    interrupted: list[int] = []

    def on_sigint(number: int, frame: object) -> None:
        interrupted.append(number)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        run_tests(found, result, should_stop=lambda: bool(interrupted))
    finally:
        signal.signal(signal.SIGINT, previous)
    return 1 if interrupted else 0


def _run_forked(index, channel, options, write, ids: list[str]) -> int:
    spawner = WorkerSpawner(
        index,
        WorkerOptions(
            subunit_version=options.subunit_version,
            interactive_stdin=False,
            subtests=options.subtests,
        ),
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
    interrupted: list[int] = []
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    previous_wakeup = signal.set_wakeup_fd(wake_w)
    previous = signal.signal(signal.SIGINT, lambda number, frame: interrupted.append(number))
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
        signal.set_wakeup_fd(previous_wakeup)
        os.close(wake_r)
        os.close(wake_w)
        spawner.close()
    return 1 if batch.cancelled else 0
