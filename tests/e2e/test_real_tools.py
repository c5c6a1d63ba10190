"""The real tools consume testserver's output: testr, stestr and python-subunit's filters.

A copy of tests/projects/tools_demo (10 tests: 5 pass, 1 fail, 1 error, 1 skip, 1 expected
failure, 1 unexpected success; one test prints) is run by testrepository and stestr with
testserver as their backend, and testserver's streams (one-shot output, and the bytes of a
``--serve`` session) are piped into ``subunit2pyunit``, ``subunit-stats``, ``subunit-ls`` and
``subunit2junitxml``. Wherever it makes sense the same is done with ``python -m subunit.run``
as the backend, and the tools must print the same counts.

The tools are the console scripts installed next to ``sys.executable`` by the ``[test]``
extra; a missing one skips its tests with the reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from serverproc import ServerProcess, copy_project, run_oneshot

from testserver.wire.commands import Quit, RunTests

BIN = Path(sys.executable).parent
TOOL_TIMEOUT = 120

DEMO_ARGS = ("discover", "-t", ".", "-s", "tdemo")
ALPHA, BETA = "tdemo.test_alpha.Alpha.", "tdemo.test_beta.Beta."
DEMO_IDS = {
    *(ALPHA + n for n in ("test_pass_1", "test_pass_2", "test_fail", "test_skip", "test_output")),
    *(
        BETA + n
        for n in ("test_pass_3", "test_pass_4", "test_error", "test_xfail", "test_uxsuccess")
    ),
}
FAILING = {ALPHA + "test_fail", BETA + "test_error"}

TESTR_CONF = """[DEFAULT]
test_command=${{PYTHON:-python}} -m {module} discover -t . -s tdemo $LISTOPT $IDOPTION
test_id_option=--load-list $IDFILE
test_list_option=--list
"""

STESTR_CONF = """[DEFAULT]
test_path=./tdemo
top_dir=./
"""

SHIM = """#!/bin/sh
# stestr runs "$PYTHON -m stestr.subunit_runner.run discover -t TOP PATH [--list|--load-list F]":
# log the arguments, drop the runner module and hand the rest to testserver.
printf '%s\\n' "$*" >> "{log}"
if [ "$1" = "-m" ] && [ "$2" = "stestr.subunit_runner.run" ]; then shift 2; fi
exec "{python}" -m testserver "$@"
"""


def tool(name: str) -> str:
    """The console script ``name`` next to ``sys.executable``, or skip."""
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed next to {sys.executable} (pip install '.[test]')")
    return str(path)


def run_tool(argv: list[str], cwd: Path | None = None, *, data: bytes = b"", env=None):
    """Run a tool with ``data`` on stdin; stdout and stderr are merged, as a person sees them."""
    return subprocess.run(
        argv,
        cwd=cwd,
        input=data,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=TOOL_TIMEOUT,
        env=env,
    )


def launcher_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHON": sys.executable, **extra}


def oneshot_bytes(project: Path | str, *args: str, module: str = "testserver") -> bytes:
    proc = run_oneshot(project, *args, module=module)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def serve_bytes(project: str, *args: str) -> bytes:
    """The bytes a warm server wrote for one ``run-tests`` of every test."""
    server = ServerProcess(project, *args)
    try:
        transcript = server.request(RunTests("all"))
        server.request(Quit("bye"))
        assert server.wait() == 0
    finally:
        server.kill()
    return transcript.raw


# -- testrepository ------------------------------------------------------------------------


def summarise_testr(output: str) -> dict[str, int]:
    """``Ran N tests`` and the counts of ``FAILED (id=0, failures=2, skips=1)``."""
    counts = {"ran": int(re.search(r"^Ran (\d+) tests?", output, re.M).group(1))}
    verdict = re.search(r"^(?:FAILED|OK|PASSED) \((.*)\)$", output, re.M)
    for item in verdict.group(1).split(", ") if verdict else ():
        key, _, value = item.partition("=")
        if key != "id":
            counts[key] = int(value)
    return counts


def make_testr_project(tmp_path: Path, module: str, name: str = "tools_demo") -> Path:
    project = copy_project(name, tmp_path, f"{name}-{module}")
    (project / ".testr.conf").write_text(TESTR_CONF.format(module=module), encoding="utf-8")
    init = run_tool([tool("testr"), "init"], project, env=launcher_env())
    assert init.returncode == 0, init.stdout.decode()
    return project


def test_testr_run_counts_what_subunit_run_counts(tmp_path):
    summaries = {}
    for module in ("testserver", "subunit.run"):
        project = make_testr_project(tmp_path, module)
        run = run_tool([tool("testr"), "run"], project, env=launcher_env())
        output = run.stdout.decode()
        assert run.returncode == 1, output  # testr's status for a run with failures
        summaries[module] = summarise_testr(output)
        failing = run_tool([tool("testr"), "failing", "--list"], project, env=launcher_env())
        assert set(failing.stdout.decode().split()) == FAILING
    assert summaries["testserver"] == {"ran": 10, "failures": 2, "skips": 1}
    assert summaries["testserver"] == summaries["subunit.run"]


def test_testr_parallel_lists_then_runs_two_load_lists(tmp_path):
    project = make_testr_project(tmp_path, "testserver")
    run = run_tool(
        [tool("testr"), "run", "--parallel", "--concurrency", "2"], project, env=launcher_env()
    )
    output = run.stdout.decode()
    assert run.returncode == 1, output
    assert summarise_testr(output) == {"ran": 10, "failures": 2, "skips": 1}
    commands = [line for line in output.splitlines() if line.startswith("running=")]
    assert len(commands) == 3, output
    assert commands[0].rstrip().endswith("--list")
    assert all("--load-list " in c for c in commands[1:])
    last = run_tool([tool("testr"), "last", "--subunit"], project, env=launcher_env())
    stats = run_tool([tool("subunit-stats")], data=last.stdout).stdout.decode()
    assert "Total tests:      10" in stats
    assert "worker-0" in stats and "worker-1" in stats
    listed = run_tool([tool("subunit-ls"), "--no-passthrough"], data=last.stdout)
    assert set(listed.stdout.decode().splitlines()) == DEMO_IDS


def test_testr_parallel_refuses_a_listing_with_import_errors_as_with_subunit_run(tmp_path):
    outputs = {}
    for module in ("testserver", "subunit.run"):
        project = make_testr_project(tmp_path, module, name="e2e_basic")
        conf = project / ".testr.conf"
        conf.write_text(conf.read_text().replace("tdemo", "ebasic"), encoding="utf-8")
        run = run_tool(
            [tool("testr"), "run", "--parallel", "--concurrency", "2"], project, env=launcher_env()
        )
        outputs[module] = (run.returncode, run.stdout.decode())
    for module, (returncode, output) in outputs.items():
        assert returncode == outputs["subunit.run"][0] != 0, (module, output)
        assert "Non-zero exit code (2) from test listing" in output, (module, output)
        assert "this_module_does_not_exist" in output, (module, output)


# -- stestr --------------------------------------------------------------------------------

STESTR_TOTALS = {
    "Passed": 5,
    "Skipped": 1,
    "Expected Fail": 1,
    "Unexpected Success": 1,
    "Failed": 2,
}


def stestr_totals(output: str) -> dict[str, int]:
    """``Ran: N tests`` and the `` - Passed: N`` lines of stestr's Totals section."""
    totals = {"Ran": int(re.search(r"^Ran: (\d+) tests", output, re.M).group(1))}
    section = output[output.index("Totals") :]
    for key, value in re.findall(r"^ - ([A-Za-z ]+): (\d+)$", section, re.M):
        totals[key] = int(value)
    return totals


