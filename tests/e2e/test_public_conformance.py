"""The fast CI subset of ``bench/conformance_public.py``: real public suites, test by test.

A few hundred of CPython's own tests (JSON, zoneinfo, and unittest's own tests of subTest,
skipping, class fixtures and Ctrl-C handling) run through ``python -m subunit.run``,
testserver's one-shot mode, a warm ``--serve`` and a second full run in that server; every
test id and outcome must agree (the meaning of "agree" is in ``bench/_conformance.py``). The
full run on the pinned public suites is the script.

The comparison itself is checked on hand-made observations, so that it can fail.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "bench"))

from _conformance import NONE, Observation, compare, fold, render, run_suite  # noqa: E402

UNITTEST = "unittest.test" if sys.version_info < (3, 12) else "test.test_unittest"

SUBSET = {
    "cpython-json": ("test.test_json",),
    "cpython-zoneinfo": ("test.test_zoneinfo",),
    "cpython-unittest": tuple(
        f"{UNITTEST}.{name}" for name in ("test_case", "test_skipping", "test_setups")
    ),
    "cpython-unittest-break": (f"{UNITTEST}.test_break",),
}
"""Suite name -> load arguments: about 600 tests, a few seconds per mode.

``test.test_threadsignals`` (signals to the import-time pid, which testserver passes on to
the worker) is in the full script only: its own one-second wait for the signal makes it
flaky on a loaded machine, and ``tests/serve/test_hostile.py`` covers the behaviour."""


def _cases() -> list:
    return sorted(SUBSET)


SUITE_TIMEOUT = 120.0
TEST_TIMEOUT = 60.0


@pytest.mark.heavy
@pytest.mark.parametrize("name", _cases())
def test_public_suite_agrees_in_every_mode(name: str, tmp_path: Path) -> None:
    result = run_suite(
        name,
        sys.executable,
        tmp_path,
        SUBSET[name],
        timeout=SUITE_TIMEOUT,
        test_timeout=TEST_TIMEOUT,
        logs=tmp_path,
    )
    assert not result.disagreements, render([result])
    assert len(result.reference.statuses) >= 5, "the reference ran almost nothing"
    for observed in result.modes:
        assert len(observed.statuses) >= len(result.reference.statuses), observed.mode


LISTED = frozenset({"m.T.test_a", "m.T.test_b", "m.T.test_c"})


def test_fold_reports_a_failing_subtest_as_a_failing_parent() -> None:
    statuses = {"m.T.test_a (i=1)": "success", "m.T.test_a (i=2)": "fail", "m.T.test_a": "success"}
    assert fold(statuses, LISTED) == {"m.T.test_a": "fail"}


def test_fold_counts_a_parent_with_only_skipped_subtests_as_success() -> None:
    # testtools drops the parent's own success when a subtest was skipped
    assert fold({"m.T.test_a (i=1)": "skip"}, LISTED) == {"m.T.test_a": "success"}


def _observed(mode: str, statuses: dict[str, str], **tracebacks: str) -> Observation:
    return Observation(mode, LISTED, statuses, dict(tracebacks))


def test_compare_lists_each_disagreement_by_mode() -> None:
    reference = _observed("subunit.run", {"m.T.test_a": "success", "m.T.test_b": "fail"})
    ours = _observed("one-shot", {"m.T.test_a": "fail", "m.T.test_b": "fail", "x": "success"})
    result = compare("s", reference, [ours])
    assert result.tests == 4
    assert result.agree == {"one-shot": 2}
    wrong = {(d.test_id, d.reference, d.ours) for d in result.disagreements}
    assert wrong == {("m.T.test_a", "success", "fail"), ("x", NONE, "success")}


def test_compare_accepts_not_run_records_only_where_the_reference_has_nothing() -> None:
    note = "testserver: not run: setUpClass failed"
    statuses = {"setUpClass (m.T)": "fail", "m.T.test_a": "fail", "m.T.test_b": "fail"}
    ours = Observation("one-shot", LISTED, statuses, {"m.T.test_a": note, "m.T.test_b": "boom"})
    reference = _observed("subunit.run", {"setUpClass (m.T)": "fail"})
    result = compare("s", reference, [ours])
    assert [d.test_id for d in result.disagreements] == ["m.T.test_b"]
    reference = _observed("subunit.run", {"setUpClass (m.T)": "fail", "m.T.test_a": "success"})
    result = compare("s", reference, [ours])
    assert {d.test_id for d in result.disagreements} == {"m.T.test_a", "m.T.test_b"}


def test_compare_counts_listing_differences_and_stream_problems() -> None:
    reference = _observed("subunit.run", {})
    ours = Observation("serve", frozenset({"m.T.test_a"}), {}, problems=["not a pure stream"])
    result = compare("s", reference, [ours])
    wrong = {(d.test_id, d.reference, d.ours) for d in result.disagreements}
    assert wrong == {
        ("m.T.test_b", "listed", "absent"),
        ("m.T.test_c", "listed", "absent"),
        ("(stream)", "-", "not a pure stream"),
    }
