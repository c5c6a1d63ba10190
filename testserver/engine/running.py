"""Run a batch of loaded tests with unittest semantics: :func:`run_tests`.

The batch runs as a fresh, flat :class:`unittest.TestSuite`, so class and module fixtures
(``setUpClass``, ``setUpModule`` and their teardowns) behave exactly as under
``python -m unittest``: set up before the first test of a class or module in the batch,
torn down when the batch moves on and at its end.

Three things end a suite early, and each is handled here rather than in the caller:

- a stop: ``should_stop()`` becomes true (polled by the result after every reported
  test) or ``result.shouldStop`` is set (failfast). The tests not started are returned.
- ``KeyboardInterrupt`` escaping the suite. If ``should_stop()`` is true it is a cancel:
  the interrupted test is failed with ``"cancelled: ..."`` and the rest is returned.
  Otherwise the test itself raised it (a SIGINT it sent itself, say): the test fails and
  the batch goes on. In the server's own process (``on_interrupt`` given) a typed Ctrl-C
  and a test's own SIGINT cannot be told apart: one that escapes its test is a cancel.
- any other exception escaping the suite (``SystemExit`` from a ``setUpClass``, which
  unittest only guards against ``Exception``): the test at that point fails, the batch
  goes on.
"""

from __future__ import annotations

import contextlib
import traceback
import unittest
from collections.abc import Callable, Sequence

from testserver.engine.results import PacketResult

__all__ = ["run_tests"]

Batch = Sequence[tuple[str, unittest.TestCase]]


def _never() -> bool:
    return False


def run_tests(
    tests: Batch,
    result: PacketResult,
    *,
    should_stop: Callable[[], bool] = _never,
    on_interrupt: Callable[[], None] | None = None,
) -> list[str]:
    """Run ``tests`` (``(id, test)`` pairs) in order; return the ids that were not run.

    Not run means not started because the run stopped: ``should_stop()`` became true or
    ``result.shouldStop`` was set. Tests not run are not reported. ``on_interrupt``, when
    given, makes a ``KeyboardInterrupt`` that escapes a test a cancel: it is called, and
    ``should_stop()`` must be true from then on. After a stop the
    returned ids may include tests that unittest skipped silently just before it because
    their ``setUpClass`` / ``setUpModule`` had failed (that failure is reported on its own).
    Output captured after the last test (fixture teardowns) is written as global packets.
    """
    previous_check = result.stop_check
    result.stop_check = should_stop
    _reset_fixture_state(result)
    pending = list(tests)
    try:
        while pending:
            suite = unittest.TestSuite([test for _, test in pending])
            try:
                suite.run(result)
            except BaseException as escaped:  # reported as the test's failure, see _recover
                if isinstance(escaped, KeyboardInterrupt) and on_interrupt is not None:
                    on_interrupt()
                rest, not_run = _recover(pending, suite, result, escaped, should_stop)
                if not_run is not None:
                    return not_run
                pending = rest
                continue
            if result.shouldStop:
                return [test_id for test_id, _ in pending[_position(suite) :]]
            return []
        return []
    finally:
        result.stop_check = previous_check
        result.report_output()


def _recover(
    pending: list[tuple[str, unittest.TestCase]],
    suite: unittest.TestSuite,
    result: PacketResult,
    escaped: BaseException,
    should_stop: Callable[[], bool],
) -> tuple[list[tuple[str, unittest.TestCase]], list[str] | None]:
    """Report the test an exception escaped from; return ``(tests to go on with, not run)``.

    ``not run`` is None when the batch goes on with the returned tests.
    """
    result._testRunEntered = False  # type: ignore[attr-defined]  # suite.run left early
    index, started = _interrupted(pending, suite, result)
    cancelled = isinstance(escaped, KeyboardInterrupt) and should_stop()
    text = "".join(traceback.format_exception(escaped))
    if index >= len(pending):  # raised by the last tearDownClass / tearDownModule
        if not cancelled:
            holder = unittest.suite._ErrorHolder("fixture teardown")  # type: ignore[attr-defined]
            result.addError(holder, (type(escaped), escaped, escaped.__traceback__))
        return [], []
    if cancelled and not started:  # any fixture output is written by run_tests at the end
        _finish_fixtures(result)
        return [], [pending_id for pending_id, _ in pending[index:]]
    test_id = pending[index][0]
    if started:  # report under the id its inprogress went out with
        test_id = result.current_test_id or test_id
    if cancelled:
        message = f"cancelled: the run was stopped while this test was running\n{text}"
    elif started:
        message = f"{type(escaped).__name__} raised by the test\n{text}"
    else:
        message = f"{type(escaped).__name__} raised by a fixture before the test started\n{text}"
    out, err = result.take_output()
    result.report_failure(test_id, message, stdout=out, stderr=err)
    rest = pending[index + 1 :]
    if cancelled or result.shouldStop or should_stop():
        _finish_fixtures(result)
        return [], [pending_id for pending_id, _ in rest]
    return rest, None


def _interrupted(
    pending: list[tuple[str, unittest.TestCase]], suite: unittest.TestSuite, result: PacketResult
) -> tuple[int, bool]:
    """``(index, started)`` of the test an exception escaped from.

    With a test open in ``result`` it is that test (its stopTest held its report back).
    Otherwise a fixture raised before the next test started; tests unittest skipped
    for a failed ``setUpClass`` are not it.
    """
    position = _position(suite)
    current = result.current_test
    if current is not None:
        for index in range(position, len(pending)):
            if pending[index][1] is current:
                return index, True
    while position < len(pending) and getattr(
        type(pending[position][1]), "_classSetupFailed", False
    ):
        position += 1
    return position, False


def _position(suite: unittest.TestSuite) -> int:
    """Index of the first test the suite did not finish.

    ``TestSuite.run`` replaces each test it finished with None (``_cleanup``); a test
    skipped for a failed class fixture stays, as does one interrupted by an exception.
    """
    finished = -1
    for index, test in enumerate(suite):
        if test is None:
            finished = index
    return finished + 1


def _finish_fixtures(result: PacketResult) -> None:
    """Tear down the class and module fixtures left up by an interrupted suite.

    An empty top-level suite does exactly that: its end runs ``tearDownClass`` for
    ``result._previousTestClass`` and ``tearDownModule`` for its module.
    """
    result._testRunEntered = False  # type: ignore[attr-defined]
    with contextlib.suppress(BaseException):  # a second interrupt while cleaning up: stop
        unittest.TestSuite().run(result)
    _reset_fixture_state(result)


def _reset_fixture_state(result: PacketResult) -> None:
    """Forget unittest's fixture bookkeeping on ``result`` (private attributes that
    ``TestSuite.run`` reads with defaults): a new batch sets its fixtures up afresh."""
    result._previousTestClass = None  # type: ignore[attr-defined]
    result._moduleSetUpFailed = False  # type: ignore[attr-defined]
    result._testRunEntered = False  # type: ignore[attr-defined]
