"""Conformance with ``python -m subunit.run``, on our sample projects and on real suites.

Every case runs :func:`conformance.check`: ``subunit.run``, one-shot ``testserver`` and a warm
``testserver --serve`` must list the same ids and give every test the same outcome (see the
module docstring of tests/conformance.py for the documented differences it allows).

The real suites are the test suites shipped in two pinned PyPI sdists, downloaded once
with ``pip download --no-binary :all: --no-deps``:

- ``fixtures`` 4.3.2: testtools-based tests gathered by a ``load_tests`` function and run by
  name (``tests.test_suite``, as its Makefile does), with a doctest file, ``Popen`` and signal
  based timeout fixtures; needs only testtools, which testserver already depends on;
- ``simplejson`` 3.20.2: plain unittest, found by discovery, with doctests and a test that
  runs a subprocess; needs nothing (its C speedups are not built, so their tests skip).

The downloads are kept in ``build/sdists`` between sessions (``TESTSERVER_SDIST_CACHE`` names
another directory). When the package index cannot be reached the real-suite tests are
skipped, saying so.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conformance import ONESHOT, REFERENCE, SERVE, check, compare, decode, exists_ids
from serverproc import PROJECTS

DEFAULT_SDIST_CACHE = Path(__file__).resolve().parents[2] / "build" / "sdists"
"""Where the downloads are kept between sessions unless ``TESTSERVER_SDIST_CACHE`` says
otherwise (``make clean`` removes ``build/``)."""

PIP_TIMEOUT = 600
"""Seconds for one ``pip download`` of the pinned sdists (it builds their metadata)."""


@dataclass(frozen=True)
class Suite:
    """A pinned sdist and the ``subunit.run`` arguments that run its tests."""

    name: str
    version: str
    args: tuple[str, ...]
    min_tests: int
    k_pattern: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def directory(self) -> str:
        return f"{self.name}-{self.version}"


SUITES = (
    Suite("fixtures", "4.3.2", ("tests.test_suite",), 100, k_pattern="callmany"),
    Suite("simplejson", "3.20.2", ("discover", "-t", ".", "-s", "simplejson/tests"), 100, "decode"),
)


def _download(requirements: list[str], into: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--no-binary",
        ":all:",
        "--no-deps",
        "--retries",
        "1",
        "--timeout",
        "15",
        "-d",
        str(into),
        *requirements,
    ]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.skip(f"pip download {' '.join(requirements)} took over {PIP_TIMEOUT} s")
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if not line.startswith("WARNING")]
        tail = "\n".join(lines[-3:])
        wanted = " ".join(requirements)
        pytest.skip(f"cannot download the pinned sdists (no package index?): {wanted}:\n{tail}")


@pytest.fixture(scope="session")
def sdists(tmp_path_factory) -> dict[str, Path]:
    """The pinned sdists, downloaded once and unpacked: suite name -> source directory."""
    downloads = Path(os.environ.get("TESTSERVER_SDIST_CACHE", DEFAULT_SDIST_CACHE))
    downloads.mkdir(parents=True, exist_ok=True)
    with open(downloads / ".lock", "w") as lock:  # parallel workers download once
        fcntl.flock(lock, fcntl.LOCK_EX)
        wanted = [s for s in SUITES if not (downloads / f"{s.directory}.tar.gz").exists()]
        if wanted:
            _download([s.requirement for s in wanted], downloads)
    unpacked = tmp_path_factory.mktemp("sdists")
    sources = {}
    for suite in SUITES:
        with tarfile.open(downloads / f"{suite.directory}.tar.gz") as archive:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12: refuse odd members
                archive.extractall(unpacked, filter="data")
            else:
                archive.extractall(unpacked)
        sources[suite.name] = unpacked / suite.directory
    return sources


@pytest.mark.heavy
@pytest.mark.parametrize("suite", SUITES, ids=[s.name for s in SUITES])
def test_real_suite_conforms(suite, sdists):
    report = check(sdists[suite.name], suite.args)
    print(report.render())
    assert report.agree, report.render()
    reference = report.by_runner(REFERENCE)
    assert len(reference.listed) >= suite.min_tests, report.render()
    assert reference.list_rc == 0
    for runner in (ONESHOT, SERVE):
        assert report.by_runner(runner).outcomes == reference.outcomes


def _listed(module: str, project: Path, args: tuple[str, ...]) -> tuple[int, set[str]]:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args, "--list"],
        cwd=project,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
    )
    return proc.returncode, set(exists_ids(decode(proc.stdout, strict=module != "subunit.run")))


@pytest.mark.parametrize("suite", SUITES, ids=[s.name for s in SUITES])
def test_real_suite_k_lists_what_subunit_run_lists(suite, sdists):
    """unittest's -k filters the methods its loader collects, whatever the id.

    So ``fixtures``' ``tests.test_suite``, which makes its own loader, ignores -k under
    subunit.run, while discovery in ``simplejson`` honours it: testserver must do the same.
    """
    for pattern in (suite.k_pattern, "*nothing*matches*"):
        args = (*suite.args, "-k", pattern)
        ours = _listed("testserver", sdists[suite.name], args)
        assert ours == _listed("subunit.run", sdists[suite.name], args), pattern


@pytest.mark.parametrize(
    "project, args",
    [
        ("e2e_basic", ("discover", "-t", ".", "-s", "ebasic")),
        ("e2e_basic", ("ebasic.test_outcomes.Outcomes", "ebasic.test_fixtures")),
        ("tools_demo", ("discover", "-t", ".", "-s", "tdemo")),
    ],
    ids=["e2e_basic-discover", "e2e_basic-names", "tools_demo"],
)
def test_sample_project_conforms(project, args):
    report = check(PROJECTS / project, args)
    assert report.agree, report.render()
    assert report.by_runner(REFERENCE).outcomes


def test_a_disagreement_is_reported():
    """The comparison has teeth: a stream that is not pure subunit fails it."""
    report = check(PROJECTS / "e2e_basic", ("ebasic.test_outcomes.Output",))
    assert report.agree
    reference = report.by_runner(REFERENCE)
    assert reference.raw_output_bytes > 0, "subunit.run writes test output as raw bytes"
    assert compare(report.by_runner(ONESHOT), reference), "raw bytes must count as a difference"


def test_the_script_prints_a_report_and_exits_0_on_agreement():
    script = Path(__file__).parent.parent / "conformance.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(PROJECTS / "tools_demo"), "discover", "-s", "tdemo"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "AGREE" in proc.stdout
    assert "subunit.run" in proc.stdout and "serve" in proc.stdout
