"""The Emacs integration (``examples/editors/emacs/testserver.el``), run in ``emacs --batch``.

Each ERT test of ``testserver-test.el`` runs in its own ``emacs --batch -Q`` against a
temporary copy of ``tests/projects/editor_demo``, with real bridges and servers started by
this interpreter (``TESTSERVER_COMMAND``). Without emacs the tests are skipped, except in CI
(``CI`` set), where a missing emacs is a failure: ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from processes import session_processes
from serverproc import copy_project

REPO = Path(__file__).parent.parent.parent
EMACS_DIR = REPO / "examples" / "editors" / "emacs"
ERT_FILE = EMACS_DIR / "testserver-test.el"
PROJECT = Path(__file__).parent.parent / "projects" / "editor_demo"
TIMEOUT = 300

ERT_TESTS = [
    "testserver-test-ids-at-point",
    "testserver-test-run-file-shows-results-with-links",
    "testserver-test-saving-runs-the-file-on-the-same-warm-server",
    "testserver-test-pdb-through-the-minibuffer",
    "testserver-test-quitting-the-prompt-cancels-the-test",
]


@pytest.fixture(scope="module")
def emacs() -> str:
    found = shutil.which("emacs")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("emacs is not installed, and CI must run these tests (.ci/run installs it)")
        pytest.skip("emacs is not installed (apt-get install emacs-nox); CI runs these tests")
    return found


def test_every_ert_test_is_run_here():
    defined = re.findall(r"^\(ert-deftest (\S+)", ERT_FILE.read_text(), re.MULTILINE)
    assert sorted(defined) == sorted(ERT_TESTS)


@pytest.mark.parametrize("name", ERT_TESTS)
def test_emacs(emacs, name, tmp_path):
    project = copy_project(PROJECT, tmp_path, "project")
    (project / "pyproject.toml").write_text("")  # marks the project root for testserver.el
    env = {k: v for k, v in os.environ.items() if k != "PYTHONBREAKPOINT"}
    env.update(
        TESTSERVER_COMMAND=f'"{sys.executable}" -m testserver',
        TESTSERVER_TEST_PROJECT=str(project),
        HOME=str(tmp_path),  # no user init files, no shared state
    )
    process = subprocess.Popen(
        [
            emacs,
            "--batch",
            "-Q",
            "-L",
            str(EMACS_DIR),
            "-l",
            str(EMACS_DIR / "testserver.el"),
            "-l",
            str(ERT_FILE),
            "--eval",
            f'(ert-run-tests-batch-and-exit "^{name}$")',
        ],
        cwd=project,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait()
    text = output.decode("utf-8", "replace")
    assert process.returncode == 0, text
    assert re.search(r"^Ran 1 tests?, 1 results as expected", text, re.MULTILINE), text
    assert session_processes(process.pid) == [], "emacs left processes behind"
