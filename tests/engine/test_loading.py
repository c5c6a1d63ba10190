"""Tests for testserver.engine.loading: the index must list what unittest / subunit.run list."""

from __future__ import annotations

import os
import subprocess
import sys
import unittest
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from serverproc import PROJECTS, copy_project

from testserver.engine.loading import (
    FAILED_TEST_PREFIX,
    LoadError,
    LoadSpec,
    TestIndex,
    flatten,
    load,
)
from testserver.wire.packets import decode_packets

OUTCOMES = PROJECTS / "layer_outcomes"
DUPES = PROJECTS / "layer_dupes"

SYNTAX_ERROR_SOURCE = "import unittest\n\nclass Broken(unittest.TestCase)\n    pass\n"
"""Written at test time: a .py file with a syntax error in the repo would break ruff."""


@pytest.fixture(scope="module")
def broken_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """layer_broken plus a module with a SyntaxError, copied once (module names are global)."""
    root = copy_project("layer_broken", tmp_path_factory.mktemp("broken"))
    (root / "layer_broken" / "test_syntax_error.py").write_text(SYNTAX_ERROR_SOURCE)
    return root


def discover(project: Path, **kwargs: object) -> TestIndex:
    return load(LoadSpec(start=str(project), top=str(project), **kwargs))  # type: ignore[arg-type]


def subunit_run_list(project: Path) -> tuple[list[str], bytes, int]:
    """``python -m subunit.run discover --list``: (ids, "import errors" text, exit code)."""
    proc = subprocess.run(
        [sys.executable, "-m", "subunit.run", "discover", "-s", ".", "-t", ".", "--list"],
        cwd=project,
        capture_output=True,
        check=False,
    )
    ids, errors = [], b""
    for packet in decode_packets(proc.stdout):
        if packet.status == "exists":
            ids.append(packet.test_id)
        elif packet.file_name == "import errors":
            errors += packet.file_bytes
    return ids, errors, proc.returncode


# ---------------------------------------------------------------------------- discovery


def test_discovery_lists_what_subunit_run_lists() -> None:
    index = discover(OUTCOMES)
    ids, errors, code = subunit_run_list(OUTCOMES)
    assert code == 0 and errors == b""
    assert sorted(index.ids) == sorted(ids)
    assert len(index) == len(ids) == len(set(ids))
    assert index.errors == ()


def test_discovery_keeps_unittest_load_order() -> None:
    index = discover(OUTCOMES)
    suite = unittest.TestLoader().discover(str(OUTCOMES), top_level_dir=str(OUTCOMES))
    assert list(index.ids) == [test.id() for test in flatten(suite)]
    assert index.ids[:2] == (
        "layer_outcomes.test_fixtures.BrokenSetUpClass.test_never_runs_a",
        "layer_outcomes.test_fixtures.BrokenSetUpClass.test_never_runs_b",
    )


def test_load_tests_protocol_is_honoured() -> None:
    index = discover(OUTCOMES)
    assert "layer_outcomes.test_loadtests.Filtered.test_kept" in index
    assert "layer_outcomes.test_loadtests.Filtered.test_dropped" not in index
    assert "added" in index  # FunctionTestCase(added).id() is the function's name


def test_loading_runs_no_fixtures() -> None:
    script = (
        "import sys\n"
        "from testserver.engine.loading import LoadSpec, load\n"
        "load(LoadSpec(start='.', top='.'))\n"
        "print(sys.modules['layer_outcomes.test_fixtures'].EVENTS)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=OUTCOMES, capture_output=True, text=True, check=True
    )
    assert proc.stdout == "[]\n"


def test_pattern_selects_modules() -> None:
    index = discover(OUTCOMES, pattern="test_sub*.py")
    assert index.ids and all(".test_subtests." in test_id for test_id in index.ids)


