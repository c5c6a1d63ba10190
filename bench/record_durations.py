"""Record each test's duration in real public suites, for ``bench/bench_schedule.py``.

    python bench/record_durations.py                       # every suite, about 3.5 minutes
    python bench/record_durations.py cpython-json fixtures  # some suites
    python bench/record_durations.py --output FILE

For every suite ``bench/conformance_public.py`` knows (same virtualenv, pinned versions,
working directories and load arguments), it runs the reference runner, ``python -m
subunit.run ARGS``, decodes the stream with python-subunit and takes each test's duration
from its ``inprogress`` to its final status timestamp. A test's fixture groups (the tests
of a class with ``setUpClass``, of a module with ``setUpModule``) are asked of testserver's
own :func:`testserver.engine.fixturegroups.fixture_groups`, loading the same names in a
separate process, so the simulation keeps them together as the real pool does.

The output, ``bench/data/durations-public.json.gz`` by default, is gzipped JSON::

    {"header": {"command", "date", "python", "machine", "versions", "suites": {name:
                {"args", "tests", "seconds" (run, wall), "recorded" (sum of durations)}},
                "note"},
     "durations": {test id: seconds}, "groups": {test id: group key}}

Time spent outside any test (imports, ``setUpClass``, ``setUpModule``) is not in a test's
duration: compare a suite's ``recorded`` with its ``seconds``. The machine was shared and
loaded when the shipped file was made, so durations are those of a busy 2-core machine.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import conformance_public as conformance

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "data" / "durations-public.json.gz"

DIGITS = 6
"""Decimal places kept per duration (microseconds, as the subunit timestamps): smaller file."""

GROUPS_SCRIPT = """
import json, sys
from testserver.engine.fixturegroups import fixture_groups
from testserver.engine.loading import LoadSpec, load
print(json.dumps(fixture_groups(load(LoadSpec(names=tuple(sys.argv[1:]), discover=False)))))
"""
"""Run in a suite's directory with its load arguments: prints id -> fixture group key."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="*", help="suite names (default: all)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--timeout", type=float, default=conformance.SUITE_TIMEOUT)
    options = parser.parse_args(argv)
    unknown = set(options.suites) - {s.name for s in conformance.SUITES}
    if unknown:
        parser.error(f"unknown suite(s): {', '.join(sorted(unknown))}; see --list-suites")
    python = conformance.build_venv()
    if Path(sys.prefix).resolve() != conformance.VENV.resolve():
        # decode with the venv's python-subunit and testtools
        os.execv(str(python), [str(python), __file__, *(argv or sys.argv[1:])])
    return record(options)


def record(options: argparse.Namespace) -> int:
    chosen = [s for s in conformance.SUITES if not options.suites or s.name in options.suites]
    durations: dict[str, float] = {}
    groups: dict[str, str] = {}
    suites: dict[str, dict] = {}
    start = time.perf_counter()
    for suite in chosen:
        print(f"running {suite.name} ({' '.join(suite.args)}) ...", flush=True)
        began = time.perf_counter()
        stream = _run(["-m", "subunit.run", *suite.args], suite.cwd(), options.timeout)
        seconds = time.perf_counter() - began
        measured = test_durations(stream)
        clashes = set(measured) & set(durations)
        if clashes:
            raise SystemExit(f"{suite.name}: ids already recorded: {sorted(clashes)[:3]}")
        durations.update(measured)
        found = json.loads(_run(["-c", GROUPS_SCRIPT, *suite.args], suite.cwd(), options.timeout))
        groups.update({i: key for i, key in found.items() if i in measured})
        suites[suite.name] = {
            "args": list(suite.args),
            "tests": len(measured),
            "seconds": round(seconds, 2),
            "recorded": round(sum(measured.values()), 2),
        }
        print(f"  {len(measured)} tests, {sum(measured.values()):.1f} s of {seconds:.1f} s")
    header = {
        "command": " ".join(["python", "bench/record_durations.py", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version,
        "machine": f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs",
        "versions": conformance.versions(Path(sys.executable)).splitlines(),
        "suites": suites,
        "note": "durations: inprogress to final timestamps of python -m subunit.run; "
        "time outside tests (imports, class and module fixtures) is not counted",
    }
    write(options.output, header, durations, groups)
    print(
        f"{len(durations)} tests, {sum(durations.values()):.1f} s, in {len(chosen)} suites, "
        f"recorded in {time.perf_counter() - start:.0f} s: {options.output} "
        f"({options.output.stat().st_size // 1024} KiB)"
    )
    return 0


def _run(argv: list[str], cwd: Path, timeout: float) -> bytes:
    """stdout of ``python ARGV`` in ``cwd`` (stdin closed, stderr dropped)."""
    return subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    ).stdout


def test_durations(stream: bytes) -> dict[str, float]:
    """Id -> seconds from ``inprogress`` to the final status, for each test of a subunit
    v2 stream that has both (read as testrepository does: other bytes are test output)."""
    import subunit
    import testtools
    from _conformance import FINAL

    started: dict[str, datetime.datetime] = {}
    durations: dict[str, float] = {}

    class Timer(testtools.StreamResult):
        def status(self, test_id=None, test_status=None, timestamp=None, **_):  # type: ignore[override]
            if not test_id or timestamp is None:
                return
            if test_status == "inprogress":
                started[test_id] = timestamp
            elif test_status in FINAL and test_id in started:
                seconds = (timestamp - started.pop(test_id)).total_seconds()
                durations[test_id] = round(max(0.0, seconds), DIGITS)

    subunit.ByteStreamToStreamResult(io.BytesIO(stream), non_subunit_name="stdout").run(Timer())
    return durations


def write(path: Path, header: dict, durations: dict[str, float], groups: dict[str, str]) -> None:
    """The gzipped JSON described in the module docstring (no mtime: same input, same bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"header": header, "durations": durations, "groups": groups}
    text = json.dumps(data, separators=(",", ":")).encode()
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
        out.write(text)


if __name__ == "__main__":
    sys.exit(main())
