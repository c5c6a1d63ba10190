"""The newcomer path: ``examples/demo.py`` (what ``make demo`` runs) must keep working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).parent.parent.parent / "examples" / "demo.py"


def test_the_demo_runs_and_its_checks_hold():
    result = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo OK" in result.stdout
