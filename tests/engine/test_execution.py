"""Tests for testserver.engine.running.run_tests: unittest semantics, stops, interrupts, exits."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import unittest
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from inprocess import in_child, project

from testserver.engine.capture import OutputCapture
from testserver.engine.results import PacketResult
from testserver.engine.running import run_tests
from testserver.wire.events import Packet
from testserver.wire.packets import decode_packets

INTERRUPTS = "layer_interrupt.test_interrupt"


@pytest.fixture
def state() -> Any:
    """The layer_interrupt project's shared state, reset for each test."""
    project("layer_interrupt")
    module = sys.modules["layer_interrupt.state"]
    module.reset()
    return module


def batch(name: str, ids: Iterable[str]) -> list[tuple[str, unittest.TestCase]]:
    found, unknown = project(name).resolve(ids)
    assert unknown == []
    return found


def final_statuses(packets: list[Packet]) -> list[tuple[str | None, str | None]]:
    return [(p.test_id, p.status) for p in packets if p.is_final]


def files_of(packets: list[Packet], test_id: str) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for packet in packets:
        if packet.test_id == test_id and packet.file_name:
            files[packet.file_name] = files.get(packet.file_name, b"") + packet.file_bytes
    return files


def execute(
    tests: list[tuple[str, unittest.TestCase]],
    should_stop: Callable[[], bool] | None = None,
    **options: Any,
) -> tuple[list[str], list[Packet], PacketResult]:
    writes: list[bytes] = []
    result = PacketResult(writes.append, **options)
    kwargs = {} if should_stop is None else {"should_stop": should_stop}
    not_run = run_tests(tests, result, **kwargs)
    return not_run, decode_packets(b"".join(writes)), result


# ---------------------------------------------------------------------------- fixtures


def test_class_and_module_fixtures_wrap_the_batch() -> None:
    fixtures = "layer_outcomes.test_fixtures"
    tests = batch("layer_outcomes", [f"{fixtures}.WithClassFixture.test_one"] * 2)
    events = sys.modules[fixtures].EVENTS
    del events[:]
    not_run, packets, _ = execute(tests)
    assert not_run == []
    assert events == ["setUpModule", "setUpClass", "tearDownClass", "tearDownModule"]
    assert [status for _, status in final_statuses(packets)] == ["success", "success"]


def test_batches_can_be_run_again_and_set_up_fixtures_again() -> None:
    fixtures = "layer_outcomes.test_fixtures"
    tests = batch("layer_outcomes", [f"{fixtures}.WithClassFixture.test_two"])
    events = sys.modules[fixtures].EVENTS
    del events[:]
    result = PacketResult(lambda data: None)
    for _ in range(2):  # same result object, same test objects
        assert run_tests(tests, result) == []
    assert events == ["setUpModule", "setUpClass", "tearDownClass", "tearDownModule"] * 2
    assert result.testsRun == 2 and result.wasSuccessful()


def test_tests_run_in_the_given_order_with_unittest_class_switching() -> None:
    fixtures = "layer_outcomes.test_fixtures"
    ids = [
        f"{fixtures}.WithClassFixture.test_two",
        f"{fixtures}.BrokenTearDownClass.test_runs",
        f"{fixtures}.WithClassFixture.test_one",
    ]
    events = sys.modules[fixtures].EVENTS
    del events[:]
    _, packets, _ = execute(batch("layer_outcomes", ids))
    started = [p.test_id for p in packets if p.status == "inprogress"]
    assert started == [
        ids[0],
        ids[1],
        f"tearDownClass ({fixtures}.BrokenTearDownClass)",
        ids[2],
    ]
    assert events.count("setUpClass") == 2  # a flat suite: the class is set up again


def test_duplicate_test_objects_all_run() -> None:
    tests = batch("layer_dupes", ["layer_dupes.test_dupes.Twice.test_twice"])
    dupes = sys.modules["layer_dupes.test_dupes"]
    del dupes.RUNS[:]
    assert len(tests) == 2
    not_run, packets, _ = execute(tests)
    assert not_run == [] and len(dupes.RUNS) == 2 and dupes.RUNS[0] is not dupes.RUNS[1]
    assert [s for _, s in final_statuses(packets)] == ["success", "success"]


# ---------------------------------------------------------------------------- stops


def test_should_stop_ends_the_batch_after_the_current_test(state: Any) -> None:
    ids = [f"{INTERRUPTS}.Interrupts.test_1_before", f"{INTERRUPTS}.Interrupts.test_5_request_stop"]
    ids += [f"{INTERRUPTS}.Interrupts.test_4_after", f"{INTERRUPTS}.Other.test_other"]
    not_run, packets, _ = execute(batch("layer_interrupt", ids), lambda: state.STOP)
    assert not_run == ids[2:]
    assert final_statuses(packets) == [(ids[0], "success"), (ids[1], "success")]
    assert state.EVENTS == ["setUpClass", "before", "request_stop", "tearDownClass"]


def test_failfast_stops_through_should_stop_of_the_result() -> None:
    prefix = "layer_outcomes.test_outcomes.Outcomes."
    ids = [prefix + "test_pass", prefix + "test_fail", prefix + "test_pass", prefix + "test_xfail"]
    writes: list[bytes] = []
    result = PacketResult(writes.append)
    result.failfast = True
    not_run = run_tests(batch("layer_outcomes", ids), result)
    assert not_run == ids[2:]
    packets = decode_packets(b"".join(writes))
    assert [s for _, s in final_statuses(packets)] == ["success", "fail"]


def test_a_stop_already_requested_runs_nothing() -> None:
    ids = ["layer_outcomes.test_outcomes.Outcomes.test_pass"]
    result = PacketResult(lambda data: None)
    result.stop()
    assert run_tests(batch("layer_outcomes", ids), result) == ids
    assert result.testsRun == 0