def test_start_may_be_a_dotted_package_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.syspath_prepend(str(DUPES))
    monkeypatch.chdir(tmp_path)
    index = load(LoadSpec(start="layer_dupes"))
    assert index.ids == (
        "layer_dupes.test_dupes.Twice.test_twice",
        "layer_dupes.test_dupes.Twice.test_once",
    )


def test_bad_start_directory_raises_like_unittest(tmp_path: Path) -> None:
    (tmp_path / "loose").mkdir()
    with pytest.raises(ImportError):
        load(LoadSpec(start=str(tmp_path / "loose"), top=str(tmp_path / "elsewhere")))


# ---------------------------------------------------------------------------- load errors


def test_broken_modules_become_errors_and_runnable_tests(broken_project: Path) -> None:
    index = discover(broken_project)
    ids, _, _ = subunit_run_list(broken_project)
    assert sorted(index.ids) == sorted(ids)
    by_module = {error.module: error for error in index.errors}
    assert set(by_module) == {
        "layer_broken.test_bad_load_tests",
        "layer_broken.test_import_error",
        "layer_broken.test_syntax_error",
    }
    for error in index.errors:
        assert isinstance(error, LoadError)
        assert error.test_id == FAILED_TEST_PREFIX + error.module
        assert error.test_id in index
        assert error.message == error.traceback.strip().splitlines()[-1].strip()
    imported = by_module["layer_broken.test_import_error"]
    assert imported.message == "ModuleNotFoundError: No module named 'layer_broken_no_such_module'"
    assert imported.traceback.startswith(
        "Failed to import test module: layer_broken.test_import_error\n"
    )
    assert by_module["layer_broken.test_syntax_error"].message.startswith("SyntaxError: ")
    assert by_module["layer_broken.test_bad_load_tests"].message == (
        "RuntimeError: load_tests is broken"
    )
    assert by_module["layer_broken.test_bad_load_tests"].traceback.startswith(
        "Failed to call load_tests:\n"
    )


def test_error_texts_are_what_subunit_run_reports(broken_project: Path) -> None:
    # In a subprocess: in this one pytest's import hook adds frames to import tracebacks.
    script = (
        "import sys\n"
        "from testserver.engine.loading import LoadSpec, load\n"
        "index = load(LoadSpec(start='.', top='.'))\n"
        "sys.stdout.write('\\n'.join(error.traceback for error in index.errors))\n"
    )
    ours = subprocess.run(
        [sys.executable, "-c", script], cwd=broken_project, capture_output=True, check=True
    ).stdout
    _, errors, code = subunit_run_list(broken_project)
    assert code == 2
    assert ours == errors


def test_synthetic_failing_tests_fail_when_run(broken_project: Path) -> None:
    index = discover(broken_project)
    found, unknown = index.resolve(error.test_id for error in index.errors)
    assert unknown == [] and len(found) == 3
    result = unittest.TestResult()
    for _, test in found:
        test.run(result)
    assert len(result.errors) == 3


def test_a_loader_with_name_patterns_filters_like_unittest_k(broken_project: Path) -> None:
    """``-k`` goes through the loader: test methods are filtered, import failures stay."""
    loader = unittest.TestLoader()
    loader.testNamePatterns = ["*fine*"]  # unittest turns "-k fine" into "*fine*"
    index = load(LoadSpec(start=str(broken_project), top=str(broken_project)), loader=loader)
    assert "layer_broken.test_fine.Fine.test_fine" in index
    assert FAILED_TEST_PREFIX + "layer_broken.test_import_error" in index
    assert len(index.errors) == 3


def test_names_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(OUTCOMES))
    names = (
        "layer_outcomes.test_outcomes.Outcomes.test_pass",
        "layer_outcomes.test_subtests",
        "layer_outcomes.test_outcomes.Outcomes.test_pass",
    )
    index = load(LoadSpec(names=names, discover=False))
    assert index.ids[0] == "layer_outcomes.test_outcomes.Outcomes.test_pass"
    assert all(".test_subtests." in test_id for test_id in index.ids[1:])
    assert len(index.tests) == len(index) + 1  # the repeated name is kept under one id
    assert index.errors == ()


