"""Conformance: `python -m testserver` (one-shot and `--serve`) against `python -m subunit.run`.

Runs the same project three ways and compares what python-subunit's own parser
(``ByteStreamToStreamResult``) decodes from each stream:

1. the reference, ``python -m subunit.run ARGS --list`` then ``python -m subunit.run ARGS``;
2. one-shot, ``python -m testserver ARGS --list`` then ``python -m testserver ARGS``;
3. a warm server, ``python -m testserver --serve ARGS``: ``list-tests`` then ``run-tests`` (all).

It compares the sets of listed ids, the ``--list`` exit codes and the map from test id to
final outcome. Allowed, documented differences (spec/protocol.md, sections 5.3 and 10):

- testserver never emits ``exists`` events in run mode (``subunit.run`` lists first);
- subtests are reported differently (testtools folds failing subtests into the parent), so
  ids of the form ``<listed id> <description>`` are left out of the outcome maps;
- ``subunit.run`` writes test output to stdout as raw bytes, so its stream is decoded as
  testrepository does (``non_subunit_name="stdout"``) and the ``subunit.parser`` pseudo-test
  that raw bytes can cause is counted, not compared. testserver's streams are decoded
  strictly (``non_subunit_name=None``): a single raw byte is a conformance failure;
- a server reports import errors in ``testserver.hello`` (``discovery_errors``), not as an
  ``import errors`` attachment, and has no ``--list`` exit status; its "run exit" is its
  exit status after ``quit``;
- one-shot mode reports a requested test that did not run (``subunit.run`` omits it
  silently, e.g. the tests of a class whose ``setUpClass`` failed) as a failing test whose
  traceback starts ``testserver: this test was not run``, and then exits 1: such ids are
  counted as "not run", not compared, and they excuse that exit status.

As a script::

    python tests/conformance.py PROJECT_DIR [ARG ...]
    python tests/conformance.py tests/projects/e2e_basic discover -t . -s ebasic

prints a report and exits 0 when all three agree, 1 otherwise. As a module:
:func:`check` returns a :class:`Report`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # run as a script from elsewhere: our helpers live beside us
    sys.path.insert(0, _HERE)

from serverproc import ServerProcess  # noqa: E402
from subunit_reader import read_with_subunit  # noqa: E402

from testserver.wire.commands import ListTests, Quit, RunTests  # noqa: E402

__all__ = [
    "Observed",
    "Report",
    "check",
    "compare",
    "decode",
    "exists_ids",
    "final_outcomes",
    "main",
    "observe_serve",
    "observe_subprocess",
]

RUN_TIMEOUT = 300.0
"""Seconds one list or run may take; a real suite of a few hundred tests needs a few."""

PARSER_ID = "subunit.parser"
"""The pseudo-test python-subunit reports a packet it cannot parse as."""

REFERENCE = "subunit.run"
ONESHOT = "one-shot"
SERVE = "serve"
NOT_FINAL = frozenset({None, "exists", "inprogress"})


def decode(data: bytes, *, strict: bool = True) -> list[dict]:
    """Decode ``data`` with ``subunit.ByteStreamToStreamResult``.

    ``strict`` decodes with ``non_subunit_name=None``, so python-subunit raises on the first
    byte that is not part of a packet; otherwise such bytes become ``stdout`` file events,
    as testrepository and stestr read a backend's output.
    """
    return read_with_subunit(data, non_subunit_name=None if strict else "stdout")


def exists_ids(events: Iterable[dict]) -> tuple[str, ...]:
    """Ids of the ``exists`` events, in stream order."""
    return tuple(e["test_id"] for e in events if e.get("test_status") == "exists")


def is_subtest(test_id: str, listed: frozenset[str]) -> bool:
    """True if ``test_id`` is ``<listed id> <description>``, as CPython names subtests."""
    if test_id in listed:
        return False
    position = test_id.find(" ")
    while position != -1:
        if test_id[:position] in listed:
            return True
        position = test_id.find(" ", position + 1)
    return False


NOT_RUN_MARK = b"testserver: this test was not run"
"""How one-shot mode's record of a requested test that did not run begins."""


def final_outcomes(events: Iterable[dict], listed: frozenset[str]) -> dict[str, str]:
    """Last final status per test id, subtests, parser errors and not-run records left out."""
    outcomes: dict[str, str] = {}
    not_run = not_run_ids(events)
    for event in events:
        test_id, status = event.get("test_id"), event.get("test_status")
        if not test_id or status in NOT_FINAL or test_id == PARSER_ID or test_id in not_run:
            continue
        if not is_subtest(test_id, listed):
            outcomes[test_id] = status
    return outcomes


def not_run_ids(events: Iterable[dict]) -> set[str]:
    """Ids that one-shot mode reported as requested but not run."""
    return {
        event["test_id"]
        for event in events
        if event.get("file_name") == "traceback"
        and (event.get("file_bytes") or b"").startswith(NOT_RUN_MARK)
    }


