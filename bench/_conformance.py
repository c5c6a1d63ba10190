"""Compare testserver with ``python -m subunit.run`` test by test, on any importable suite.

Used by ``bench/conformance_public.py`` (the full run on public suites) and by
``tests/test_public_conformance.py`` (its fast CI subset). For one suite, given the Python to
run it with, a working directory and the load arguments (test names, or ``discover ...``):

- the reference: ``python -m subunit.run ARGS --list``, then ``python -m subunit.run ARGS``;
- ``one-shot``: ``python -m testserver --timeout T ARGS --list``, then without ``--list``;
- ``serve``: one ``python -m testserver --serve --timeout T ARGS``: ``list-tests``, then
  ``run-tests`` of everything;
- ``serve-2``: a second ``run-tests`` of everything in that same warm server.

Every stream is decoded with python-subunit (``subunit.ByteStreamToStreamResult`` into a
``testtools.StreamResult`` collector). subunit.run writes test output to stdout as raw bytes,
so its stream is read as testrepository reads it (``non_subunit_name="stdout"``); testserver's
streams are read strictly, and a byte that is not part of a packet is a disagreement.

What "agree" means, per test id (the ids compared are the reference's listed ids plus every
id that has a final status in any stream, subtests folded away):

1. **Subtests are folded into their parent.** An id ``<listed id> <description>`` is a subtest
   of the longest listed id it starts with. testtools (inside subunit.run) reports only failing
   and skipped subtests, and drops the parent's own ``success`` when a subtest was skipped;
   testserver reports every subtest as a test with a ``parent_test_id``. The folded outcome is
   ``fail`` if the parent or any of its subtests failed, else the parent's own final status,
   else ``success`` when it had subtests, else none.
2. **Pseudo-tests compare like tests.** Both runners report an import error
   (``unittest.loader._FailedTest.*``) and a fixture error (``setUpClass (pkg.mod.Class)``,
   ``setUpModule (pkg.mod)``) as failing tests of those ids.
3. **Not-run records.** Where ``setUpClass``/``setUpModule`` failed (or was skipped),
   subunit.run reports the fixture and silently omits the tests it covers; testserver's
   one-shot mode reports each such test as a failing test whose traceback starts
   ``testserver: `` and says ``not run``. That pair agrees when the reference has no outcome
   for the test and reports a ``setUpClass``/``setUpModule`` event whose scope (the class or
   module named in brackets) contains the test.
4. Otherwise the folded outcomes must be equal (``none`` = no final status at all), and the
   listed ids must be the same set (a difference is counted against the listing, once).

The exit statuses and the serve completions are shown, not compared: subunit.run exits 0
even when tests fail, and testserver's exit status is specified in spec/protocol.md.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import subunit
import testtools
from _client import Server, ServerError

from testserver.wire.commands import ListTests, RunTests

FINAL = frozenset({"success", "fail", "skip", "xfail", "uxsuccess"})
"""The test statuses that end a test (``exists`` and ``inprogress`` do not)."""

TRACEBACK_KEEP = 4096
"""Bytes of a failing test's traceback kept: enough to read its first lines in a report."""

NOT_RUN_PREFIX = "testserver: "
"""How a testserver not-run record's traceback starts (it also says ``not run``)."""

FIXTURE = re.compile(r"^(setUpClass|setUpModule) \((?P<scope>[^()]+)\)$")
"""A setUpClass or setUpModule error holder's id; ``scope`` is the class or module."""

NONE = "none"
"""The outcome of a test that got no final status."""

MODES = ("one-shot", "serve", "serve-2")

SHOWN = 25
"""Disagreements printed per suite and mode; the JSON result has them all."""