def test_names_mode_bad_names_become_failed_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(OUTCOMES))
    index = load(
        LoadSpec(
            names=("layer_outcomes_nope.mod", "layer_outcomes.test_outcomes.Nope"), discover=False
        )
    )
    assert index.ids == (FAILED_TEST_PREFIX + "layer_outcomes_nope", FAILED_TEST_PREFIX + "Nope")
    missing, attribute = index.errors
    assert missing.message == "ModuleNotFoundError: No module named 'layer_outcomes_nope'"
    assert attribute.module == "Nope"
    assert attribute.message.startswith("AttributeError: ")
    assert attribute.traceback.startswith("Failed to access attribute:\n")


def test_names_mode_accepts_file_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(OUTCOMES))
    monkeypatch.chdir(OUTCOMES)
    path = os.path.join("layer_outcomes", "test_loadtests.py")
    index = load(LoadSpec(names=(path,), discover=False))
    assert "layer_outcomes.test_loadtests.Filtered.test_kept" in index


# ---------------------------------------------------------------------------- the index


def test_duplicate_ids_keep_every_test_object() -> None:
    index = discover(DUPES)
    twice = "layer_dupes.test_dupes.Twice.test_twice"
    assert index.ids == (twice, "layer_dupes.test_dupes.Twice.test_once")
    assert [test_id for test_id, _ in index.tests] == [
        twice,
        "layer_dupes.test_dupes.Twice.test_once",
        twice,
    ]
    found, unknown = index.resolve([twice])
    assert unknown == []
    assert [test_id for test_id, _ in found] == [twice, twice]
    assert found[0][1] is not found[1][1]


def test_resolve_keeps_request_order_and_each_occurrence() -> None:
    index = discover(OUTCOMES)
    a, b = index.ids[3], index.ids[0]
    found, unknown = index.resolve([a, "nope.one", b, a, "nope.two"])
    assert [test_id for test_id, _ in found] == [a, b, a]
    assert found[0][1] is found[2][1]
    assert unknown == ["nope.one", "nope.two"]


def test_index_keeps_tests_runnable_after_a_suite_ran_them() -> None:
    index = discover(OUTCOMES)
    found, _ = index.resolve(["layer_outcomes.test_outcomes.Outcomes.test_pass"])
    for _ in range(2):
        result = unittest.TestResult()
        unittest.TestSuite([test for _, test in found]).run(result)
        assert result.testsRun == 1 and result.wasSuccessful()
    assert index.resolve(["layer_outcomes.test_outcomes.Outcomes.test_pass"])[0] == found


def test_flatten_descends_nested_and_duck_typed_suites() -> None:
    case = unittest.FunctionTestCase(lambda: None)
    other = unittest.FunctionTestCase(lambda: None)
    nested = [unittest.TestSuite([unittest.TestSuite([case])]), [other]]  # a list is a suite too
    assert flatten(nested) == [case, other]
    deep: object = unittest.TestSuite([case])
    for _ in range(5000):  # deeper than the recursion limit
        deep = unittest.TestSuite([deep])
    assert flatten(deep) == [case]  # type: ignore[arg-type]


SUBTEST_SUFFIXES = st.sampled_from(["", " (i=1)", " [msg]", " [m] (i=2)", " (", " (<subtest>)"])


