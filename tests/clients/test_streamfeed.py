"""The StreamResult feed: a warm server's run into testtools consumers, as python-subunit would.

Each end-to-end test runs a real ``python -m testserver --serve`` over real pipes through
:class:`Client`, with the server's stdout teed so that the very bytes the client decoded can
be handed to python-subunit's ``ByteStreamToStreamResult`` too; the two sequences of
``status()`` calls must agree event by event (attachments, timestamps, route codes and all).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import unittest
from pathlib import Path
from typing import Any

import pytest
import testtools
from hypothesis import given
from hypothesis import strategies as st
from serverproc import PROJECTS
from subunit_reader import Recorder, read_with_subunit

from testserver.clients.client import Client
from testserver.clients.streamfeed import StreamResultFeed
from testserver.wire.control import decode_control
from testserver.wire.events import STATUSES, Packet
from testserver.wire.packets import decode_packets, encode_packet
from testserver.wire.synthetic import not_run_test

TIMEOUT = 60
SUBTESTS = {f"cdemo.test_sub.Sub.test_numbers (i={i})" for i in range(3)}
"""The subtests of ``cli_demo``, each reported as a test of its own."""
OUTCOMES = [
    f"cdemo.test_outcomes.Outcomes.test_{name}"
    for name in ("error", "fail", "pass", "skip", "uxsuccess", "xfail")
]
"""Tests of ``cli_demo`` with each outcome (``test_bytes`` prints invalid UTF-8, on which
testtools' ``StreamSummary`` raises, fed by python-subunit too)."""
NUMBERS = "cdemo.test_sub.Sub.test_numbers"
NEVER = "cdemo.test_sub.BrokenFixture.test_never"
"""The test of ``cli_demo`` whose class fixture fails: it is in the completion's ``not_run``."""


class TeedServer:
    """A server whose stdout is copied to ``data`` on its way to the :class:`Client`."""

    def __init__(self, project: Path, *args: str) -> None:
        argv = [sys.executable, "-m", "testserver", "--serve", "-t", ".", *args]
        self.process = subprocess.Popen(
            argv, cwd=project, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.data = bytearray()
        read_fd, self._write_fd = os.pipe()
        self._tee = threading.Thread(target=self._copy, daemon=True)
        self._tee.start()
        assert self.process.stdin is not None
        self.client = Client(read_fd, self.process.stdin.fileno(), process=self.process)

    def _copy(self) -> None:
        assert self.process.stdout is not None
        while chunk := os.read(self.process.stdout.fileno(), 1 << 16):
            self.data += chunk
            view = memoryview(chunk)
            while view:
                view = view[os.write(self._write_fd, view) :]
        os.close(self._write_fd)

    def close(self) -> bytes:
        """Quit the server (once); every byte it wrote."""
        if self.process.returncode is None:
            self.client.close(TIMEOUT)
            self._tee.join(TIMEOUT)
            os.close(self.client.read_fd)
        return bytes(self.data)


def results_by_subunit(data: bytes, complete: dict[str, Any]) -> list[dict[str, Any]]:
    """python-subunit's ``status()`` calls for ``data``, the protocol's control events left
    out (our decoder says which packets those are; subunit gives one call per packet), then
    for the not-run record of each id in ``complete["not_run"]``, as ``testserver run
    --format subunit`` writes them."""
    events = read_with_subunit(data)
    packets = decode_packets(data)
    assert len(events) == len(packets)
    results = [e for e, p in zip(events, packets, strict=True) if decode_control(p) is None]
    for test_id in complete["not_run"]:
        results += read_with_subunit(b"".join(not_run_test(test_id, complete["status"])))
    return results


def replay(events: list[dict[str, Any]], result: Any) -> Any:
    """Drive ``result`` with ``events`` as ``ByteStreamToStreamResult`` does; ``result``."""
    result.startTestRun()
    for event in events:
        result.status(**event)
    result.stopTestRun()
    return result


class ParentAware(testtools.StreamResult):
    """A result that declares ``parent_test_id``: the feed passes it the 2.1 parent."""

    def __init__(self) -> None:
        super().__init__()
        self.parents: dict[str, str | None] = {}

    def status(self, test_id=None, test_status=None, parent_test_id=None, **kwargs) -> None:  # type: ignore[override]
        if test_id is not None:
            self.parents[test_id] = parent_test_id


def dicts(results: list[dict]) -> list[dict]:
    """``StreamToDict`` output with each attachment as ``(content type, bytes)``."""
    return [
        {
            **case,
            "details": {
                name: (str(content.content_type), b"".join(content.iter_bytes()))
                for name, content in case["details"].items()
            },
        }
        for case in results
    ]


def summary_of(summary: testtools.StreamSummary) -> dict:
    return {
        "ran": summary.testsRun,
        "ok": summary.wasSuccessful(),
        "failures": sorted(case.id() for case, _ in summary.failures),
        "errors": sorted(case.id() for case, _ in summary.errors),
        "skipped": sorted(case.id() for case, _ in summary.skipped),
        "xfail": sorted(case.id() for case, _ in summary.expectedFailures),
        "uxsuccess": sorted(case.id() for case in summary.unexpectedSuccesses),
    }


@pytest.fixture
def demo() -> TeedServer:
    server = TeedServer(PROJECTS / "cli_demo", "-s", "cdemo")
    yield server
    server.close()


def test_a_run_fed_into_testtools_consumers_matches_python_subunit_event_by_event(demo):
    recorder, summary, collected = Recorder(), testtools.StreamSummary(), []
    to_dict = testtools.StreamToDict(collected.append)
    ids = [*OUTCOMES, "cdemo.test_stdin.Stdin.test_reads_end_of_input", NUMBERS, NEVER]
    everyone = testtools.CopyStreamResult([recorder, summary, to_dict])
    complete = demo.client.run_into(ids, everyone)
    assert (complete["status"], complete["not_run"]) == ("incomplete", [NEVER])
    reference = results_by_subunit(demo.close(), complete)

    assert recorder.events == reference
    names = {e["file_name"] for e in reference} - {None}
    assert {"stdout", "stderr", "traceback", "reason"} <= names  # attachments came through
    timed = [e for e in reference if e["test_status"] and e["test_id"] != NEVER]
    assert timed and all(e["timestamp"] is not None for e in timed)  # NEVER: synthetic
    assert {e["test_id"] for e in reference} >= SUBTESTS

    expected_summary = replay(reference, testtools.StreamSummary())
    assert summary_of(summary) == summary_of(expected_summary)
    assert summary_of(summary)["errors"]  # the demo fails: the comparison has substance
    expected_dicts: list[dict] = []
    replay(reference, testtools.StreamToDict(expected_dicts.append))
    assert dicts(collected) == dicts(expected_dicts)
    assert {case["id"] for case in collected} >= SUBTESTS | {NEVER}


def test_a_result_that_declares_parent_test_id_gets_each_subtests_parent(demo):
    parents = ParentAware()
    demo.client.run_into([NUMBERS, OUTCOMES[2]], parents)
    demo.close()
    assert parents.parents == {**dict.fromkeys(SUBTESTS, NUMBERS), NUMBERS: None, OUTCOMES[2]: None}


def test_a_unittest_result_behind_testtools_decorator_counts_what_unittest_would(demo):
    result = unittest.TestResult()
    demo.client.run_into(OUTCOMES, testtools.StreamToExtendedDecorator(result))
    demo.close()
    assert result.testsRun == 6
    assert (len(result.failures) + len(result.errors), len(result.skipped)) == (2, 1)
    assert (len(result.expectedFailures), len(result.unexpectedSuccesses)) == (1, 1)


def test_a_requested_test_that_did_not_run_reaches_the_result_as_a_failure(tmp_path):
    server = TeedServer(PROJECTS / "cli_notrun", "-s", "cnotrun")
    recorder, summary = Recorder(), testtools.StreamSummary()
    complete = server.client.run_into([], testtools.CopyStreamResult([recorder, summary]))
    reference = results_by_subunit(server.close(), {"not_run": []})
    silent = "cnotrun.test_hijack.A.test_2_silent"
    assert complete["not_run"] == [silent]
    assert recorder.events[: len(reference)] == reference
    added = recorder.events[len(reference) :]
    assert [(e["test_id"], e["test_status"], e["file_name"]) for e in added] == [
        (silent, "inprogress", None),
        (silent, None, "reason"),
        (silent, "fail", None),
    ]
    assert b"was requested but did not run" in added[1]["file_bytes"]
    assert not summary.wasSuccessful() and [c.id() for c, _ in summary.errors] == [silent]


def test_only_stream_results_are_accepted():
    with pytest.raises(TypeError, match=r"list has no startTestRun\(\) method: a StreamResult"):
        StreamResultFeed([])


# -- every packet, against python-subunit's parser -----------------------------------------

texts = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20
)


@st.composite
def packets(draw: st.DrawFn) -> Packet:
    file = draw(st.none() | st.tuples(texts, st.binary(max_size=50)))
    return Packet(
        test_id=draw(st.none() | texts),
        status=draw(st.sampled_from(STATUSES)),
        timestamp_ns=draw(st.none() | st.integers(0, 2**32 * 10**9 - 1)),
        tags=draw(st.none() | st.lists(texts, max_size=3).map(tuple)),
        mime_type=draw(st.none() | texts),
        file_name=None if file is None else file[0],
        file_bytes=b"" if file is None else file[1],
        route_code=draw(st.none() | texts),
        runnable=draw(st.booleans()),
        eof=draw(st.booleans()),
        parent_test_id=draw(st.none() | texts),
    )


@given(st.lists(packets(), max_size=4))
def test_the_feed_calls_status_exactly_as_python_subunit_does(sent: list[Packet]) -> None:
    """Invariant: for any packets, our decoder plus the feed give the same ``status()``
    calls as python-subunit's parser of the same bytes (nanoseconds, parent ids and all)."""
    data = b"".join(encode_packet(packet) for packet in sent)
    recorder = Recorder()
    feed = StreamResultFeed(recorder)
    for packet in decode_packets(data):
        feed.packet(packet)
    assert recorder.events == read_with_subunit(data)