class Collector(testtools.StreamResult):
    """Keeps each test id's last final status and the start of its traceback."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: dict[str, str] = {}
        self.listed: list[str] = []
        self.tracebacks: dict[str, bytearray] = {}

    def status(self, test_id=None, test_status=None, file_name=None, file_bytes=None, **_):  # type: ignore[override]
        if not test_id:
            return
        if test_status == "exists":
            self.listed.append(test_id)
        elif test_status in FINAL:
            self.statuses[test_id] = test_status
        if file_name == "traceback" and file_bytes:
            kept = self.tracebacks.setdefault(test_id, bytearray())
            kept += bytes(file_bytes)[: TRACEBACK_KEEP - len(kept)]


def decode(data: bytes, *, strict: bool) -> Collector:
    """Decode ``data`` with python-subunit; ``strict`` raises on a byte outside a packet."""
    collector = Collector()
    stream = subunit.ByteStreamToStreamResult(
        io.BytesIO(data), non_subunit_name=None if strict else "stdout"
    )
    stream.run(collector)
    return collector


@dataclass
class Observation:
    """One way of running a suite: its listing and its folded outcomes."""

    mode: str
    listed: frozenset[str] = frozenset()
    statuses: dict[str, str] = field(default_factory=dict)
    tracebacks: dict[str, str] = field(default_factory=dict)
    exit: str = "-"
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def take(self, listing: Collector | None, run: Collector) -> None:
        """Fill in from the decoded listing and run."""
        if listing is not None:
            self.listed = frozenset(listing.listed)
        self.statuses = dict(run.statuses)
        self.tracebacks = {
            k: bytes(v).decode("utf-8", "replace") for k, v in run.tracebacks.items()
        }


def parent_of(test_id: str, listed: frozenset[str]) -> str | None:
    """The longest listed id that ``test_id`` extends with a space, if ``test_id`` is not listed."""
    if test_id in listed:
        return None
    position = test_id.rfind(" ")
    while position > 0:
        if test_id[:position] in listed:
            return test_id[:position]
        position = test_id.rfind(" ", 0, position)
    return None


def fold(statuses: dict[str, str], listed: frozenset[str]) -> dict[str, str]:
    """Outcome per test with subtests folded into their parent (rule 1 of the docstring)."""
    own: dict[str, str] = {}
    parts: dict[str, list[str]] = {}
    for test_id, status in statuses.items():
        parent = parent_of(test_id, listed)
        if parent is None:
            own[test_id] = status
        else:
            parts.setdefault(parent, []).append(status)
    folded = dict(own)
    for parent, subs in parts.items():
        if "fail" in subs or own.get(parent) == "fail":
            folded[parent] = "fail"
        else:
            folded[parent] = own.get(parent, "success")
    return folded


def fixture_scopes(statuses: dict[str, str]) -> list[str]:
    """The classes and modules whose setUpClass/setUpModule the stream reports."""
    return [m["scope"] for m in map(FIXTURE.match, statuses) if m is not None]


def is_not_run(observed: Observation, test_id: str) -> bool:
    """True if testserver reported ``test_id`` as an explicit not-run record."""
    text = observed.tracebacks.get(test_id, "")
    return observed.statuses.get(test_id) == "fail" and (
        text.startswith(NOT_RUN_PREFIX) and "not run" in text
    )


@dataclass(frozen=True)
class Disagreement:
    """One test on which a mode differs from the reference."""

    test_id: str
    reference: str
    ours: str
    mode: str
    detail: str = ""
    """The last line of our traceback for the test, if it has one."""


@dataclass
class Comparison:
    """A suite's reference and modes, compared test by test."""

    name: str
    reference: Observation
    modes: list[Observation]
    tests: int = 0
    agree: dict[str, int] = field(default_factory=dict)
    disagreements: list[Disagreement] = field(default_factory=list)

    def disagree(self, mode: str) -> int:
        """How many test ids ``mode`` disagrees on (listing or outcome)."""
        return len({d.test_id for d in self.disagreements if d.mode == mode})


def compare(name: str, reference: Observation, modes: Sequence[Observation]) -> Comparison:
    """Compare every mode with the reference (rules 1-4 of the docstring)."""
    result = Comparison(name, reference, list(modes))
    ref = fold(reference.statuses, reference.listed)
    scopes = fixture_scopes(reference.statuses)
    ids = set(reference.listed) | set(ref)
    folded = {m.mode: fold(m.statuses, m.listed or reference.listed) for m in modes}
    for outcomes in folded.values():
        ids |= set(outcomes)
    result.tests = len(ids)
    for observed in modes:
        ours = folded[observed.mode]
        wrong = [
            Disagreement(
                i, ref.get(i, NONE), ours.get(i, NONE), observed.mode, _last_line(observed, i)
            )
            for i in sorted(ids)
            if not _agrees(i, ref, ours, observed, scopes)
        ]
        if observed.listed:
            wrong += _listing(reference.listed, observed)
        wrong += [Disagreement("(stream)", "-", p, observed.mode) for p in observed.problems]
        result.disagreements += wrong
        result.agree[observed.mode] = result.tests - len({d.test_id for d in wrong} & ids)
    return result


def _agrees(
    test_id: str, ref: dict[str, str], ours: dict[str, str], observed: Observation, scopes
) -> bool:
    if ref.get(test_id, NONE) == ours.get(test_id, NONE):
        return True
    return (
        test_id not in ref
        and is_not_run(observed, test_id)
        and any(test_id.startswith(scope + ".") for scope in scopes)
    )


def _last_line(observed: Observation, test_id: str) -> str:
    lines = observed.tracebacks.get(test_id, "").strip().splitlines()
    return lines[-1][:200] if lines else ""


def _listing(reference: frozenset[str], observed: Observation) -> list[Disagreement]:
    mode = observed.mode
    only_ref = [
        Disagreement(i, "listed", "absent", mode) for i in sorted(reference - observed.listed)
    ]
    only_ours = [
        Disagreement(i, "absent", "listed", mode) for i in sorted(observed.listed - reference)
    ]
    return only_ref + only_ours


