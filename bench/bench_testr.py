"""testr running one test: warm ``testserver-client`` vs cold ``python -m subunit.run``.

Reproduce (from the repository root, with the dev venv that has testrepository)::

    /tmp/v/bin/python bench/bench_testr.py            # 10 rounds
    /tmp/v/bin/python bench/bench_testr.py --quick    # 3 rounds

On the heavy-import suite S3 (``bench/gensuites.py``: 1,000 tests, every module imports a
~0.5 s module), it times ``testr run`` selecting one test, in two ways:

- ``--load-list one.txt``: testr runs the backend once, with ``$IDOPTION``;
- ``<regex>`` (the test's id): testr lists the tests (backend with ``$LISTOPT``), filters,
  then runs the backend with ``--load-list``: two backend processes.

Each way runs in two copies of S3 that differ only in ``.testr.conf``'s ``test_command``:
``python -m subunit.run discover -t . -s s3 $LISTOPT $IDOPTION`` (cold: every backend imports
the suite) and ``testserver-client discover ...`` (warm: a daemon keeps the loaded suite;
``python -m testserver.backends.testr`` when the console script is not installed). It also times the
backend command alone, and testr with a backend that does nothing (``true``: testr's own
floor, which bounds any ratio). Rounds interleave cold and warm so that machine drift hits
both alike; each cell is ``median (min-max)`` over the rounds, after one discarded warm-up
round (which also starts the daemon and loads the warm server). Every testr run must report
``Ran 1 tests`` and PASSED, or the script stops. Raw samples: ``bench/out/testr.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
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

OUT = HERE / "out" / "testr"
ROUNDS, QUICK_ROUNDS = 10, 3
GOAL = 10.0
"""The brief's target for cold/warm on ``testr run <one id>``."""

BIN = Path(sys.executable).parent
ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHON")}
"""Measured processes keep bytecode caching on, so cold runs find a warm ``__pycache__``."""


def client_command() -> str:
    script = BIN / "testserver-client"
    if script.exists():
        return str(script)
    return f"{sys.executable} -m testserver.backends.testr"


def backends() -> dict[str, str]:
    """test_command prefix per variant (the discover arguments follow)."""
    return {
        "cold": f"{sys.executable} -m subunit.run",
        "warm": client_command(),
        "floor": "true",
    }