@given(
    st.lists(
        st.one_of(st.tuples(st.integers(0, 20), SUBTEST_SUFFIXES), st.text(max_size=8)),
        max_size=30,
    )
)
def test_resolve_partitions_any_request(request_items: list[object]) -> None:
    """Invariant: a named id is found per occurrence, in request order; a subtest id adds
    its parent once, where first named, unless the parent is named itself; the rest is
    unknown, in request order."""
    index = _SMALL_INDEX
    requested = [
        index.ids[item[0] % len(index.ids)] + item[1] if isinstance(item, tuple) else item
        for item in request_items
    ]
    found, unknown = index.resolve(requested)

    def owner(test_id: str) -> str | None:
        parent = test_id.split(" ", 1)[0] if test_id.endswith((")", "]")) else None
        return test_id if test_id in index else parent if parent in index else None

    expected: list[str] = []
    for test_id in requested:
        parent = owner(test_id)
        if test_id in index:
            expected.append(test_id)
        elif parent is not None and parent not in requested and parent not in expected:
            expected.append(parent)
    objects = {test_id: [t for i, t in index.tests if i == test_id] for test_id in expected}
    assert found == [(test_id, test) for test_id in expected for test in objects[test_id]]
    assert unknown == [test_id for test_id in requested if owner(test_id) is None]


def test_a_subtest_id_selects_its_parent_once() -> None:
    index = _SMALL_INDEX
    found, unknown = index.resolve(
        ["t.2 (i=1)", "t.3 [msg] (i=2)", "t.2 (i=2)", "t.2 [only a msg]"]
    )
    assert unknown == []
    assert [test_id for test_id, _ in found] == ["t.2", "t.3"]


def test_a_parent_named_with_its_subtests_runs_once_where_it_is_named() -> None:
    found, unknown = _SMALL_INDEX.resolve(["t.3 (i=1)", "t.2", "t.3", "t.2 (i=0)"])
    assert unknown == []
    assert [test_id for test_id, _ in found] == ["t.2", "t.3"]


def test_a_real_id_containing_a_parenthesis_resolves_to_itself_first() -> None:
    cases = [unittest.FunctionTestCase(lambda: None) for _ in range(3)]
    index = TestIndex([("p.T.test", cases[0]), ("p.T.test (x)", cases[1]), ("q.T.t [a]", cases[2])])
    assert index.resolve(["p.T.test (x)"])[0] == [("p.T.test (x)", cases[1])]
    assert index.resolve(["p.T.test (x) (i=1)"])[0] == [("p.T.test (x)", cases[1])]  # longest
    assert index.resolve(["p.T.test (y)"])[0] == [("p.T.test", cases[0])]
    assert index.resolve(["q.T.t [a] [b]"])[0] == [("q.T.t [a]", cases[2])]
    assert index.resolve(["p.T.test (unclosed", "p.T.test(i=1)", "p.T.tes (i=1)"]) == (
        [],
        ["p.T.test (unclosed", "p.T.test(i=1)", "p.T.tes (i=1)"],
    )


def test_a_fixture_error_id_selects_the_tests_of_its_class_or_module() -> None:
    index = discover(OUTCOMES)
    module = index.ids[0].rsplit(".", 2)[0]
    cls = index.ids[0].rsplit(".", 1)[0]
    of_class = [i for i in index.ids if i.startswith(cls + ".")]
    found, unknown = index.resolve([f"setUpClass ({cls})", f"tearDownClass ({cls})"])
    assert unknown == [] and [test_id for test_id, _ in found] == of_class
    found, unknown = index.resolve([f"setUpModule ({module})", "setUpModule (no.such)"])
    assert [test_id for test_id, _ in found] == [i for i in index.ids if i.startswith(module + ".")]
    assert unknown == ["setUpModule (no.such)"]


def _small_index() -> TestIndex:
    cases = [unittest.FunctionTestCase(lambda: None, description=str(n)) for n in range(6)]
    pairs = [(f"t.{n % 4}", case) for n, case in enumerate(cases)]  # t.0 and t.1 twice
    return TestIndex(pairs)


_SMALL_INDEX = _small_index()


def test_index_basics() -> None:
    index = _SMALL_INDEX
    assert index.ids == ("t.0", "t.1", "t.2", "t.3")
    assert len(index) == 4 and "t.2" in index and "t.9" not in index
    assert list(index) == list(index.ids)
    assert "4 ids" in repr(index)
