"""``testserver run`` of one test, twice: the first (cold) run vs the second (warm) one.

Reproduce (from the repository root, with the project's venv)::

    .venv/bin/python bench/bench_cli.py            # 5 rounds
    .venv/bin/python bench/bench_cli.py --quick    # 2 rounds

On a copy of the 10,000-test suite S2 (``bench/gensuites.py``) in a temporary directory (a
project of its own), each round runs, with no daemon and no ``.testserver/`` state yet, ``testserver run --daemon ID``
twice with the same test id, as a person at a terminal would type it twice: the first run
starts the project's daemon and a server that imports the 10,000 tests, the second finds
them warm. (``--daemon`` stands for the terminal: at a terminal it is the default.) Each run
is a whole process, timed from spawn to exit; both must exit 0 having run exactly that one
test, or the script stops. The daemon is stopped after each round. It prints the median of
each and their ratio, the goal being at least 50; raw samples go to ``bench/out/cli.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gensuites  # noqa: E402  (a sibling script, not a package)

OUT = HERE / "out"
ROUNDS, QUICK_ROUNDS = 5, 2
GOAL = 50.0
"""The issue's target for first run / second run."""

ENV = {k: v for k, v in os.environ.items() if k not in ("TESTSERVER_NO_DAEMON", "PYTHON")}
ENV.pop("TESTSERVER_DAEMON_DIR", None)


def testserver_command() -> list[str]:
    script = Path(sys.executable).parent / "testserver"
    return [str(script)] if script.exists() else [sys.executable, "-m", "testserver"]


def timed_run(project: Path, test_id: str) -> float:
    """Seconds for one ``testserver run --daemon TEST_ID``; stop if it did not pass."""
    began = time.perf_counter()
    result = subprocess.run(
        [*testserver_command(), "run", "--daemon", "--no-color", test_id],
        cwd=project,
        env=ENV,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.perf_counter() - began
    if result.returncode != 0 or "Ran 1 test " not in result.stdout:
        sys.exit(f"testserver run failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return elapsed


def stop_daemon(project: Path) -> None:
    subprocess.run(
        [*testserver_command(), "daemon", "stop"],
        cwd=project,
        env=ENV,
        capture_output=True,
        timeout=120,
        check=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROUNDS} rounds")
    parser.add_argument("--rounds", type=int, help=f"rounds (default {ROUNDS})")
    args = parser.parse_args()
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    suite = gensuites.generate(gensuites.DEFAULT_OUT, "S2")
    test_id = (suite / gensuites.ONE_ID_FILE).read_text().split()[0]
    scratch = Path(tempfile.mkdtemp(prefix="tsbcli-"))
    project = scratch / "S2"  # outside the repository: a project of its own
    shutil.copytree(suite, project)
    first, second = [], []
    try:
        for number in range(1, rounds + 1):
            shutil.rmtree(project / ".testserver", ignore_errors=True)
            try:
                first.append(timed_run(project, test_id))
                second.append(timed_run(project, test_id))
            finally:
                stop_daemon(project)
            print(f"round {number}: first {first[-1]:.3f} s, second {second[-1]:.4f} s")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    cold, warm = statistics.median(first), statistics.median(second)
    ratio = cold / warm
    print(f"\ntestserver run {test_id} on S2 (10,000 tests), {rounds} rounds, medians:")
    print(f"  first run (cold: daemon + server start, import): {cold:.3f} s")
    print(f"  second run (warm):                               {warm:.4f} s")
    print(f"  ratio first/second: {ratio:.1f}x (goal >= {GOAL:g}x)")
    OUT.mkdir(exist_ok=True)
    (OUT / "cli.json").write_text(json.dumps({"first": first, "second": second}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
