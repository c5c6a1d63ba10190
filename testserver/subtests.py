"""Subtests for testtools TestCases, which inherit ``subTest`` but cannot report it.

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
from collections.abc import Iterator
from typing import Any

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
