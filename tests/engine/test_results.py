"""Tests for testserver.engine.results: unittest outcomes as subunit 2.1 packets.

Every stream is decoded twice, with our PacketDecoder and with python-subunit's
ByteStreamToStreamResult + testtools' StreamToDict, and the outcomes are compared with
what ``python -m unittest`` reports for the same sample project.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import os
import re
import subprocess
import sys
import tempfile
import unittest
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
import subunit
import testtools
from hypothesis import given, settings
from hypothesis import strategies as st
from inprocess import PROJECTS, in_child, project

from testserver.engine.capture import OutputCapture
from testserver.engine.results import TEXT_MIME, TRACEBACK_MIME, PacketResult
from testserver.engine.running import run_tests
from testserver.wire.events import Packet
from testserver.wire.packets import decode_packets

OUT = "layer_outcomes"


def _decorated_skips_start_tests() -> bool:
    """False on Python 3.12.1, whose TestCase.run skipped startTest for @skip tests."""

    class Probe(unittest.TestCase):
        @unittest.skip("probe")
        def test_probe(self) -> None:
            pass

    result = unittest.TestResult()
    Probe("test_probe").run(result)
    return result.testsRun == 1


SKIPS_START_TESTS = _decorated_skips_start_tests()


def counter_clock(start: int = 1_700_000_000 * 10**9, step: int = 1000) -> Callable[[], int]:
    counter = itertools.count(start, step)
    return lambda: next(counter)


@dataclass
class Run:
    """What a run wrote, and the result's own unittest-style counts."""

    writes: list[bytes]
    counts: dict[str, int]

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)

    @property
    def packets(self) -> list[Packet]:
        return decode_packets(self.data)


def _counts(result: PacketResult) -> dict[str, int]:
    return {
        "ran": result.testsRun,
        "failures": len(result.failures),
        "errors": len(result.errors),
        "skipped": len(result.skipped),
        "expected failures": len(result.expectedFailures),
        "unexpected successes": len(result.unexpectedSuccesses),
    }


def run(
    tests: Iterable[tuple[str, unittest.TestCase]],
    *,
    capture: OutputCapture | None = None,
    **options: Any,
) -> Run:
    writes: list[bytes] = []
    result = PacketResult(writes.append, capture=capture, **options)
    run_tests(list(tests), result)
    return Run(writes, _counts(result))


def run_project(name: str, ids: Iterable[str] | None = None, **options: Any) -> Run:
    index = project(name)
    tests = index.tests if ids is None else index.resolve(ids)[0]
    return run(tests, **options)


def run_captured(name: str, **options: Any) -> Run:
    """Run a project in a forked child with fds 1 and 2 captured (pytest's stay intact)."""
    return run_tests_captured(project(name).tests, **options)


def run_tests_captured(tests: list[tuple[str, unittest.TestCase]], **options: Any) -> Run:
    """Run tests in a forked child with fds 1 and 2 captured (pytest's stay intact)."""

    def child() -> Run:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            capture = OutputCapture(out.fileno(), err.fileno())
            capture.install()
            outcome = run(tests, capture=capture, **options)
            capture.uninstall()
        return outcome

    return in_child(child)


@dataclass
class Seen:
    """One test as our decoder saw it: statuses, attachments (name -> (mime, bytes))."""

    test_id: str | None
    packets: list[Packet] = field(default_factory=list)

    @property
    def statuses(self) -> list[str]:
        return [packet.status for packet in self.packets if packet.status]

    @property
    def status(self) -> str:
        return self.statuses[-1]

    @property
    def files(self) -> dict[str, tuple[str | None, bytes]]:
        files: dict[str, tuple[str | None, bytes]] = {}
        for packet in self.packets:
            if packet.file_name is not None:
                mime, data = files.get(packet.file_name, (packet.mime_type, b""))
                files[packet.file_name] = (mime, data + packet.file_bytes)
        return files

    @property
    def parent(self) -> str | None:
        return self.packets[0].parent_test_id

    @property
    def runnable(self) -> bool:
        return self.packets[0].runnable


