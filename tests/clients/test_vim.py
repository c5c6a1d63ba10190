"""The Vim integration (``examples/editors/vim/testserver.vim``), run in ``vim -Nu NONE -es``.

A Vim script sources the plugin in a copy of ``tests/projects/editor_demo`` with a module
that cannot be imported, starts the project's bridge (``:TestserverStart``), records
``TestserverState()`` until the bridge says it is ready, then stops it. Skipped without vim.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from serverproc import copy_project

PLUGIN = Path(__file__).parent.parent.parent / "examples" / "editors" / "vim" / "testserver.vim"
PROJECT = Path(__file__).parent.parent / "projects" / "editor_demo"

SCRIPT = """\
let g:testserver_command = [{python!r}, '-m', 'testserver']
let g:testserver_args = ['-t', '.', '-s', 'edemo']
source {plugin}
edit edemo/test_calc.py
let states = [TestserverState()]
TestserverStart
call add(states, TestserverState())
while TestserverState() ==# 'loading'
  sleep 20m
endwhile
call add(states, TestserverState())
redir! > {messages}
messages
redir END
call writefile(states, {states!r})
TestserverStop
qall!
"""


def test_vim_says_loading_then_ready_with_the_load_errors(tmp_path):
    vim = shutil.which("vim")
    if vim is None:
        pytest.skip("vim is not installed")
    root = copy_project(PROJECT, tmp_path, "project")
    (root / "pyproject.toml").write_text("")
    (root / "edemo" / "test_broken_import.py").write_text("import no_such_module_here\n")
    script = tmp_path / "check.vim"
    states, messages = tmp_path / "states", tmp_path / "messages"
    script.write_text(
        SCRIPT.format(python=sys.executable, plugin=PLUGIN, messages=messages, states=str(states))
    )
    subprocess.run([vim, "-Nu", "NONE", "-es", "-S", str(script)], cwd=root, timeout=120)
    assert states.read_text().splitlines() == ["", "loading", "ready"]
    assert (
        "testserver: cannot import edemo.test_broken_import: ModuleNotFoundError: "
        "No module named 'no_such_module_here'"
    ) in messages.read_text()
