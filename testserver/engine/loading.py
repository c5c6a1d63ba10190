"""Load tests once: discover or name them with unittest, flatten, and index them by id.

This is the first half of the test layer. :func:`load` asks :class:`unittest.TestLoader`
for a suite exactly as ``python -m unittest`` / ``python -m subunit.run`` would (discovery
with start/pattern/top, or ``loadTestsFromNames``; the ``load_tests`` protocol is the
loader's business), flattens it into leaf tests and returns a :class:`TestIndex`: the test
ids in load order, the import failures as :class:`LoadError`, and a dict from id to test
objects so that selecting a batch costs one lookup per id, never a scan of the suite.

Like unittest, a module that fails to import is not an exception here: it becomes a
synthetic failing test (``unittest.loader._FailedTest.<module>``) that stays in the index
and runs like any other test, *and* it is listed in :attr:`TestIndex.errors`.
"""

from __future__ import annotations

import os
import traceback
import unittest
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from testserver.wire.constants import FAILED_TEST_PREFIX

__all__ = ["LoadError", "LoadSpec", "TestIndex", "load"]

FIXTURE_NAMES = frozenset({"setUpClass", "tearDownClass", "setUpModule", "tearDownModule"})
"""Fixtures whose errors unittest reports as ``"<fixture> (<class or module>)"``."""

_IMPORT_FAILURE_HEADER = "Failed to import test module: "
"""First words of the message unittest's loader records for an import failure."""


@dataclass(frozen=True)
class LoadError:
    """A module that failed to import, or a ``load_tests`` that raised.

    ``test_id`` is the id of unittest's synthetic failing test, e.g.
    ``"unittest.loader._FailedTest.pkg.test_broken"``; ``module`` is the name unittest gave
    that test (the module's dotted name for import and ``load_tests`` failures, the missing
    attribute for a bad name); ``message`` is the exception's last line, e.g.
    ``"ModuleNotFoundError: No module named 'nope'"``; ``traceback`` is the full text, as
    ``TestLoader.errors`` has it.
    """

    test_id: str
    module: str
    message: str
    traceback: str


@dataclass(frozen=True)
class LoadSpec:
    """What to load; mirrors the arguments of ``python -m unittest`` / ``subunit.run``.

    With ``discover=True`` (``python -m unittest discover -s START -p PATTERN -t TOP``):
    ``start`` is a directory or a dotted package name, ``top`` the top-level directory.
    With ``discover=False`` (``python -m unittest NAME ...``): ``names`` are module, class
    or test names (a path to a ``.py`` file below the current directory is converted to
    a module name, as unittest does).
    """

    start: str = "."
    top: str | None = None
    pattern: str = "test*.py"
    names: tuple[str, ...] = ()
    discover: bool = True


class TestIndex:
    """The loaded tests: ids in load order, load errors, and O(1) lookup by id.

    ``ids`` lists every runnable test id once, in load order (synthetic ``_FailedTest``
    ids included). A duplicated id keeps every test object loaded under it; ``tests`` has
    all ``(id, test)`` pairs in load order, duplicates included. The index holds its own
    references: running a :class:`unittest.TestSuite` drops its tests, the index never does.
    """

    __slots__ = ("_by_id", "errors", "ids", "tests")
    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(
        self, tests: Iterable[tuple[str, unittest.TestCase]], errors: Iterable[LoadError] = ()
    ) -> None:
        self.tests: tuple[tuple[str, unittest.TestCase], ...] = tuple(tests)
        self.errors: tuple[LoadError, ...] = tuple(errors)
        by_id: dict[str, list[unittest.TestCase]] = {}
        for test_id, test in self.tests:
            by_id.setdefault(test_id, []).append(test)
        self._by_id = by_id
        self.ids: tuple[str, ...] = tuple(by_id)  # dicts keep first-insertion order

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, test_id: object) -> bool:
        return test_id in self._by_id

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __repr__(self) -> str:
        return f"<TestIndex {len(self.ids)} ids, {len(self.errors)} load errors>"

    def resolve(
        self, test_ids: Iterable[str]
    ) -> tuple[list[tuple[str, unittest.TestCase]], list[str]]:
        """Look ids up: ``(found, unknown)``.

        An id in the index selects its tests: ``found`` has ``(id, test)`` in the requested
        order, one entry per occurrence of the id and per test object loaded under it. Any
        other id the server reports selects the tests that reported it (see
        :meth:`owners`): a subtest id its parent, a fixture id the tests of its class or
        module. Those run once each, at the first id that names them, and not at all when
        the request names them itself. ``unknown`` has the ids that select nothing, in
        the requested order.
        """
        by_id = self._by_id
        requested = list(test_ids)
        named = {test_id for test_id in requested if test_id in by_id}
        selected: set[str] = set()
        found: list[tuple[str, unittest.TestCase]] = []
        unknown: list[str] = []
        for test_id in requested:
            owners = [test_id] if test_id in named else self.owners(test_id)
            if not owners:
                unknown.append(test_id)
                continue
            for owner in owners:
                if owner != test_id and (owner in named or owner in selected):
                    continue
                selected.add(owner)
                found.extend((owner, test) for test in by_id[owner])
        return found, unknown

    def owners(self, test_id: str) -> list[str]:
        """The indexed ids behind an id the server reports but does not index; else ``[]``.

        - a subtest, ``"<parent id> (<params>)"``, ``"<parent id> [<msg>]"`` or
          ``"<parent id> [<msg>] (<params>)"`` (unittest's ``_SubTest.id()``, which
          testtools TestCases use too): ``[parent id]``; when several prefixes are indexed
          ids, the longest wins;
        - a class or module fixture error, ``"setUpClass (pkg.mod.Class)"`` and the like
          (unittest's ``_ErrorHolder``): the ids of that class's or module's tests.
        """
        if test_id in self._by_id:
            return [test_id]
        parent = self._subtest_parent(test_id)
        if parent is not None:
            return [parent]
        return self._fixture_tests(test_id)

    def _subtest_parent(self, test_id: str) -> str | None:
        if not test_id.endswith((")", "]")):
            return None
        end = len(test_id)
        while True:
            end = max(test_id.rfind(" (", 0, end), test_id.rfind(" [", 0, end))
            if end <= 0:
                return None
            if test_id[:end] in self._by_id:
                return test_id[:end]

    def _fixture_tests(self, test_id: str) -> list[str]:
        name, _, rest = test_id.partition(" (")
        if name not in FIXTURE_NAMES or not rest.endswith(")") or len(rest) < 2:
            return []
        prefix = rest[:-1] + "."
        return [known for known in self.ids if known.startswith(prefix)]