def group_tests(packets: list[Packet]) -> dict[str | None, list[Seen]]:
    """Group packets into tests: a test ends at its final status (ids may repeat)."""
    done: dict[str | None, list[Seen]] = {}
    open_: dict[str | None, Seen] = {}
    for packet in packets:
        seen = open_.setdefault(packet.test_id, Seen(packet.test_id))
        seen.packets.append(packet)
        if packet.is_final or packet.test_id is None:
            done.setdefault(packet.test_id, []).append(open_.pop(packet.test_id))
    assert not open_, f"tests without a final status: {list(open_)}"
    return done


def one_each(packets: list[Packet]) -> dict[str | None, Seen]:
    seen = group_tests(packets)
    assert all(len(runs) == 1 for test_id, runs in seen.items() if test_id is not None)
    return {test_id: runs[-1] for test_id, runs in seen.items()}


def subunit_records(data: bytes) -> list[dict[str, Any]]:
    """Decode with python-subunit into testtools StreamToDict records."""
    records: list[dict[str, Any]] = []
    result = testtools.StreamToDict(records.append)
    result.startTestRun()
    subunit.ByteStreamToStreamResult(io.BytesIO(data), non_subunit_name="stdout").run(result)
    result.stopTestRun()
    assert not [record for record in records if record["id"] == "subunit.parser"]
    return records


def unittest_counts(name: str) -> dict[str, int]:
    """What ``python -m unittest discover`` says about a project."""
    proc = subprocess.run(
        [sys.executable, "-m", "unittest", "discover", "-s", ".", "-t", "."],
        cwd=PROJECTS / name,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        check=False,
    )
    counts = dict.fromkeys(
        ["failures", "errors", "skipped", "expected failures", "unexpected successes"], 0
    )
    ran = re.search(r"^Ran (\d+) tests?", proc.stderr, re.MULTILINE)
    assert ran, proc.stderr
    counts["ran"] = int(ran.group(1))
    summary = re.search(r"^(OK|FAILED)(?: \((.*)\))?$", proc.stderr, re.MULTILINE)
    assert summary, proc.stderr
    for item in (summary.group(2) or "").split(", "):
        if item:
            key, value = item.split("=")
            counts[key] = int(value)
    return counts


def stream_counts(packets: list[Packet]) -> dict[str, int]:
    """Count a stream the way unittest counts: a parent failing only through its subtests
    is not counted (its failing subtests are), fixture errors are, every skip is."""
    seen = [test for runs in group_tests(packets).values() for test in runs if test.test_id]
    failing_parents = {test.parent for test in seen if test.parent and test.status == "fail"}
    counts = Counter(test.status for test in seen)
    real = [test for test in seen if test.runnable and not test.parent]
    return {
        "ran": len(real),
        "failures+errors": counts["fail"]
        - sum(1 for test in real if test.status == "fail" and test.test_id in failing_parents),
        "skipped": counts["skip"],
        "expected failures": counts["xfail"],
        "unexpected successes": counts["uxsuccess"],
    }


def check_stream_shape(packets: list[Packet]) -> None:
    """Invariants of every stream we write.

    Each test starts with inprogress, has its attachments before its one final status,
    and every fail carries at least one non-empty attachment.
    """
    for test_id, runs in group_tests(packets).items():
        if test_id is None:
            continue
        for seen in runs:
            assert seen.packets[0].status == "inprogress", test_id
            assert [p for p in seen.packets if p.is_final] == [seen.packets[-1]], test_id
            assert all(p.status is None for p in seen.packets[1:-1]), test_id
            if seen.status == "fail":
                assert any(data for _, data in seen.files.values()), test_id
            last_chunks = {p.file_name: p for p in seen.packets if p.file_name is not None}
            assert all(p.eof for p in last_chunks.values()), test_id


def subunit_agrees(data: bytes, packets: list[Packet]) -> list[dict[str, Any]]:
    """python-subunit sees the same tests, statuses and attachments as our decoder."""
    records = subunit_records(data)
    ours = [test for runs in group_tests(packets).values() for test in runs if test.test_id]
    assert Counter((r["id"], r["status"]) for r in records) == Counter(
        (test.test_id, test.status) for test in ours
    )
    for record in records:
        expected = [t for t in ours if t.test_id == record["id"]][0].files
        got = {name: b"".join(content.iter_bytes()) for name, content in record["details"].items()}
        assert got == {name: data for name, (_, data) in expected.items() if data}
        assert None not in record["timestamps"]
    return records