@dataclass
class Observed:
    """What one way of running a project produced, as python-subunit decoded it."""

    runner: str
    listed: tuple[str, ...]
    outcomes: dict[str, str]
    list_rc: int | None = None
    run_rc: int | None = None
    import_errors: bool = False
    run_exists: int = 0
    parser_errors: int = 0
    raw_output_bytes: int = 0
    not_run: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    def counts(self) -> Counter:
        """How many tests had each outcome."""
        return Counter(self.outcomes.values())


@dataclass
class Report:
    """The three observations and every difference found between them."""

    project: Path
    args: tuple[str, ...]
    observed: list[Observed]
    differences: list[str]

    @property
    def agree(self) -> bool:
        return not self.differences

    def by_runner(self, runner: str) -> Observed:
        return next(o for o in self.observed if o.runner == runner)

    def render(self) -> str:
        """A human-readable table of the figures and the differences."""
        names = [o.runner for o in self.observed]
        statuses = sorted({s for o in self.observed for s in o.outcomes.values()})
        rows: list[tuple[str, list[str]]] = [
            ("listed ids", [str(len(set(o.listed))) for o in self.observed]),
            ("--list exit", [_text(o.list_rc) for o in self.observed]),
            ("import errors", [str(o.import_errors) for o in self.observed]),
            ("run exit", [_text(o.run_rc) for o in self.observed]),
            ("tests with outcome", [str(len(o.outcomes)) for o in self.observed]),
            *((f"  {s}", [str(o.counts()[s]) for o in self.observed]) for s in statuses),
            ("not run (explicit)", [str(len(o.not_run)) for o in self.observed]),
            ("exists in run mode", [str(o.run_exists) for o in self.observed]),
            ("parser errors", [str(o.parser_errors) for o in self.observed]),
            ("raw stdout bytes", [str(o.raw_output_bytes) for o in self.observed]),
        ]
        width = max(len(label) for label, _ in rows)
        lines = [f"project: {self.project}", f"args:    {' '.join(self.args)}", ""]
        lines.append(" " * width + "".join(f"{n:>14}" for n in names))
        lines += [label.ljust(width) + "".join(f"{v:>14}" for v in vs) for label, vs in rows]
        lines.append("")
        if self.agree:
            lines.append("AGREE: same listed ids and the same outcome for every test")
        else:
            lines.append(f"DISAGREE ({len(self.differences)}):")
            lines += [f"  - {d}" for d in self.differences]
        return "\n".join(lines)


def _text(value: int | None) -> str:
    return "-" if value is None else str(value)


