"""Conformance on real public suites: does testserver agree with ``python -m subunit.run``?

For every suite below it runs ``python -m subunit.run`` (the reference), testserver's one-shot
mode with the same arguments, a warm ``python -m testserver --serve`` (``list-tests`` then
``run-tests`` of all) and a second full ``run-tests`` in that same server, decodes each stream
with python-subunit and compares test ids and outcomes test by test. What "agree" means
(subtests folded into their parent, pseudo-tests, explicit not-run records) is written down
in ``bench/_conformance.py``'s docstring and in ``bench/README.md``.

The suites run in their own virtualenv, ``bench/out/conformance/venv``, built on first use
from the Python running this script, with testserver installed from this checkout and the
packages pinned in :data:`PINS`; testtools, python-subunit and fixtures no longer ship their
tests in their wheels, so their pinned sdists are unpacked under ``bench/out/conformance/src``
and run from there. The CPython suites are the ``test`` package of that Python.

    python bench/conformance_public.py                    # every suite
    python bench/conformance_public.py cpython-json fixtures
    python bench/conformance_public.py --list-suites

It prints the exact versions, a table per suite (tests compared; agree/disagree per mode),
every disagreement (id, reference outcome, ours, mode), writes the same to
``bench/out/conformance/result.json`` and exits 1 if any test disagrees.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out" / "conformance"
VENV = OUT / "venv"
SRC = OUT / "src"

PINS = {
    "testtools": "2.9.1",
    "python-subunit": "1.4.6",
    "fixtures": "4.3.2",
    "extras": "1.0.0",
    "testscenarios": "0.5.0",
    "testresources": "2.0.2",
    "hypothesis": "6.170.27",
    "twisted": "26.10.0",
    "pyhamcrest": "2.1.0",
    "cython-test-exception-raiser": "26.4.1",
}
"""Exact versions installed into the suites' virtualenv (twisted's own tests need the last two)."""

SDISTS = {"testtools": "testtools", "python-subunit": "python_subunit", "fixtures": "fixtures"}
"""Packages whose tests ship only in the sdist: PyPI name -> the sdist's directory prefix."""

SUITE_TIMEOUT = 600.0
"""Seconds one list or run of one suite may take before it is killed and reported."""

TEST_TIMEOUT = 120.0
"""testserver's ``--timeout``: a hung test fails after this and the batch goes on."""

TWISTED_MODULES = (
    "twisted.test.test_defer",
    "twisted.test.test_failure",
    "twisted.test.test_task",
    "twisted.test.test_process",
    "twisted.test.test_threads",
    "twisted.test.test_internet",
    "twisted.test.test_log",
    "twisted.internet.test.test_sigchld",
    "twisted.python.test.test_util",
    "twisted.python.test.test_deprecate",
)


@dataclass(frozen=True)
class Suite:
    """A public suite: where it runs (an unpacked sdist, or an empty scratch directory) and
    the load arguments both runners get."""

    name: str
    args: tuple[str, ...]
    exercises: str
    sdist_dir: str | None = None

    def cwd(self) -> Path:
        if self.sdist_dir is None:
            path = OUT / "work" / self.name
            path.mkdir(parents=True, exist_ok=True)
            return path
        return SRC / self.sdist_dir


def _unittest_suite() -> tuple[str, ...]:
    return ("unittest.test.suite",) if sys.version_info < (3, 12) else ("test.test_unittest",)


SUITES = (
    Suite(
        "testtools",
        ("tests.test_suite",),
        "testscenarios, twisted, signals",
        f"testtools-{PINS['testtools']}",
    ),
    Suite(
        "python-subunit",
        ("tests.test_suite",),
        "hypothesis, testscenarios, subprocesses",
        f"python_subunit-{PINS['python-subunit']}/python",
    ),
    Suite("fixtures", ("tests",), "fixtures, doctests", f"fixtures-{PINS['fixtures']}"),
    Suite("testresources", ("testresources.tests.test_suite",), "testresources"),
    Suite(
        "testscenarios",
        ("testscenarios.tests.test_scenarios", "testscenarios.tests.test_testcase"),
        "testscenarios",
    ),
    Suite("twisted", TWISTED_MODULES, "twisted trial TestCases, reactor, processes, threads"),
    Suite("cpython-unittest", _unittest_suite(), "subTest, Ctrl-C handling, setUpClass"),
    Suite("cpython-signal", ("test.test_signal",), "signals"),
    Suite("cpython-threading", ("test.test_threading",), "threads, subprocesses"),
    Suite("cpython-threadsignals", ("test.test_threadsignals",), "signals to the importing pid"),
    Suite("cpython-os", ("test.test_os",), "fds, closerange, fork, environment"),
    Suite("cpython-builtin", ("test.test_builtin",), "input() on a pty, isatty"),
    Suite("cpython-subprocess", ("test.test_subprocess",), "subprocesses, fds"),
    Suite("cpython-datetime", ("test.test_datetime",), "sys.modules games, subTest"),
    Suite("cpython-argparse", ("test.test_argparse",), "many small tests"),
    Suite("cpython-email", ("test.test_email",), "a test package with load_tests"),
    Suite("cpython-json", ("test.test_json",), "load_tests, C and pure variants"),
)