# ---------------------------------------------------------------------------- outcomes


def test_every_unittest_outcome() -> None:
    outcome = run_project(OUT, [f"{OUT}.test_outcomes.Outcomes.test_{name}" for name in [
        "pass", "fail", "error", "skip", "skip_decorated", "xfail", "uxsuccess", "system_exit"
    ]])  # fmt: skip
    seen = one_each(outcome.packets)
    prefix = f"{OUT}.test_outcomes.Outcomes."
    statuses = {test_id[len(prefix) :]: s.status for test_id, s in seen.items() if test_id}
    assert statuses == {
        "test_pass": "success",
        "test_fail": "fail",
        "test_error": "fail",
        "test_skip": "skip",
        "test_skip_decorated": "skip",
        "test_xfail": "xfail",
        "test_uxsuccess": "uxsuccess",
        "test_system_exit": "fail",
    }
    files = {test_id[len(prefix) :]: s.files for test_id, s in seen.items() if test_id}
    mime, text = files["test_fail"]["traceback"]
    assert mime == TRACEBACK_MIME
    assert text.startswith(b"Traceback (most recent call last):")
    assert text.endswith(b"AssertionError: 1 != 2 : one is not two\n")
    assert files["test_error"]["traceback"][1].endswith(b"ValueError: an error on purpose\n")
    assert files["test_system_exit"]["traceback"][1].endswith(b"SystemExit: 3\n")
    assert files["test_skip"] == {"reason": (TEXT_MIME, b"skipped on purpose")}
    assert files["test_skip_decorated"] == {"reason": (TEXT_MIME, b"decorated skip")}
    assert files["test_xfail"]["traceback"][1].endswith(b"AssertionError: expected to fail\n")
    assert files["test_pass"] == files["test_uxsuccess"] == {}
    assert outcome.counts == {
        "ran": 8 if SKIPS_START_TESTS else 7,
        "failures": 1,
        "errors": 2,
        "skipped": 2,
        "expected failures": 1,
        "unexpected successes": 1,
    }
    check_stream_shape(outcome.packets)
    subunit_agrees(outcome.data, outcome.packets)


def test_traceback_text_is_unittests() -> None:
    test_id = f"{OUT}.test_outcomes.Outcomes.test_fail"
    outcome = run_project(OUT, [test_id])
    reference = unittest.TestResult()
    project(OUT).resolve([test_id])[0][0][1].run(reference)
    expected = reference.failures[0][1].encode()
    assert one_each(outcome.packets)[test_id].files["traceback"][1] == expected


@pytest.mark.parametrize(
    "name", ["layer_outcomes", "layer_output", "layer_testtools", "layer_dupes"]
)
def test_counts_agree_with_python_m_unittest(name: str) -> None:
    outcome = run_project(name)
    expected = unittest_counts(name)
    counts = dict(outcome.counts)
    assert counts == expected
    from_stream = stream_counts(outcome.packets)
    if not SKIPS_START_TESTS:  # we still report those skips, as complete tests
        del from_stream["ran"], expected["ran"]
    assert from_stream == {
        **({"ran": expected["ran"]} if "ran" in expected else {}),
        "failures+errors": expected["failures"] + expected["errors"],
        "skipped": expected["skipped"],
        "expected failures": expected["expected failures"],
        "unexpected successes": expected["unexpected successes"],
    }
    check_stream_shape(outcome.packets)
    subunit_agrees(outcome.data, outcome.packets)


def test_python_subunit_consumers_count_like_unittest() -> None:
    """subunit2pyunit's pipeline (StreamToExtendedDecorator) sees no incomplete test."""
    outcome = run_project(OUT, [f"{OUT}.test_subtests.Subtests.test_one_skips"])
    result = unittest.TestResult()
    decorated = testtools.StreamToExtendedDecorator(result)
    decorated.startTestRun()
    subunit.ByteStreamToStreamResult(io.BytesIO(outcome.data)).run(decorated)
    decorated.stopTestRun()
    assert result.failures == [] and result.errors == []
    assert result.wasSuccessful()


# ---------------------------------------------------------------------------- fixtures