def load(spec: LoadSpec, *, loader: unittest.TestLoader | None = None) -> TestIndex:
    """Load the tests ``spec`` names and index them.

    Import failures (and a ``load_tests`` that raises, and a name that cannot be
    resolved) become :class:`LoadError` entries *and* stay in the index as unittest's
    synthetic failing tests. Errors about the spec itself propagate as unittest raises
    them, e.g. ``ImportError: Start directory is not importable`` for a bad ``start``.
    Modules are imported into this process's ``sys.modules``; ``discover`` also puts the
    top-level directory on ``sys.path``, as unittest does.
    """
    if loader is None:
        loader = unittest.TestLoader()
    errors_before = len(loader.errors)
    if spec.discover:
        suite = loader.discover(spec.start, spec.pattern, spec.top)
    else:
        suite = loader.loadTestsFromNames(_convert_names(spec.names))
    tests = [(test.id(), test) for test in flatten(suite)]
    errors = _load_errors(tests, loader.errors[errors_before:])
    return TestIndex(tests, errors)


def flatten(suite: Iterable[object]) -> list[unittest.TestCase]:
    """Return the leaf tests of ``suite`` in run order.

    Anything iterable is a suite and is descended into (unittest's own duck test,
    ``suite._isnotsuite``); everything else is a test. Iterative, so deep nesting is fine.
    """
    leaves: list[unittest.TestCase] = []
    stack: list[Iterator[object]] = [iter(suite)]
    while stack:
        for item in stack[-1]:
            if item is None:  # a suite that already ran has dropped its tests
                continue
            if isinstance(item, unittest.TestCase):
                leaves.append(item)
                continue
            try:
                children = iter(item)  # type: ignore[call-overload]
            except TypeError:
                leaves.append(item)  # type: ignore[arg-type]
                continue
            stack.append(children)
            break
        else:
            stack.pop()
    return leaves


def _convert_names(names: Iterable[str]) -> list[str]:
    """Names for ``loadTestsFromNames``: paths made dotted, subtest ids made their parent's.

    A dotted name holds no space, so ``"pkg.T.test_x (i=3)"`` names ``pkg.T.test_x``; a
    parent named through several subtest ids (or also by itself) is loaded once.
    """
    converted: list[str] = []
    for name in names:
        if " " in name and name.endswith((")", "]")):
            parent = name.split(" ", 1)[0]
            if parent not in names and parent not in converted:
                converted.append(parent)
        else:
            converted.append(_convert_name(name))
    return converted


def _convert_name(name: str) -> str:
    """Turn ``dir/test_x.py`` into ``dir.test_x`` like ``python -m unittest`` does."""
    if not (name.lower().endswith(".py") and os.path.isfile(name)):
        return name
    relative = os.path.relpath(name)
    if os.path.isabs(relative) or relative.startswith(os.pardir):
        return name  # outside the current directory: leave it for the loader to reject
    return os.path.normpath(relative)[:-3].replace("\\", ".").replace("/", ".")


def _load_errors(
    tests: list[tuple[str, unittest.TestCase]], messages: list[str]
) -> list[LoadError]:
    """Pair each message of ``TestLoader.errors`` with the synthetic test it produced."""
    failed = [
        (test_id, test)
        for test_id, test in tests
        if isinstance(test, unittest.loader._FailedTest)  # type: ignore[attr-defined]
    ]
    errors = []
    unmatched = list(messages)
    for test_id, test in failed:
        text = _match_message(test, unmatched)
        if text is None:
            continue  # the same broken module loaded twice: one error is enough
        errors.append(LoadError(test_id, test._testMethodName, _last_line(text), text))
    for text in unmatched:  # dropped from the suite by a load_tests: still an error
        module = ""
        first = text.partition("\n")[0]
        if first.startswith(_IMPORT_FAILURE_HEADER):
            module = first[len(_IMPORT_FAILURE_HEADER) :].strip()
        test_id = FAILED_TEST_PREFIX + module if module else ""
        errors.append(LoadError(test_id, module, _last_line(text), text))
    return errors


def _match_message(test: unittest.TestCase, messages: list[str]) -> str | None:
    """Find, remove and return the loader message belonging to a ``_FailedTest``.

    For an import failure the test's exception is ``ImportError(message)``; for a raising
    ``load_tests`` or a bad attribute it is the original exception, whose formatted
    traceback ends the message.
    """
    exception = getattr(test, "_exception", None)
    if exception is None:
        return None
    text = str(exception)
    if text in messages:
        messages.remove(text)
        return text
    formatted = "".join(traceback.format_exception(exception))
    for index, message in enumerate(messages):
        if message.endswith(formatted):
            return messages.pop(index)
    return None


def _last_line(text: str) -> str:
    """The last non-blank line of a traceback: ``"Type: message"``."""
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return ""