def stestr_project(tmp_path: Path, name: str) -> Path:
    project = copy_project("tools_demo", tmp_path, name)
    (project / ".stestr.conf").write_text(STESTR_CONF, encoding="utf-8")
    return project


@pytest.mark.parametrize("mode", [["--concurrency", "2"], ["--serial"]], ids=["parallel", "serial"])
def test_stestr_runs_testserver_through_a_python_shim(tmp_path, mode):
    stestr = tool("stestr")
    project = stestr_project(tmp_path, "ours")
    log = tmp_path / "shim.log"
    shim = tmp_path / "python-shim"
    shim.write_text(SHIM.format(log=log, python=sys.executable), encoding="utf-8")
    shim.chmod(0o755)
    run = run_tool([stestr, "run", *mode], project, env=launcher_env(PYTHON=str(shim)))
    output = run.stdout.decode()
    calls = log.read_text().splitlines() if log.exists() else []
    assert calls and all(
        c.startswith("-m stestr.subunit_runner.run discover -t ./ ./tdemo") for c in calls
    ), calls
    assert "usage:" not in output, output  # the shim's argv reached testserver intact
    assert run.returncode == 1, output  # failures, not a discovery or runner error
    totals = stestr_totals(output)
    assert totals == {"Ran": 10, **STESTR_TOTALS}, output
    if mode == ["--serial"]:
        assert len(calls) == 1 and "--load-list" not in calls[0]
    else:
        assert calls[0].endswith("--list")
        assert len([c for c in calls if "--load-list" in c]) == 2

    reference_env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    reference = run_tool([stestr, "run", *mode], stestr_project(tmp_path, "ref"), env=reference_env)
    assert stestr_totals(reference.stdout.decode()) == totals


# -- python-subunit's filters --------------------------------------------------------------


