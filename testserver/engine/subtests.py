"""How subtests are reported: one result factory for every place that runs tests.

:func:`packet_result` makes the :class:`~testserver.engine.results.PacketResult` a batch reports
to, in one of :data:`SUBTEST_MODES`:

- ``report`` (default): each subtest is a test of its own, ``"<parent id> (i=3)"`` with
  the parent's id in ``parent_test_id`` (subunit 2.1), as unittest's runner counts them.
- ``fold``: subunit.run's accounting (testtools' ``ExtendedToStreamDecorator``). Subtests
  are not tests: a failing one adds its traceback to the parent as an attachment named
  ``"traceback <description>"`` (``traceback (i=3)``) and fails the parent; passing and
  skipped ones leave no trace. Totals are those of ``python -m subunit.run``.

It also makes testtools TestCases, which inherit ``subTest`` but cannot report it, report
their subtests (:func:`patch_testtools`).

``testtools.TestCase`` (2.9) has no ``_outcome``, so ``unittest.TestCase.subTest`` just
yields: the first failing subtest aborts the test and passing ones leave no trace. Inside a
worker, :func:`patch_testtools` replaces ``subTest`` on testtools' TestCase with one that
reports each subtest to our result as unittest would (``addSubTest``, or ``addSkip`` with the
subtest), so testtools suites get per-subtest outcomes with parent ids too.
"""

from __future__ import annotations

import contextlib
import sys
import unittest
from collections.abc import Callable, Iterator
from typing import Any

from testserver.engine.results import Attachment, PacketResult

SUBTEST_MODES = ("report", "fold")
"""Values of ``--subtests``: each subtest a test of its own, or folded into its parent."""

_NO_MESSAGE: Any = getattr(unittest.case, "_subtest_msg_sentinel", object())


def patch_testtools(result: unittest.TestResult) -> None:
    """Make ``testtools.TestCase.subTest`` report to ``result`` (if testtools is loaded)."""
    testtools = sys.modules.get("testtools")
    case_class = getattr(testtools, "TestCase", None)
    if case_class is None:
        return

    @contextlib.contextmanager
    def subTest(self: Any, msg: Any = _NO_MESSAGE, **params: Any) -> Iterator[None]:  # noqa: N802
        subtest = unittest.case._SubTest(self, msg, params)
        try:
            yield
        except KeyboardInterrupt:
            raise
        except unittest.SkipTest as error:
            result.addSkip(subtest, str(error))
        except BaseException:
            result.addSubTest(self, subtest, sys.exc_info())
        else:
            result.addSubTest(self, subtest, None)

    case_class.subTest = subTest


class FoldedResult(PacketResult):
    """A :class:`PacketResult` that folds subtests into their parent's outcome."""

    def _subtest(
        self, parent: Any, subtest: Any, status: str, attachments: list[Attachment] | None
    ) -> None:
        if status != "fail":
            return  # a passing or skipped subtest is not a test here
        description = subtest._subDescription()
        named = [(f"{name} {description}", mime, data) for name, mime, data in attachments or ()]
        self._record(parent, "fail", named)


def packet_result(
    write: Callable[[bytes], object], *, subtests: str = "report", **options: Any
) -> PacketResult:
    """The result a batch reports to, with ``subtests`` accounting (see :data:`SUBTEST_MODES`).

    ``options`` go to :class:`PacketResult`. testtools TestCases report their subtests too.
    """
    if subtests not in SUBTEST_MODES:
        raise ValueError(f"unknown subtests mode {subtests!r}; expected one of {SUBTEST_MODES}")
    result = (FoldedResult if subtests == "fold" else PacketResult)(write, **options)
    patch_testtools(result)
    return result
