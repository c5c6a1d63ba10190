"""``--shard K/N`` end to end: real ``python -m testserver`` runs on a real project, decoded
with python-subunit's ``ByteStreamToStreamResult``.

The union of the N shards' streams is the full run's stream (the same events, counted; a
fixture's error once, since a fixture's tests stay in one shard), with and without a timing
history; ``--load-list`` keeps the part of a shard it names, as testr needs; bad values are
refused with a clear message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conformance import decode, exists_ids
from serverproc import copy_project

DISCOVER = ("discover", "-t", ".", "-s", "layer_outcomes")
N = 3


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """layer_outcomes, with a marker so that it is its own project root."""
    root = copy_project("layer_outcomes", tmp_path)
    (root / "pyproject.toml").write_text("")
    return root


def oneshot(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "testserver", *args],
        cwd=project,
        capture_output=True,
        timeout=120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def events(output: bytes) -> Counter:
    """Every event with a test id, without its timestamp, counted."""
    return Counter(
        (e["test_id"], e["test_status"], e.get("file_name"), e.get("file_bytes"))
        for e in decode(output)
        if e.get("test_id")
    )


def ran(output: bytes) -> set[str]:
    return {test_id for test_id, status, _, _ in events(output) if status == "inprogress"}


def shards(project: Path, *args: str) -> list[bytes]:
    return [oneshot(project, *DISCOVER, *args, "--shard", f"{k}/{N}").stdout for k in (1, 2, 3)]


def test_the_shards_together_are_the_full_run(project: Path) -> None:
    full = oneshot(project, *DISCOVER).stdout
    parts = shards(project)
    assert sum((events(part) for part in parts), Counter()) == events(full)
    assert all(ran(part) for part in parts)  # each machine has work
    fixture_errors = [key for key in events(full) if key[0].startswith("setUpModule (")]
    assert fixture_errors, "the project's broken setUpModule is reported"
    listed = exists_ids(decode(oneshot(project, *DISCOVER, "--list").stdout))
    shard_lists = [exists_ids(decode(part)) for part in shards(project, "--list")]
    assert sorted(sum(shard_lists, ())) == sorted(listed)
    for part, ids in zip(parts, shard_lists):  # a shard runs what it lists
        assert ran(part) & set(listed) <= set(ids)


def test_a_timing_history_balances_the_shards_by_time(project: Path) -> None:
    listed = exists_ids(decode(oneshot(project, *DISCOVER, "--list").stdout))
    slow = "layer_outcomes.test_outcomes.Outcomes.test_pass"
    assert slow in listed
    history = {test_id: 0.01 for test_id in listed} | {slow: 1000.0}
    (project / ".testserver").mkdir()
    (project / ".testserver" / "times.json").write_text(
        json.dumps({"version": 1, "times": history})
    )
    full = oneshot(project, *DISCOVER).stdout
    parts = shards(project)
    assert sum((events(part) for part in parts), Counter()) == events(full)
    alone = [part for part in parts if slow in ran(part)]
    assert len(alone) == 1 and ran(alone[0]) == {slow}


def test_a_load_list_keeps_what_falls_in_the_shard(project: Path, tmp_path: Path) -> None:
    """testr lists a shard, then runs parts of that list: each part runs whole."""
    second = exists_ids(decode(oneshot(project, *DISCOVER, "--list", "--shard", "2/3").stdout))
    load_list = tmp_path / "ids.txt"
    load_list.write_text("\n".join([*second, "no.such.test"]) + "\n")
    run = ["--load-list", str(load_list), "--shard"]
    whole_shard = events(oneshot(project, *DISCOVER, "--shard", "2/3").stdout)
    assert events(oneshot(project, *DISCOVER, *run, "2/3").stdout) == whole_shard
    first = events(oneshot(project, *DISCOVER, *run, "1/3").stdout)
    assert {key[0] for key in first} == {"no.such.test"}  # an unknown id: shard 1 reports it
    assert not events(oneshot(project, *DISCOVER, *run, "3/3").stdout)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--shard", "4/3"), "--shard: shard 4 of 3 does not exist: K of K/N counts from 1 to N"),
        (("--shard", "three"), "--shard: a shard is K/N, machine K of N counting from 1"),
        (("--serve", "--shard", "1/2"), "--list, --load-list, -k and --shard select tests"),
    ],
)
def test_a_bad_shard_is_refused(project: Path, args: tuple[str, ...], message: str) -> None:
    proc = oneshot(project, *DISCOVER, *args)
    assert proc.returncode == 2
    assert message in proc.stderr.decode()
    assert proc.stdout == b""


# -- testserver run --shard ------------------------------------------------------------------


def run_subunit(project: Path, *args: str) -> subprocess.CompletedProcess:
    return oneshot(project, "run", "--no-daemon", "--format", "subunit", *DISCOVER[1:], *args)


def test_run_shards_together_are_the_full_run_and_it_records_durations(project: Path) -> None:
    full = run_subunit(project)
    history = json.loads((project / ".testserver" / "times.json").read_text())
    listed = exists_ids(decode(oneshot(project, *DISCOVER, "--list").stdout))
    assert set(history["times"]) <= set(listed)
    assert "layer_outcomes.test_outcomes.Outcomes.test_pass" in history["times"]
    parts = [run_subunit(project, "--shard", f"{k}/{N}") for k in (1, 2, 3)]
    assert sum((events(part.stdout) for part in parts), Counter()) == events(full.stdout)
    assert all(module_names(part.stdout) for part in parts)  # each machine has work
    assert sorted(m for part in parts for m in module_names(part.stdout)) == sorted(
        module_names(full.stdout)
    )  # a module's tests on one machine
    assert json.loads((project / ".testserver" / "times.json").read_text()) == history


def module_names(output: bytes) -> set[str]:
    return {test_id.split(".")[1] for test_id in ran(output) if test_id.startswith("layer_")}


def test_run_shard_errors_and_an_empty_shard(project: Path) -> None:
    bad = run_subunit(project, "--shard", "2/1")
    assert bad.returncode == 2
    assert "testserver run: --shard: shard 2 of 1 does not exist" in bad.stderr.decode()
    empty = oneshot(project, "run", "--no-daemon", *DISCOVER[1:], "--shard", "9/9", "test_pass")
    assert empty.returncode == 0
    assert (
        "shard 9/9 has no tests of this selection" in empty.stdout.decode() + empty.stderr.decode()
    )


# -- testr and stestr ------------------------------------------------------------------------

BIN = Path(sys.executable).parent
TESTR_EXIT_STATUS = "process-returncode"
"""testr's own failing test for a backend that exited non-zero (it had failures): not ours."""