def consumer_figures(stream: bytes, tmp_path: Path) -> dict[str, object]:
    """What each python-subunit filter reports about ``stream``."""
    stats = run_tool([tool("subunit-stats"), "--no-passthrough"], data=stream).stdout.decode()
    figures: dict[str, object] = {
        key: int(value)
        for key, value in re.findall(r"^(Total|Passed|Failed|Skipped) tests:\s+(\d+)$", stats, re.M)
    }
    listed = run_tool([tool("subunit-ls"), "--no-passthrough"], data=stream).stdout.decode()
    figures["ls"] = set(listed.splitlines())
    pyunit = run_tool([tool("subunit2pyunit"), "--no-passthrough"], data=stream).stdout.decode()
    figures["pyunit ran"] = re.search(r"^Ran (\d+) tests?", pyunit, re.M).group(1)
    figures["pyunit verdict"] = re.search(r"^(OK|FAILED)\b.*$", pyunit, re.M).group(0)
    xml_file = tmp_path / f"junit-{len(list(tmp_path.glob('junit-*')))}.xml"
    junit = run_tool([tool("subunit2junitxml"), "-o", str(xml_file)], data=stream)
    assert junit.returncode in (0, 1), junit.stdout.decode()
    suite = ElementTree.parse(xml_file).getroot()
    figures["junit"] = {k: suite.get(k) for k in ("tests", "failures", "errors")}
    figures["junit cases"] = len(suite.findall("testcase"))
    return figures


DEMO_FIGURES = {
    "Total": 10,
    "Passed": 7,  # python-subunit counts xfail and uxsuccess as passed
    "Failed": 2,
    "Skipped": 1,
    "ls": DEMO_IDS,
    "pyunit ran": "10",
    "pyunit verdict": (
        "FAILED (failures=2, skipped=1, expected failures=1, unexpected successes=1)"
    ),
    "junit": {"tests": "10", "failures": "3", "errors": "0"},  # junitxml: uxsuccess fails
    "junit cases": 10,
}


def test_filters_read_oneshot_output_as_they_read_subunit_run(tmp_path):
    ours = consumer_figures(oneshot_bytes("tools_demo", *DEMO_ARGS), tmp_path)
    assert ours == DEMO_FIGURES
    reference = oneshot_bytes("tools_demo", *DEMO_ARGS, module="subunit.run")
    assert consumer_figures(reference, tmp_path) == ours


def test_filters_read_a_serve_session_transcript(tmp_path):
    assert consumer_figures(serve_bytes("tools_demo", *DEMO_ARGS), tmp_path) == DEMO_FIGURES


def test_filters_without_options_print_the_control_events_of_a_serve_transcript():
    """By default the filters pass global attachments through: control events show up.

    A documented consequence of control events being global file packets: pipe a serve
    transcript through ``--no-passthrough`` (or strip control events) for clean output.
    """
    stream = serve_bytes("tools_demo", *DEMO_ARGS)
    stats = run_tool([tool("subunit-stats")], data=stream).stdout.decode()
    assert '"command":"run-tests"' in stats
    assert "Total tests:      10" in stats


def test_junitxml_is_clean_for_oneshot_output_without_any_option():
    """Unlike subunit.run, nothing raw reaches stdout, so the XML on stdout parses."""
    stream = oneshot_bytes("tools_demo", *DEMO_ARGS)
    xml = run_tool([tool("subunit2junitxml")], data=stream).stdout
    assert ElementTree.fromstring(xml).get("tests") == "10"
    reference = oneshot_bytes("tools_demo", *DEMO_ARGS, module="subunit.run")
    with pytest.raises(ElementTree.ParseError):
        ElementTree.fromstring(run_tool([tool("subunit2junitxml")], data=reference).stdout)


@pytest.mark.parametrize("version", ["2.1", "2.0"])
def test_filters_count_subtests_as_tests(tmp_path, version):
    """Subtests are tests of their own to every filter (spec 5.3); 2.1's field is ignored.

    ``tools_subtests`` has 2 tests with 3 + 2 subtests, one of which fails: the filters see
    7 tests, 2 failed (the subtest and its parent), where subunit.run's stream has 2 and 1.
    """
    args = ("discover", "-t", ".", "-s", "tsub", "--subunit-version", version)
    ours = consumer_figures(oneshot_bytes("tools_subtests", *args), tmp_path)
    assert (ours["Total"], ours["Passed"], ours["Failed"]) == (7, 5, 2)
    assert ours["junit"] == {"tests": "7", "failures": "2", "errors": "0"}
    assert "tsub.test_sub.Loops.test_one_fails (i=1)" in ours["ls"]
    reference = oneshot_bytes("tools_subtests", *args[:5], module="subunit.run")
    theirs = consumer_figures(reference, tmp_path)
    assert (theirs["Total"], theirs["Passed"], theirs["Failed"]) == (2, 1, 1)