def test_fixture_errors_are_reported_without_start_test() -> None:
    fixtures = f"{OUT}.test_fixtures"
    ids = [test_id for test_id in project(OUT).ids if test_id.startswith(fixtures)]
    ids += [test_id for test_id in project(OUT).ids if ".test_module_fixture." in test_id]
    outcome = run_project(OUT, ids)
    seen = one_each(outcome.packets)
    broken = seen[f"setUpClass ({fixtures}.BrokenSetUpClass)"]
    assert broken.status == "fail" and not broken.runnable
    assert broken.files["traceback"][1].endswith(b"RuntimeError: setUpClass is broken\n")
    skipping = seen[f"setUpClass ({fixtures}.SkippingSetUpClass)"]
    assert skipping.status == "skip"
    assert skipping.files == {"reason": (TEXT_MIME, b"no backend here")}
    assert seen[f"tearDownClass ({fixtures}.BrokenTearDownClass)"].status == "fail"
    assert seen[f"setUpModule ({OUT}.test_module_fixture)"].status == "fail"
    assert f"{fixtures}.BrokenSetUpClass.test_never_runs_a" not in seen  # as in unittest
    assert seen[f"{fixtures}.WithClassFixture.test_one"].status == "success"
    assert seen[f"{fixtures}.BrokenTearDownClass.test_runs"].status == "success"
    check_stream_shape(outcome.packets)
    subunit_agrees(outcome.data, outcome.packets)


# ---------------------------------------------------------------------------- subtests


SUB = f"{OUT}.test_subtests.Subtests"


def test_subtests_are_tests_with_a_parent() -> None:
    outcome = run_project(OUT, [f"{SUB}.test_some_fail", f"{SUB}.test_all_pass"])
    seen = one_each(outcome.packets)
    parent = f"{SUB}.test_some_fail"
    children = {tid: s for tid, s in seen.items() if tid and tid.startswith(parent + " ")}
    assert {tid: s.status for tid, s in children.items()} == {
        f"{parent} (i=0)": "success",
        f"{parent} (i=1)": "fail",
        f"{parent} (i=2)": "success",
        f"{parent} (i=3)": "fail",
    }
    for child in children.values():
        assert child.parent == parent
        assert all(not p.runnable for p in child.packets if p.status)
        assert all(p.parent_test_id == parent for p in child.packets)
    assert (
        children[f"{parent} (i=1)"]
        .files["traceback"][1]
        .endswith(b"AssertionError: 1 == 1 : odd 1\n")
    )
    assert seen[parent].status == "fail" and seen[parent].parent is None
    summary = seen[parent].files["traceback"][1].decode()
    assert f"{parent} (i=1)" in summary and f"{parent} (i=3)" in summary
    assert seen[f"{SUB}.test_all_pass"].status == "success"
    # the parent's final status comes after all its subtests
    order = [p.test_id for p in outcome.packets if p.is_final]
    assert order.index(parent) > max(order.index(child) for child in children)
    check_stream_shape(outcome.packets)
    subunit_agrees(outcome.data, outcome.packets)


def test_skip_error_and_message_subtests() -> None:
    ids = [f"{SUB}.test_one_skips", f"{SUB}.test_one_errors", f"{SUB}.test_message"]
    outcome = run_project(OUT, ids)
    seen = one_each(outcome.packets)
    skipped = seen[f"{SUB}.test_one_skips (i=1)"]
    assert skipped.status == "skip" and skipped.parent == f"{SUB}.test_one_skips"
    assert skipped.files == {"reason": (TEXT_MIME, b"skip one")}
    assert seen[f"{SUB}.test_one_skips (i=2)"].status == "success"
    assert seen[f"{SUB}.test_one_skips"].status == "success"  # unittest reported nothing
    assert seen[f"{SUB}.test_one_errors (i=1)"].status == "fail"
    assert (
        seen[f"{SUB}.test_one_errors (i=1)"].files["traceback"][1].endswith(b"KeyError: 'boom'\n")
    )
    assert seen[f"{SUB}.test_one_errors"].status == "fail"
    assert seen[f"{SUB}.test_message [labelled] (kind='x')"].status == "fail"
    assert outcome.counts["errors"] == 1 and outcome.counts["failures"] == 1
    check_stream_shape(outcome.packets)
    subunit_agrees(outcome.data, outcome.packets)