# ---------------------------------------------------------------------------- interrupts


def test_keyboard_interrupt_from_a_test_fails_it_and_the_batch_goes_on(state: Any) -> None:
    names = ["test_1_before", "test_2_interrupt", "test_3_exit", "test_4_after"]
    ids = [f"{INTERRUPTS}.Interrupts.{name}" for name in names]
    not_run, packets, result = execute(batch("layer_interrupt", ids))
    assert not_run == []
    assert final_statuses(packets) == [
        (ids[0], "success"),
        (ids[1], "fail"),
        (ids[2], "fail"),
        (ids[3], "success"),
    ]
    message = files_of(packets, ids[1])["traceback"]
    assert message.startswith(b"KeyboardInterrupt raised by the test\n")
    assert b"raise KeyboardInterrupt" in message
    assert files_of(packets, ids[2])["traceback"].endswith(b"SystemExit: leaving\n")
    # the class fixture stayed up across the interrupt: set up and torn down once
    assert state.EVENTS == [
        "setUpClass",
        "before",
        "interrupt",
        "exit",
        "after",
        "tearDownClass",
    ]
    assert result.current_test_id is None


def test_cancel_reports_the_interrupted_test_and_returns_the_rest(state: Any) -> None:
    names = ["test_1_before", "test_2_interrupt", "test_3_exit", "test_4_after"]
    ids = [f"{INTERRUPTS}.Interrupts.{name}" for name in names] + [f"{INTERRUPTS}.Other.test_other"]
    tests = batch("layer_interrupt", ids)

    def child() -> list[object]:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            capture = OutputCapture(out.fileno(), err.fileno())
            capture.install()
            try:
                # a cancel: the flag is up by the time the KeyboardInterrupt arrives
                outcome = execute(tests, lambda: "interrupt" in state.EVENTS, capture=capture)
            finally:
                capture.uninstall()
        return [outcome[0], outcome[1], list(state.EVENTS)]

    not_run, packets, events = in_child(child)
    assert not_run == ids[2:]
    assert final_statuses(packets) == [(ids[0], "success"), (ids[1], "fail")]
    files = files_of(packets, ids[1])
    assert files["traceback"].startswith(b"cancelled: ")
    assert files["stdout"] == b"output before the interrupt\n"
    assert [p.status for p in packets if p.test_id == ids[1]] == ["inprogress", None, None, "fail"]
    assert events == ["setUpClass", "before", "interrupt", "tearDownClass"]  # torn down
    assert not [p for p in packets if p.test_id in not_run]


def test_cancel_by_a_real_sigint_handler() -> None:
    """The process layer's way: SIGINT sets a flag and raises KeyboardInterrupt."""
    cancelled = []

    def on_sigint(number: int, frame: object) -> None:
        cancelled.append(number)
        raise KeyboardInterrupt

    def interrupt_self() -> None:
        os.kill(os.getpid(), signal.SIGINT)

    def never() -> None:
        raise AssertionError("runs after the cancel")

    interrupted = unittest.FunctionTestCase(interrupt_self)
    tests = [("pkg.interrupted", interrupted), ("pkg.never", unittest.FunctionTestCase(never))]

    def child() -> list[object]:
        signal.signal(signal.SIGINT, on_sigint)
        not_run, packets, _ = execute(tests, lambda: bool(cancelled))
        return [not_run, packets]

    not_run, packets = in_child(child)
    assert not_run == ["pkg.never"]
    assert final_statuses(packets) == [("interrupt_self", "fail")]
    assert files_of(packets, "interrupt_self")["traceback"].startswith(b"cancelled: ")


def test_interrupt_after_subtests_keeps_them(state: Any) -> None:
    test_id = f"{INTERRUPTS}.Interrupts.test_6_subtests_then_interrupt"
    not_run, packets, _ = execute(batch("layer_interrupt", [test_id]))
    assert not_run == []
    if sys.version_info < (3, 11):  # 3.10 reports subtests at the end of the test: lost
        assert final_statuses(packets) == [(test_id, "fail")]
        return
    assert final_statuses(packets) == [(f"{test_id} (i=0)", "success"), (test_id, "fail")]
    assert [p.parent_test_id for p in packets if p.test_id == f"{test_id} (i=0)"] == [test_id] * 2


def test_system_exit_in_set_up_class_fails_each_test_and_the_batch_goes_on(state: Any) -> None:
    ids = [f"{INTERRUPTS}.ExitInSetUpClass.test_a", f"{INTERRUPTS}.ExitInSetUpClass.test_b"]
    ids.append(f"{INTERRUPTS}.Other.test_other")
    not_run, packets, _ = execute(batch("layer_interrupt", ids))
    assert not_run == []
    assert final_statuses(packets) == [(ids[0], "fail"), (ids[1], "fail"), (ids[2], "success")]
    message = files_of(packets, ids[0])["traceback"]
    assert message.startswith(b"SystemExit raised by a fixture before the test started\n")
    assert message.endswith(b"SystemExit: setUpClass exits\n")
    assert state.EVENTS == ["other"]


def test_keyboard_interrupt_in_set_up_class(state: Any) -> None:
    ids = [f"{INTERRUPTS}.InterruptInSetUpClass.test_a", f"{INTERRUPTS}.Other.test_other"]
    not_run, packets, _ = execute(batch("layer_interrupt", ids))
    assert not_run == []
    assert final_statuses(packets) == [(ids[0], "fail"), (ids[1], "success")]
    # the same with a cancel: the test had not started, nothing is reported
    not_run, packets, _ = execute(batch("layer_interrupt", ids), lambda: True)
    assert not_run == ids and packets == []