def tool_run(tmp_path: Path, tool: str, shard: str | None) -> dict[str, str]:
    """A real ``testr run --parallel`` / ``stestr run`` of a fresh copy of the project on
    testserver's backend, with ``shard``; the final status per test of ``last --subunit``."""
    root = copy_project("layer_outcomes", tmp_path, f"{tool}-{shard or 'all'}".replace("/", "of"))
    env = {k: v for k, v in os.environ.items() if k != "TESTSERVER_SHARD"}
    env["TESTSERVER_NO_DAEMON"] = "1"  # cold: no daemon left behind by the test
    if tool == "testr":
        option = f" --shard {shard}" if shard else ""
        (root / ".testr.conf").write_text(
            f"[DEFAULT]\ntest_command={BIN}/testserver-client discover -t . -s layer_outcomes"
            f"{option} $LISTOPT $IDOPTION\n"
            "test_id_option=--load-list $IDFILE\ntest_list_option=--list\n"
        )
        commands = [["init"], ["run", "--parallel", "--concurrency", "2"]]
    else:
        (root / ".stestr.conf").write_text("[DEFAULT]\ntest_path=layer_outcomes\ntop_dir=./\n")
        env["PYTHON"] = str(BIN / "testserver-stestr-python")
        if shard:
            env["TESTSERVER_SHARD"] = shard
        commands = [["run", "--concurrency", "2"]]
    for args in commands:
        subprocess.run(
            [str(BIN / tool), *args], cwd=root, env=env, capture_output=True, timeout=120
        )
    last = subprocess.run(
        [str(BIN / tool), "last", "--subunit"], cwd=root, env=env, capture_output=True, timeout=120
    )
    return {
        e["test_id"]: e["test_status"]
        for e in decode(last.stdout)
        if e.get("test_id") not in (None, TESTR_EXIT_STATUS)
        and e.get("test_status") in ("success", "fail", "skip", "xfail")
    }


@pytest.mark.parametrize("tool", ["testr", "stestr"])
def test_testr_and_stestr_shards_together_are_the_full_run(tmp_path: Path, tool: str) -> None:
    full = tool_run(tmp_path, tool, None)
    parts = [tool_run(tmp_path, tool, f"{k}/{N}") for k in (1, 2, 3)]
    assert len(full) > 10 and all(parts)
    assert sum(len(part) for part in parts) == len(full)
    assert {k: v for part in parts for k, v in part.items()} == full


def test_the_shard_variable_is_for_one_shot_mode_only(project: Path) -> None:
    env = {**os.environ, "TESTSERVER_SHARD": "2/3"}
    by_option = oneshot(project, *DISCOVER, "--list", "--shard", "2/3").stdout
    by_variable = subprocess.run(
        [sys.executable, "-m", "testserver", *DISCOVER, "--list"],
        cwd=project,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert exists_ids(decode(by_variable.stdout)) == exists_ids(decode(by_option))
    served = subprocess.run(
        [sys.executable, "-m", "testserver", "--serve", *DISCOVER[1:]],
        cwd=project,
        env=env,
        input=b"quit 1 0\n",
        capture_output=True,
        timeout=120,
    )
    assert served.returncode == 0, served.stderr.decode()
    bad = subprocess.run(
        [sys.executable, "-m", "testserver", *DISCOVER],
        cwd=project,
        env={**os.environ, "TESTSERVER_SHARD": "1of2"},
        capture_output=True,
        timeout=120,
    )
    assert bad.returncode == 2 and b"--shard: a shard is K/N" in bad.stderr