def test_subunit_2_0_drops_only_the_parent_field() -> None:
    ids = [test_id for test_id in project(OUT).ids if ".test_subtests." in test_id]
    v21 = run_project(OUT, ids, clock=counter_clock())
    v20 = run_project(OUT, ids, clock=counter_clock(), subunit_version="2.0")
    assert any(p.parent_test_id for p in v21.packets)
    assert any(data[2] & 0x08 for data in v21.writes)
    assert not any(p.parent_test_id for p in v20.packets)
    # Tracebacks name the same files and lines: the packets differ only in the parent.
    assert [_without_parent(p) for p in v21.packets] == [_without_parent(p) for p in v20.packets]
    assert not any(data[2] & 0x08 for data in v20.writes)  # no flag 0x0008 (first packet)
    subunit_agrees(v20.data, v20.packets)


def _without_parent(packet: Packet) -> Packet:
    return dataclasses.replace(packet, parent_test_id=None)


def test_subtest_timestamps_fall_within_the_parent() -> None:
    outcome = run_project(OUT, [f"{SUB}.test_some_fail"], clock=counter_clock())
    seen = one_each(outcome.packets)
    parent = seen[f"{SUB}.test_some_fail"]
    start, end = parent.packets[0].timestamp_ns, parent.packets[-1].timestamp_ns
    previous_end = start
    for test_id in sorted(tid for tid in seen if tid and "(i=" in tid):
        first, last = seen[test_id].packets[0].timestamp_ns, seen[test_id].packets[-1].timestamp_ns
        assert start <= first <= last <= end
        assert first == previous_end  # a subtest starts where the previous one ended
        previous_end = last


# ---------------------------------------------------------------------------- testtools


def test_testtools_details_become_attachments() -> None:
    outcome = run_project("layer_testtools")
    seen = one_each(outcome.packets)
    prefix = "layer_testtools.test_testtools.WithDetails."
    passed = seen[prefix + "test_pass_with_detail"]
    assert passed.status == "success"
    assert passed.files["log"] == ('text/plain; charset="utf8"', b"a log line")
    failed = seen[prefix + "test_fail_with_detail"]
    assert failed.status == "fail"
    assert failed.files["log"][1] == b"context for the failure"
    mime, text = failed.files["traceback"]
    assert mime.startswith("text/x-traceback") and b"MismatchError" in text
    assert seen[prefix + "test_error"].status == "fail"
    assert b"ValueError: testtools error" in seen[prefix + "test_error"].files["traceback"][1]
    skipped = seen[prefix + "test_skip"]
    assert skipped.status == "skip" and skipped.files["reason"][1] == b"testtools skip"
    assert seen[prefix + "test_xfail"].status == "xfail"
    check_stream_shape(outcome.packets)
    subunit_agrees(outcome.data, outcome.packets)


# ---------------------------------------------------------------------------- output


def test_captured_output_is_attached_to_its_test() -> None:
    outcome = run_captured("layer_output")
    seen = one_each(outcome.packets)
    prefix = "layer_output.test_output.Output."
    files = {test_id[len(prefix) :]: s.files for test_id, s in seen.items() if test_id}
    assert files["test_print"] == {"stdout": (TEXT_MIME, b"printed to stdout\n")}
    assert files["test_stderr"] == {"stderr": (TEXT_MIME, b"written to stderr\n")}
    assert files["test_os_write"] == {
        "stdout": (TEXT_MIME, b"raw fd 1\n"),
        "stderr": (TEXT_MIME, b"raw fd 2\n"),
    }
    assert files["test_subprocess"] == {"stdout": (TEXT_MIME, b"from a child process\n")}
    if seen[prefix + "test_libc"].status != "skip":
        assert files["test_libc"] == {"stdout": (TEXT_MIME, b"from C printf\n")}
    assert files["test_silent"] == {}
    assert files["test_non_utf8"]["stdout"][1] == b"\xff\xfe not utf-8\ncaf\xc3\xa9\n"
    failed = seen[prefix + "test_fail_with_output"]
    assert list(failed.files) == ["stdout", "traceback"]  # output first, then the outcome
    # output between tests (class fixtures) is global: no test id
    global_out = [p for p in outcome.packets if p.test_id is None]
    assert [(p.file_name, p.file_bytes) for p in global_out] == [
        ("stdout", b"class fixture output\n"),
        ("stdout", b"class teardown output\n"),
    ]
    assert outcome.packets[0].test_id is None and outcome.packets[-1].test_id is None
    check_stream_shape(outcome.packets)
    subunit_agrees(outcome.data, outcome.packets)