def pip(python: Path, *args: str) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", "--quiet", *args], check=True
    )


def build_venv() -> Path:
    """The suites' virtualenv, (re)built when :data:`PINS` changed; its Python."""
    python = VENV / "bin" / "python"
    stamp = VENV / "pins.json"
    wanted = json.dumps(PINS, sort_keys=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    if not stamp.exists() or stamp.read_text() != wanted:
        pip(python, "install", "-e", str(REPO), *(f"{n}=={v}" for n, v in PINS.items()))
        stamp.write_text(wanted)
    unpack_sdists(python)
    return python


def unpack_sdists(python: Path) -> None:
    """Download and unpack the pinned sdists whose tests are not in the wheels."""
    SRC.mkdir(parents=True, exist_ok=True)
    for name, prefix in SDISTS.items():
        target = SRC / f"{prefix}-{PINS[name]}"
        if target.exists():
            continue
        archive = SRC / f"{prefix}-{PINS[name]}.tar.gz"
        if not archive.exists():
            pip(python, "download", "--no-deps", "--no-binary", ":all:", "-d", str(SRC),
                f"{name}=={PINS[name]}")  # fmt: skip
        with tarfile.open(archive) as tar:
            tar.extractall(SRC, filter="data")


def versions(python: Path) -> str:
    """The Python and every installed distribution, as ``pip freeze`` says."""
    frozen = subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", "freeze", "--all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    frozen = [line for line in frozen if not line.startswith("#")]
    return f"Python {sys.version.split()[0]} ({sys.executable})\n  " + "\n  ".join(frozen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="*", help="suite names (default: all)")
    parser.add_argument("--list-suites", action="store_true", help="print the suites and exit")
    parser.add_argument("--timeout", type=float, default=SUITE_TIMEOUT, help="per suite run")
    parser.add_argument("--test-timeout", type=float, default=TEST_TIMEOUT)
    parser.add_argument("--json", type=Path, default=OUT / "result.json")
    options = parser.parse_args(argv)
    if options.list_suites:
        for suite in SUITES:
            print(f"{suite.name:<20} {' '.join(suite.args)}  [{suite.exercises}]")
        return 0
    unknown = set(options.suites) - {s.name for s in SUITES}
    if unknown:
        parser.error(f"unknown suite(s): {', '.join(sorted(unknown))}; see --list-suites")
    python = build_venv()
    if Path(sys.prefix).resolve() != VENV.resolve():
        # decode and drive the server with the venv's testserver, subunit and testtools
        os.execv(str(python), [str(python), __file__, *(argv or sys.argv[1:])])
    return run(options)


def run(options: argparse.Namespace) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _conformance import render, run_suite

    chosen = [s for s in SUITES if not options.suites or s.name in options.suites]
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(versions(Path(sys.executable)), "\n", flush=True)
    logs = OUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results, start = [], time.perf_counter()
    for suite in chosen:
        print(f"running {suite.name} ({' '.join(suite.args)}) ...", flush=True)
        results.append(
            run_suite(
                suite.name,
                sys.executable,
                suite.cwd(),
                suite.args,
                timeout=options.timeout,
                test_timeout=options.test_timeout,
                logs=logs,
            )
        )
    elapsed = time.perf_counter() - start
    print()
    print(render(results))
    print(f"\n{sum(r.tests for r in results)} tests compared in {elapsed:.0f} s")
    options.json.write_text(
        json.dumps([_as_json(r) for r in results], indent=1, default=sorted) + "\n"
    )
    return 1 if any(r.disagreements for r in results) else 0


def _as_json(result) -> dict:
    return {
        "suite": result.name,
        "tests": result.tests,
        "agree": result.agree,
        "exits": {o.mode: o.exit for o in (result.reference, *result.modes)},
        "seconds": {o.mode: round(o.seconds, 2) for o in (result.reference, *result.modes)},
        "disagreements": [asdict(d) for d in result.disagreements],
    }


if __name__ == "__main__":
    sys.exit(main())