def prepare(variant: str, command: str, heavy_n: int) -> Path:
    """A copy of S3 with its own .testr.conf and a fresh .testrepository."""
    root = gensuites.generate(OUT / variant, "S3", heavy_n)
    (root / ".testr.conf").write_text(
        "[DEFAULT]\n"
        f"test_command={command} discover -t . -s s3 $LISTOPT $IDOPTION\n"
        "test_id_option=--load-list $IDFILE\n"
        "test_list_option=--list\n"
    )
    shutil.rmtree(root / ".testrepository", ignore_errors=True)
    run([str(BIN / "testr"), "init"], root)
    return root


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run ``argv``; return the wall time and stdout. testr exits 0 when the test passed."""
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, env=env or ENV, capture_output=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(
            f"failed ({result.returncode}): {shlex.join(argv)} in {cwd}\n"
            f"{result.stdout.decode(errors='replace')}{result.stderr.decode(errors='replace')}"
        )
    return seconds, result.stdout.decode(errors="replace")


def testr_one(root: Path, how: str, test_id: str, env: dict[str, str], floor: bool):
    argv = [str(BIN / "testr"), "run"]
    argv += ["--load-list", "one.txt"] if how == "load-list" else [f"^{test_id}$"]
    seconds, out = run(argv, root, env)
    if not floor and ("Ran 1 tests" not in out or "PASSED" not in out):
        raise SystemExit(f"unexpected testr output in {root}:\n{out}")
    return seconds


def backend_one(root: Path, command: str, env: dict[str, str]) -> float:
    argv = [*shlex.split(command), "discover", "-t", ".", "-s", "s3", "--load-list", "one.txt"]
    return run(argv, root, env)[0]


def cell(samples: list[float]) -> str:
    if not samples:
        return "n/a"
    return f"{statistics.median(samples):.3f} s ({min(samples):.3f}-{max(samples):.3f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROUNDS} rounds")
    parser.add_argument("--rounds", type=int, help=f"default {ROUNDS}")
    parser.add_argument("--heavy-n", type=int, default=gensuites.DEFAULT_HEAVY_N)
    args = parser.parse_args(argv)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    if not (BIN / "testr").exists():
        print("bench_testr: testr is not installed (pip install -e '.[test]'); skipped")
        return 0
    runtime = Path(tempfile.mkdtemp(prefix="tsb-"))  # the benchmark's own daemon
    env = dict(ENV, TESTSERVER_DAEMON_DIR=str(runtime / "testserver"))
    commands = backends()
    roots = {name: prepare(name, command, args.heavy_n) for name, command in commands.items()}
    test_id = (roots["cold"] / gensuites.ONE_ID_FILE).read_text().strip()
    samples: dict[str, list[float]] = {}
    keys = [(how, v) for how in ("load-list", "regex") for v in commands] + [
        ("backend", v) for v in ("cold", "warm")
    ]
    try:
        for round_number in range(rounds + 1):  # round 0 is the warm-up, discarded
            for how, variant in keys:
                if how == "backend":
                    seconds = backend_one(roots[variant], commands[variant], env)
                else:
                    seconds = testr_one(roots[variant], how, test_id, env, variant == "floor")
                if round_number:
                    samples.setdefault(f"{how}/{variant}", []).append(seconds)
            print(f"round {round_number}/{rounds} done", file=sys.stderr)
    finally:
        stop = [sys.executable, "-m", "testserver.backends.daemon", "stop"]
        subprocess.run(stop, env=env, capture_output=True, check=False, cwd=tempfile.gettempdir())
        shutil.rmtree(runtime, ignore_errors=True)

    lines = [
        "# testr, one test of S3: warm testserver-client vs cold subunit.run",
        "",
        f"command: {shlex.join([sys.executable, *sys.argv])}",
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        f"{rounds} rounds (+1 warm-up), heavy_n {args.heavy_n}, warm client: {commands['warm']}",
        "",
        "| what | cold (subunit.run) | warm (testserver-client) | cold/warm | testr floor |",
        "|---|---|---|---|---|",
    ]
    ratios = {}
    for how, label in (
        ("load-list", "`testr run --load-list one.txt`"),
        ("regex", f"`testr run '^{test_id}$'`"),
        ("backend", "backend alone, `--load-list one.txt`"),
    ):
        cold, warm = samples[f"{how}/cold"], samples[f"{how}/warm"]
        ratios[how] = statistics.median(cold) / statistics.median(warm)
        floor = cell(samples.get(f"{how}/floor", []))
        lines.append(f"| {label} | {cell(cold)} | {cell(warm)} | {ratios[how]:.1f}x | {floor} |")
    lines.append("")
    for how in ("load-list", "regex"):
        verdict = "ok" if ratios[how] >= GOAL else "MISS"
        ceiling = statistics.median(samples[f"{how}/cold"]) / statistics.median(
            samples[f"{how}/floor"]
        )
        lines.append(
            f"goal cold/warm >= {GOAL:g}x for testr {how}: {ratios[how]:.1f}x {verdict} "
            f"(ceiling with a zero-cost backend, cold/floor: {ceiling:.1f}x)"
        )
    print("\n".join(lines))
    OUT.mkdir(parents=True, exist_ok=True)
    document = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "commands": commands,
        "rounds": rounds,
        "heavy_n": args.heavy_n,
        "samples_s": samples,
        "ratios": ratios,
    }
    (HERE / "out" / "testr.json").write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