def test_output_larger_than_a_packet_is_split() -> None:
    blob = bytes(range(256)) * (5 * 4096)  # 5 MiB: more than one 4 MiB packet

    def noisy() -> None:
        os.write(1, blob)

    outcome = run_tests_captured([("noisy", unittest.FunctionTestCase(noisy))])
    chunks = [p for p in outcome.packets if p.file_name == "stdout"]
    assert len(chunks) == 2 and [p.eof for p in chunks] == [False, True]
    assert one_each(outcome.packets)["noisy"].files["stdout"] == (TEXT_MIME, blob)
    check_stream_shape(outcome.packets)
    (record,) = subunit_agrees(outcome.data, outcome.packets)
    assert b"".join(record["details"]["stdout"].iter_bytes()) == blob


def test_writes_once_at_start_and_once_at_stop() -> None:
    ids = [f"{OUT}.test_outcomes.Outcomes.test_pass", f"{OUT}.test_outcomes.Outcomes.test_fail"]
    outcome = run_project(OUT, ids)
    assert len(outcome.writes) == 4
    assert [decode_packets(w)[-1].status for w in outcome.writes] == [
        "inprogress",
        "success",
        "inprogress",
        "fail",
    ]


def test_route_code_is_on_every_packet() -> None:
    outcome = run_project(OUT, [f"{SUB}.test_some_fail"], route_code="0/3")
    assert {p.route_code for p in outcome.packets} == {"0/3"}
    records = subunit_records(outcome.data)
    assert len(records) == 5


def test_timestamps_come_from_the_clock() -> None:
    outcome = run_project(
        OUT, [f"{OUT}.test_outcomes.Outcomes.test_pass"], clock=counter_clock(5, 2)
    )
    assert [p.timestamp_ns for p in outcome.packets] == [5, 7]


def test_ids_the_wire_cannot_carry_are_escaped() -> None:
    def body() -> None:
        raise AssertionError("fails")

    test = unittest.FunctionTestCase(body, description="odd")
    test.id = lambda: "pkg.odd\0id \udcff"  # type: ignore[method-assign]
    outcome = run([("pkg.odd", test)])
    assert {p.test_id for p in outcome.packets} == {"pkg.odd\\x00id \\udcff"}
    assert outcome.packets[-1].status == "fail"


def test_unittest_buffer_option_is_ignored() -> None:
    test_id = f"{OUT}.test_outcomes.Outcomes.test_fail"
    writes: list[bytes] = []
    result = PacketResult(writes.append)
    result.buffer = True  # what "-b" would do; must not break the traceback formatting
    run_tests(project(OUT).resolve([test_id])[0], result)
    assert result.buffer is False
    assert decode_packets(b"".join(writes))[-1].status == "fail"


def test_unknown_subunit_version_is_rejected() -> None:
    with pytest.raises(ValueError, match="subunit_version"):
        PacketResult(lambda data: None, subunit_version="3")


# ---------------------------------------------------------------------------- duplicates


def test_duplicate_ids_are_reported_per_test_object() -> None:
    outcome = run_project("layer_dupes")
    runs = group_tests(outcome.packets)
    assert [s.status for s in runs["layer_dupes.test_dupes.Twice.test_twice"]] == [
        "success",
        "success",
    ]
    subunit_agrees(outcome.data, outcome.packets)


# ---------------------------------------------------------------------------- process layer


def test_report_missing() -> None:
    writes: list[bytes] = []
    PacketResult(writes.append, clock=counter_clock(10, 1)).report_missing(
        "pkg.nope", "no such test"
    )
    assert len(writes) == 1
    packets = decode_packets(writes[0])
    assert [(p.test_id, p.status, p.file_name) for p in packets] == [
        ("pkg.nope", "inprogress", None),
        ("pkg.nope", None, "reason"),
        ("pkg.nope", "fail", None),
    ]
    assert (packets[1].mime_type, packets[1].file_bytes) == (TEXT_MIME, b"no such test")
    subunit_agrees(writes[0], packets)


