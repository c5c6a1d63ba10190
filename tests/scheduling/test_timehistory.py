"""The timing history (testserver.scheduling.timehistory): ours, testr's and stestr's.

testr's and stestr's files are written here as the tools write them (testrepository
through ``dbm``, stestr through ``dbm.dumb``; test id to ``str(seconds)``), and read back;
anything missing or corrupt reads as no history.
"""

from __future__ import annotations

import dbm
import dbm.dumb
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from serverproc import copy_project

from testserver.scheduling import timehistory
from testserver.scheduling.timehistory import (
    FORMAT_VERSION,
    HISTORY_FILE,
    project_times,
    read_dbm_times,
    read_history,
    record,
)


def write_testr(root: Path, times: dict[str, float]) -> None:
    (root / ".testrepository").mkdir()
    with dbm.open(str(root / ".testrepository" / "times.dbm"), "c") as db:
        for key, value in times.items():
            db[key.encode("utf8")] = str(value)


def write_stestr(root: Path, times: dict[str, float]) -> None:
    (root / ".stestr").mkdir()
    with dbm.dumb.open(str(root / ".stestr" / "times.dbm"), "c") as db:
        for key, value in times.items():
            db[key] = str(value)


def test_record_then_read_back(tmp_path: Path) -> None:
    record(str(tmp_path), {"a.T.test_x": 0.25, "a.T.test_y": 3.0})
    record(str(tmp_path), {"a.T.test_x": 0.5})
    assert project_times(str(tmp_path)) == {"a.T.test_x": 0.5, "a.T.test_y": 3.0}
    data = json.loads((tmp_path / HISTORY_FILE).read_text())
    assert data == {"version": FORMAT_VERSION, "times": {"a.T.test_y": 3.0, "a.T.test_x": 0.5}}
    assert (tmp_path / ".testserver" / ".gitignore").read_text() == "*\n"
    assert sorted(os.listdir(tmp_path / ".testserver")) == [".gitignore", "times.json"]


def test_record_keeps_the_most_recent_entries(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(timehistory, "MAX_ENTRIES", 3)
    record(str(tmp_path), {"a": 1.0, "b": 1.0, "c": 1.0})
    record(str(tmp_path), {"a": 2.0, "d": 1.0})
    assert read_history(str(tmp_path / HISTORY_FILE)) == {"c": 1.0, "a": 2.0, "d": 1.0}


def test_record_ignores_what_is_not_a_duration(tmp_path: Path) -> None:
    record(str(tmp_path), {"a": -1.0, "b": float("nan"), "c": float("inf"), "d": 2})
    assert read_history(str(tmp_path / HISTORY_FILE)) == {"d": 2.0}


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{not json",
        "[]",
        '{"version": 99, "times": {"a": 1}}',
        '{"version": 1, "times": []}',
        '{"version": 1, "times": {"a": "slow", "b": null, "c": -3, "d": true}}',
    ],
)
def test_a_corrupt_or_foreign_history_reads_as_none(tmp_path: Path, content: str) -> None:
    path = tmp_path / "times.json"
    path.write_text(content)
    assert read_history(str(path)) == {}
    record(str(tmp_path), {"x": 1.0})  # and a run replaces it
    assert read_history(str(tmp_path / HISTORY_FILE)) == {"x": 1.0}


def test_a_read_only_project_keeps_running(tmp_path: Path) -> None:
    (tmp_path / ".testserver").mkdir()
    (tmp_path / ".testserver").chmod(0o500)
    try:
        record(str(tmp_path), {"a": 1.0})  # no exception
    finally:
        (tmp_path / ".testserver").chmod(0o700)


def test_testr_and_stestr_histories_are_read(tmp_path: Path) -> None:
    write_testr(tmp_path, {"p.T.test_a": 1.5, "p.T.test_b": 2.0, "p.T.test_c": 9.0})
    write_stestr(tmp_path, {"p.T.test_b": 4.0, "p.T.test_é": 0.5})
    record(str(tmp_path), {"p.T.test_c": 3.0})
    assert project_times(str(tmp_path)) == {
        "p.T.test_a": 1.5,
        "p.T.test_b": 4.0,  # stestr over testr
        "p.T.test_é": 0.5,
        "p.T.test_c": 3.0,  # ours over both
    }


@pytest.mark.parametrize("tool", ["testr", "stestr"])
def test_what_the_real_tools_write_is_read(tmp_path: Path, tool: str) -> None:
    """A real ``testr run`` / ``stestr run`` of a small project, then its history read."""
    project = copy_project("cli_pass", tmp_path)
    command = f"{sys.executable} -m subunit.run discover -t . -s cpass"
    if tool == "testr":
        (project / ".testr.conf").write_text(
            f"[DEFAULT]\ntest_command={command} $LISTOPT $IDOPTION\n"
            "test_id_option=--load-list $IDFILE\ntest_list_option=--list\n"
        )
        commands = [["init"], ["run"]]
    else:
        (project / ".stestr.conf").write_text("[DEFAULT]\ntest_path=cpass\ntop_dir=./\n")
        commands = [["run"]]
    for args in commands:
        subprocess.run(
            [str(Path(sys.executable).parent / tool), *args],
            cwd=project,
            capture_output=True,
            timeout=120,
            check=True,
        )
    times = project_times(str(project))
    assert set(times) == {
        f"cpass.test_ok.Ok.test_{name}" for name in ("one", "two", "three", "later")
    }
    assert all(0 <= seconds < 60 for seconds in times.values())


@pytest.mark.parametrize("damage", ["garbage", "missing-dat"])
def test_corrupt_tool_files_read_as_none(tmp_path: Path, damage: str) -> None:
    write_stestr(tmp_path, {"a": 1.0})
    base = tmp_path / ".stestr" / "times.dbm"
    if damage == "garbage":
        Path(f"{base}.dir").write_text("this is not a dumb dbm directory (")
    else:
        os.unlink(f"{base}.dat")
    assert read_dbm_times(str(base)) == {}
    assert read_dbm_times(str(tmp_path / "nowhere" / "times.dbm")) == {}