def _python_m(
    python: str, cwd: Path, argv: Sequence[str], timeout: float, stderr: Path
) -> tuple[bytes, str]:
    """Run ``python ARGV`` with stdin closed, stderr to ``stderr``, in a session of its own;
    return stdout and the exit status (or ``timeout``, after killing the session)."""
    with stderr.open("ab") as errors:
        proc = subprocess.Popen(
            [python, *argv],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
            return out, str(proc.returncode)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            return out, f"timeout {timeout:g}s"


def observe_cli(
    mode: str, python: str, cwd: Path, module_argv: Sequence[str], timeout: float, stderr: Path
) -> Observation:
    """List then run with ``python -m ...`` (subunit.run or testserver one-shot)."""
    observed = Observation(mode)
    start = time.perf_counter()
    stderr.unlink(missing_ok=True)
    list_out, _ = _python_m(python, cwd, [*module_argv, "--list"], timeout, stderr)
    run_out, observed.exit = _python_m(python, cwd, module_argv, timeout, stderr)
    observed.seconds = time.perf_counter() - start
    strict = mode != "subunit.run"
    try:
        observed.take(decode(list_out, strict=strict), decode(run_out, strict=strict))
    except Exception as error:  # python-subunit raises a bare Exception on stray bytes
        observed.problems.append(f"not a pure subunit stream: {error}")
        observed.take(decode(list_out, strict=False), decode(run_out, strict=False))
    if observed.exit.startswith("timeout"):
        observed.problems.append(f"run {observed.exit}")
    return observed


def observe_serve(
    python: str, cwd: Path, args: Sequence[str], timeout: float, stderr: Path
) -> list[Observation]:
    """``list-tests`` then two full ``run-tests`` in one warm server: [serve, serve-2]."""
    argv = [python, "-m", "testserver", "--serve", *args]
    first, second = Observation("serve"), Observation("serve-2")
    server = Server(argv, cwd, stderr, env=dict(os.environ))
    try:
        server.wait_hello(timeout)
        listing = decode(server.request(ListTests("list"), timeout).raw, strict=True)
        for observed, command_id in ((first, "run-1"), (second, "run-2")):
            _serve_run(server, observed, listing, command_id, timeout)
    except ServerError as error:
        for observed in (first, second):
            if not observed.exit.startswith("complete") and not observed.problems:
                observed.problems.append(f"server: {str(error).splitlines()[0]}")
    finally:
        rc = server.close()
    second.exit += f", exit {rc}"
    return [first, second]


def _serve_run(
    server: Server, observed: Observation, listing: Collector, command_id: str, timeout: float
) -> None:
    start = time.perf_counter()
    reply = server.request(RunTests(command_id), timeout)
    observed.seconds = time.perf_counter() - start
    observed.exit = f"complete {reply.complete.get('status')}"
    try:
        observed.take(listing, decode(reply.raw, strict=True))
    except Exception as error:
        observed.problems.append(f"not a pure subunit stream: {error}")
        observed.take(listing, decode(reply.raw, strict=False))


def run_suite(
    name: str,
    python: str,
    cwd: Path,
    args: Sequence[str],
    *,
    timeout: float,
    test_timeout: float,
    logs: Path,
) -> Comparison:
    """Run one suite the four ways and compare them."""
    ours = ["--timeout", f"{test_timeout:g}", *args]
    reference = observe_cli(
        "subunit.run",
        python,
        cwd,
        ["-m", "subunit.run", *args],
        timeout,
        logs / f"{name}.ref.stderr",
    )
    oneshot = observe_cli(
        "one-shot",
        python,
        cwd,
        ["-m", "testserver", *ours],
        timeout,
        logs / f"{name}.oneshot.stderr",
    )
    serve = observe_serve(python, cwd, ours, timeout, logs / f"{name}.serve.stderr")
    return compare(name, reference, [oneshot, *serve])


def render(results: Iterable[Comparison]) -> str:
    """The per-suite table, then every disagreement."""
    results = list(results)
    head = f"{'suite':<24}{'tests':>7}" + "".join(f"{m + ' ok/bad':>18}" for m in MODES)
    lines = [head, "-" * len(head)]
    for r in results:
        cells = "".join(f"{f'{r.agree.get(m, 0)}/{r.disagree(m)}':>18}" for m in MODES)
        lines.append(f"{r.name:<24}{r.tests:>7}{cells}")
    total = sum(r.tests for r in results)
    cells = "".join(
        f"{f'{sum(r.agree.get(m, 0) for r in results)}/{sum(r.disagree(m) for r in results)}':>18}"
        for m in MODES
    )
    lines += ["-" * len(head), f"{'total':<24}{total:>7}{cells}", ""]
    lines.append("exits and times (s): reference | one-shot | serve | serve-2")
    for r in results:
        parts = [f"{o.exit} {o.seconds:.1f}" for o in (r.reference, *r.modes)]
        lines.append(f"  {r.name:<22} " + " | ".join(parts))
    lines.append("")
    for r in results:
        for mode in MODES:
            lines += _disagreement_lines(r, mode)
    return "\n".join(lines)


def _disagreement_lines(result: Comparison, mode: str) -> list[str]:
    found = [d for d in result.disagreements if d.mode == mode]
    lines = []
    for d in found[:SHOWN]:
        lines.append(
            f"DISAGREE {result.name}: {d.test_id}: reference {d.reference}, ours {d.ours} ({mode})"
        )
        if d.detail:
            lines.append(f"    {d.detail}")
    if len(found) > SHOWN:
        lines.append(f"DISAGREE {result.name}: ... and {len(found) - SHOWN} more ({mode})")
    return lines
