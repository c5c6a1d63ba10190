"""The git-history replay (``bench/replay_history.py``) on a small synthetic history.

The test makes a git repository whose commits edit a test module, add data files that
another test module turns into tests at import, edit a data file read at import, delete the
data directory, and add a test module; the replay checks each commit out into the tree one
warm ``--serve`` process watches and compares it with fresh processes. Every commit must
agree, and the server must have reloaded where the tree changed what a fresh process loads.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = str(Path(__file__).resolve().parent.parent.parent / "bench")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

from replay_history import format_row, replay, summary  # noqa: E402

CASES_TEST = """\
import os
import unittest

HERE = os.path.dirname(__file__)
CASES = os.path.join(HERE, "cases")
with open(os.path.join(HERE, "limit.txt")) as handle:
    LIMIT = int(handle.read())


class CaseTests(unittest.TestCase):
    pass


def _make(path):
    def test(self):
        with open(path) as handle:
            self.assertLessEqual(len(handle.read().strip()), LIMIT)

    return test


for _name in sorted(os.listdir(CASES)) if os.path.isdir(CASES) else []:
    setattr(CaseTests, "test_" + _name.split(".")[0], _make(os.path.join(CASES, _name)))
"""

PLAIN_TEST = """\
import unittest


class PlainTests(unittest.TestCase):
    def test_value(self):
        self.assertEqual(VALUE, 1)


VALUE = 1
"""

# (commit message, {path: content or None to delete the file or directory})
HISTORY: list[tuple[str, dict[str, str | None]]] = [
    (
        "initial",
        {
            "proj/__init__.py": "",
            "proj/test_plain.py": PLAIN_TEST,
            "proj/test_cases.py": CASES_TEST,
            "proj/limit.txt": "5\n",
            "proj/cases/a.txt": "aa\n",
        },
    ),
    ("add two cases", {"proj/cases/b.txt": "bbb\n", "proj/cases/c.txt": "toolong\n"}),
    ("raise the limit read at import", {"proj/limit.txt": "9\n"}),
    ("break the plain test", {"proj/test_plain.py": PLAIN_TEST.replace("VALUE = 1", "VALUE = 2")}),
    ("delete the cases directory", {"proj/cases": None}),
    ("add a module", {"proj/test_more.py": PLAIN_TEST.replace("PlainTests", "MoreTests")}),
    ("bring one case back", {"proj/cases/d.txt": "d\n"}),
]


def make_history(repo: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)

    repo.mkdir()
    git("init", "--quiet")
    for message, changes in HISTORY:
        for rel, content in changes.items():
            path = repo / rel
            if content is None:
                git("rm", "-r", "--quiet", rel)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            git("add", rel)
        git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", message)


@pytest.mark.heavy
def test_a_replayed_history_agrees_with_fresh_processes_at_every_commit(tmp_path: Path) -> None:
    if subprocess.run(["git", "--version"], capture_output=True).returncode != 0:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    make_history(repo)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = io.StringIO()
    env = dict(os.environ)
    rows = replay(
        repo,
        ["discover", "-t", ".", "-s", "proj"],
        commits=len(HISTORY),
        scratch=scratch,
        env=env,
        out=out,
    )
    print(out.getvalue() + summary(rows))
    assert [row.subject for row in rows] == [message for message, _ in HISTORY]
    assert all(row.agree for row in rows), summary(rows)
    assert [row.tests for row in rows] == [2, 4, 4, 4, 1, 2, 3]
    # the first command may reload: the files were written just before the server started
    assert [row.how for row in rows[1:]] == ["in place"] * 6
    assert "DISAGREE" not in "\n".join(format_row(n, r) for n, r in enumerate(rows, 1))