def _python_m(
    module: str, project: Path, args: Sequence[str], env: dict | None
) -> tuple[bytes, int]:
    """Run ``python -m module ARGS`` in ``project`` with stdin closed; return (stdout, rc)."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=project,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=RUN_TIMEOUT,
        env=env,
    )
    return proc.stdout, proc.returncode


def observe_subprocess(
    runner: str, module: str, project: Path, args: Sequence[str], *, env: dict | None = None
) -> Observed:
    """List then run with ``python -m module`` (``subunit.run`` or ``testserver``)."""
    strict = module != "subunit.run"
    list_out, list_rc = _python_m(module, project, [*args, "--list"], env)
    run_out, run_rc = _python_m(module, project, list(args), env)
    observed = Observed(runner, (), {}, list_rc=list_rc, run_rc=run_rc)
    try:
        list_events = decode(list_out, strict=strict)
        run_events = decode(run_out, strict=strict)
    except Exception as error:  # python-subunit raises a bare Exception on raw bytes
        observed.problems.append(f"{runner}: not a pure subunit stream: {error!r}")
        list_events = decode(list_out, strict=False)
        run_events = decode(run_out, strict=False)
    _fill(observed, list_events, run_events)
    return observed


def observe_serve(project: Path, args: Sequence[str], *, env: dict | None = None) -> Observed:
    """``list-tests`` then ``run-tests`` (all) on one warm ``--serve`` process."""
    server = ServerProcess(project, *args, env=env)
    try:
        listing = server.request(ListTests("conformance-list"), timeout=RUN_TIMEOUT)
        run = server.request(RunTests("conformance-run"), timeout=RUN_TIMEOUT)
        server.request(Quit("conformance-quit"))
        rc = server.wait()
    finally:
        server.kill()
    observed = Observed(SERVE, (), {}, run_rc=rc)
    if listing.complete.get("status") != "ok":
        observed.problems.append(f"serve: list-tests completed with {listing.complete}")
    status = run.complete.get("status")
    if status != "ok" and not (status == "incomplete" and run.complete.get("not_run")):
        observed.problems.append(f"serve: run-tests completed with {run.complete}")
    try:
        _fill(observed, decode(listing.raw), decode(run.raw))
    except Exception as error:
        observed.problems.append(f"serve: not a pure subunit stream: {error!r}")
    observed.not_run = set(run.complete.get("not_run") or ())
    # serve reports import errors in testserver.hello, not as an attachment to list-tests
    observed.import_errors = bool(server.hello.get("discovery_errors"))
    return observed


def _fill(observed: Observed, list_events: list[dict], run_events: list[dict]) -> None:
    observed.listed = exists_ids(list_events)
    observed.import_errors = any(
        e.get("file_name") == "import errors" and not e.get("test_id") for e in list_events
    )
    observed.outcomes = final_outcomes(run_events, frozenset(observed.listed))
    observed.not_run = not_run_ids(run_events)
    observed.run_exists = len(exists_ids(run_events))
    observed.parser_errors = sum(
        1 for e in run_events if e.get("test_id") == PARSER_ID and e.get("test_status") == "fail"
    )
    observed.raw_output_bytes = sum(
        len(e.get("file_bytes") or b"")
        for e in run_events
        if e.get("file_name") == "stdout" and not e.get("test_id")
    )


def compare(reference: Observed, candidate: Observed) -> list[str]:
    """Every way ``candidate`` differs from ``reference``, beyond the allowed differences."""
    name = candidate.runner
    differences = list(candidate.problems)
    ref_ids, ids = set(reference.listed), set(candidate.listed)
    if len(candidate.listed) != len(ids):
        differences.append(f"{name} listed {len(candidate.listed) - len(ids)} ids twice")
    for label, missing in (
        (f"listed only by {reference.runner}", ref_ids - ids),
        (f"listed only by {name}", ids - ref_ids),
    ):
        if missing:
            differences.append(f"{label}: {_few(missing)}")
    if candidate.list_rc is not None and candidate.list_rc != reference.list_rc:
        differences.append(
            f"--list exit: {reference.runner} {reference.list_rc}, {name} {candidate.list_rc}"
        )
    if candidate.import_errors != reference.import_errors:
        differences.append(f"import errors attachment: {name} {candidate.import_errors}")
    excused = candidate.not_run and candidate.run_rc == 1 and reference.run_rc == 0
    if candidate.not_run & reference.outcomes.keys():
        differences.append(
            f"{name} did not run: {_few(candidate.not_run & reference.outcomes.keys())}"
        )
    if candidate.run_rc is not None and candidate.run_rc != reference.run_rc and not excused:
        differences.append(
            f"run exit: {reference.runner} {reference.run_rc}, {name} {candidate.run_rc}"
        )
    differences += _compare_outcomes(reference, candidate)
    if candidate.run_exists:
        differences.append(f"{name} emitted {candidate.run_exists} exists events in run mode")
    if candidate.parser_errors or candidate.raw_output_bytes:
        differences.append(f"{name} wrote bytes python-subunit could not parse as packets")
    return differences


def _compare_outcomes(reference: Observed, candidate: Observed) -> list[str]:
    name = candidate.runner
    ref, got = reference.outcomes, candidate.outcomes
    differences = []
    if ref.keys() - got.keys():
        differences.append(f"outcome only from {reference.runner}: {_few(ref.keys() - got.keys())}")
    if got.keys() - ref.keys():
        differences.append(f"outcome only from {name}: {_few(got.keys() - ref.keys())}")
    changed = sorted(i for i in ref.keys() & got.keys() if ref[i] != got[i])
    for test_id in changed[:10]:
        differences.append(f"{test_id}: {reference.runner} {ref[test_id]}, {name} {got[test_id]}")
    if len(changed) > 10:
        differences.append(f"... and {len(changed) - 10} more tests with a different outcome")
    return differences


def _few(ids: Iterable[str], limit: int = 5) -> str:
    ordered = sorted(ids)
    shown = ", ".join(ordered[:limit])
    return shown if len(ordered) <= limit else f"{shown} (+{len(ordered) - limit} more)"


def check(project: str | os.PathLike, args: Sequence[str], *, env: dict | None = None) -> Report:
    """Run ``project`` with ``args`` three ways and compare them with ``subunit.run``."""
    root = Path(project).resolve()
    full_env = {**os.environ, **(env or {})}
    reference = observe_subprocess(REFERENCE, "subunit.run", root, args, env=full_env)
    oneshot = observe_subprocess(ONESHOT, "testserver", root, args, env=full_env)
    serve = observe_serve(root, args, env=env)
    differences = compare(reference, oneshot) + compare(reference, serve)
    return Report(root, tuple(args), [reference, oneshot, serve], differences)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the report; exit 0 on agreement, 1 otherwise."""
    parser = argparse.ArgumentParser(
        prog="python tests/conformance.py",
        description="Compare python -m testserver (one-shot and --serve) with python -m "
        "subunit.run on one project.",
    )
    parser.add_argument("project", help="the directory to run in (the tests' top level)")
    parser.add_argument(
        "args", nargs=argparse.REMAINDER, help="load arguments, e.g. discover -t . -s pkg"
    )
    options = parser.parse_args(argv)
    args = options.args[1:] if options.args[:1] == ["--"] else options.args
    report = check(options.project, args)
    print(report.render())
    return 0 if report.agree else 1


if __name__ == "__main__":
    sys.exit(main())
