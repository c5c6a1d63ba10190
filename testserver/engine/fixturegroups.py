"""Which loaded tests share a class or module fixture, so they must run in one process.

unittest's suite runs ``setUpModule`` when the module changes between two tests and
``setUpClass`` when the class does (``TestSuite._handleModuleFixture``,
``_handleClassSetUp``). Tests that share one must therefore go to one worker, in one unit,
one after the other, or the fixture runs again (or its error is reported twice). This is
the fact the scheduler (:mod:`testserver.scheduling`) needs from the engine.
"""

from __future__ import annotations

import sys
import unittest

from testserver.engine.loading import TestIndex

_CLASS_FIXTURES = ("setUpClass", "tearDownClass")
_MODULE_FIXTURES = ("setUpModule", "tearDownModule")


def fixture_groups(index: TestIndex) -> dict[str, str]:
    """Id -> group key, for the ids of ``index`` that share a fixture with others.

    ``"module:<name>"`` for every test of a module that defines ``setUpModule`` or
    ``tearDownModule``; else ``"class:<module>.<qualname>"`` for the tests of a class that
    overrides ``setUpClass`` or ``tearDownClass``. Ids without a shared fixture are left
    out (each is a group of its own). A duplicated id keeps the group of its first test.
    """
    groups: dict[str, str] = {}
    for test_id, test in index.tests:
        if test_id in groups:
            continue
        key = _group_key(type(test))
        if key is not None:
            groups[test_id] = key
    return groups


def _group_key(cls: type) -> str | None:
    module = sys.modules.get(cls.__module__)
    if any(callable(getattr(module, name, None)) for name in _MODULE_FIXTURES):
        return f"module:{cls.__module__}"
    if issubclass(cls, unittest.TestCase) and any(
        _overridden(cls, name) for name in _CLASS_FIXTURES
    ):
        return f"class:{cls.__module__}.{cls.__qualname__}"
    return None


def _overridden(cls: type, name: str) -> bool:
    """Whether ``cls`` defines the classmethod ``name`` itself or below TestCase."""
    mine = getattr(getattr(cls, name, None), "__func__", None)
    return mine is not getattr(unittest.TestCase, name).__func__
