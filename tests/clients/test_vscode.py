"""The VS Code example extension (``examples/editors/vscode/testserver-vscode``), run by node.

VS Code itself is not here, so ``tests/vscode/vscode.js`` stands in for its ``vscode``
module and records what the extension shows; ``tests/vscode/drive.js`` activates the
extension in a copy of ``tests/projects/editor_demo`` (a real ``testserver bridge`` starts),
waits for it to say ready, saves a test file and waits for the Problems. Skipped without
node.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from serverproc import copy_project

HERE = Path(__file__).parent.parent
EXTENSION = HERE.parent / "examples" / "editors" / "vscode" / "testserver-vscode" / "extension.js"


def test_the_extension_is_warm_and_puts_failures_where_they_happened(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    root = copy_project("editor_demo", tmp_path, "project")
    config = {"command": [sys.executable, "-m", "testserver"], "args": ["-t", ".", "-s", "edemo"]}
    test_file = root / "edemo" / "test_calc.py"
    result = subprocess.run(
        [node, str(HERE / "vscode" / "drive.js"), str(EXTENSION), str(root), str(test_file)]
        + [json.dumps(config)],
        env={**os.environ, "NODE_PATH": str(HERE / "vscode")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["status"][0] == "$(sync~spin) testserver: loading the tests..."
    assert "$(beaker) testserver: 5 tests" in shown["status"]
    assert any("running 3 test(s)" in text for text in shown["status"])
    assert shown["status"][-1] == "$(beaker) testserver: 2 passed, 1 failed"
    problems = [entry for entry in shown["diagnostics"] if entry != "clear"]
    assert problems == [
        {
            "file": str(test_file),
            "list": [
                {"line": 10, "message": "edemo.test_calc.Calc.test_sub: AssertionError: 2 != 3"}
            ],
        }
    ]
    assert shown["warnings"] == []