def test_report_failure_of_a_test_not_started_here() -> None:
    writes: list[bytes] = []
    result = PacketResult(writes.append)
    result.report_failure("pkg.crashed", "worker died (signal 11)", stdout=b"out", stderr=b"")
    packets = decode_packets(b"".join(writes))
    assert [(p.status, p.file_name) for p in packets] == [
        ("inprogress", None),
        (None, "stdout"),
        (None, "traceback"),
        ("fail", None),
    ]
    assert packets[2].file_bytes == b"worker died (signal 11)"
    assert packets[2].mime_type == TRACEBACK_MIME


def test_report_failure_of_the_open_test_closes_it() -> None:
    writes: list[bytes] = []
    result = PacketResult(writes.append)
    test = project(OUT).resolve([f"{OUT}.test_outcomes.Outcomes.test_pass"])[0][0][1]
    result.startTest(test)
    assert result.current_test_id == test.id() and result.current_test is test
    result.report_failure(test.id(), "cancelled: stop", stderr=b"err")
    assert result.current_test_id is None
    result.stopTest(test)  # nothing more: already reported
    packets = decode_packets(b"".join(writes))
    assert [(p.status, p.file_name) for p in packets] == [
        ("inprogress", None),
        (None, "stderr"),
        (None, "traceback"),
        ("fail", None),
    ]


# ---------------------------------------------------------------------------- property


OUTCOMES = ["pass", "fail", "error", "skip", "xfail", "uxsuccess"]
SUB_OUTCOMES = ["pass", "fail", "error", "skip"]
EXPECTED_STATUS = {
    "pass": "success",
    "fail": "fail",
    "error": "fail",
    "skip": "skip",
    "xfail": "xfail",
    "uxsuccess": "uxsuccess",
}


def _act(case: unittest.TestCase, outcome: str) -> None:
    if outcome in ("fail", "xfail"):
        case.fail(outcome)
    elif outcome == "error":
        raise RuntimeError(outcome)
    elif outcome == "skip":
        case.skipTest(outcome)


def _generated_case(specs: list[tuple[str, list[str]]]) -> type[unittest.TestCase]:
    def make(outcome: str, subs: list[str]) -> Callable[[unittest.TestCase], None]:
        def method(self: unittest.TestCase) -> None:
            for number, sub in enumerate(subs):
                with self.subTest(n=number):
                    _act(self, sub)
            _act(self, outcome)

        if outcome in ("xfail", "uxsuccess"):
            return unittest.expectedFailure(method)
        return method

    attrs = {f"test_{n:02d}": make(*spec) for n, spec in enumerate(specs)}
    return type("Generated", (unittest.TestCase,), attrs)


spec_strategy = st.one_of(
    st.tuples(st.sampled_from(["xfail", "uxsuccess"]), st.just([])),
    st.tuples(
        st.sampled_from(["pass", "fail", "error", "skip"]),
        st.lists(st.sampled_from(SUB_OUTCOMES), max_size=4),
    ),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(spec_strategy, min_size=1, max_size=6))
def test_any_mix_of_outcomes(specs: list[tuple[str, list[str]]]) -> None:
    """Invariant: for any mix of outcomes and subtests, each test gets exactly one final
    status (fail when a subtest failed, else its own outcome), each subtest one with its
    parent id, the stream has the invariant shape, python-subunit reads the same, and the
    result's counts equal a plain unittest.TestResult's."""
    case = _generated_case(specs)
    tests = [(test.id(), test) for test in unittest.TestLoader().loadTestsFromTestCase(case)]
    outcome = run(tests, clock=counter_clock())
    seen = one_each(outcome.packets)
    for (test_id, _), (own, subs) in zip(tests, specs, strict=True):
        sub_failed = any(sub in ("fail", "error") for sub in subs)
        assert seen[test_id].status == ("fail" if sub_failed else EXPECTED_STATUS[own])
        for number, sub in enumerate(subs):
            child = seen[f"{test_id} (n={number})"]
            assert child.parent == test_id
            assert child.status == EXPECTED_STATUS[sub]
    check_stream_shape(outcome.packets)
    subunit_agrees(outcome.data, outcome.packets)
    reference = unittest.TestResult()
    unittest.TestSuite([test for _, test in tests]).run(reference)
    assert outcome.counts == _counts(reference)  # type: ignore[arg-type]
