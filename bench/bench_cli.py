"""``testserver run`` of one test, twice: the first (cold) run vs the second (warm) one.

Reproduce (from the repository root, with the project's venv)::

    .venv/bin/python bench/bench_cli.py            # 5 rounds
    .venv/bin/python bench/bench_cli.py --quick    # 2 rounds

On a copy of the 10,000-test suite S2 (``bench/gensuites.py``) in a temporary directory (a
project of its own), each round runs ``testserver run --daemon ID`` twice with the same
test id, with no daemon and no ``.testserver/`` state before the first, as a person at a
terminal would type it twice: the first run starts the project's daemon and a server that
imports the 10,000 tests, the second finds them warm. (``--daemon`` stands for the
terminal: at a terminal it is the default.) Each run is a whole process, timed from spawn to
exit; both must exit 0 having run exactly that one test, or the script stops. The daemon is
stopped after each round, and ``python -c pass`` is timed too: the floor of any run.

Three installs are measured side by side, interleaved: this venv's ``testserver`` (an
editable install, whose import hook costs every start-up ``pathlib`` and ``re``, so the
launcher finds no package to take its fast path from and execs ``testserver-cli``), the
layout ``pip install testserver`` gives (a venv with the package in its site-packages and
the launcher ``scripts/testserver`` as ``bin/testserver``, made in
``bench/out/venv-regular``), and that same install run through its console script
``testserver-cli`` (``testserver`` before the launcher). After each second run the script
also sends the same request to the daemon from its own process: the part of a warm run
no client start-up is in. It prints the medians and the ratio first/second for each, the
goal being at least 50, with the interpreter's floor (``python -c pass`` and ``python -I
-S -c pass``); raw samples go to ``bench/out/cli.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
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

ENV = {
    k: v
    for k, v in os.environ.items()
    if k
    not in ("TESTSERVER_NO_DAEMON", "TESTSERVER_DAEMON_DIR", "PYTHON", "PYTHONDONTWRITEBYTECODE")
}
"""Measured processes keep bytecode caching on, as a user's do (so does bench_testr.py)."""


LAUNCHER = HERE.parent / "scripts" / "testserver"
CLI = "testserver-cli"
"""The ``testserver`` launcher that ``pip install`` puts beside ``testserver-cli``."""

SCRIPT = """#!{python}
import re
import sys
from testserver.cli import main
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit(main())
"""
"""pip's console script for ``testserver-cli``, for the regular-install layout."""


def dev_command() -> list[str]:
    """``testserver`` of this venv (an editable install: its import hook loads at start-up)."""
    script = Path(sys.executable).parent / "testserver"
    return [str(script)] if script.exists() else [sys.executable, "-m", "testserver"]


def regular_command() -> list[str]:
    """``testserver`` laid out as ``pip install testserver`` leaves it: a venv whose
    site-packages finds the package and its dependencies by plain path entries, with no
    editable import hook (which costs the dev venv's every start-up pathlib and re)."""
    venv = OUT / "venv-regular"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    Path(purelib, "testserver-bench.pth").write_text(f"{ours}\n")
    package = Path(purelib, "testserver")
    if not package.is_symlink():
        package.symlink_to(HERE.parent / "testserver")  # where a wheel puts it
    cli = venv / "bin" / CLI
    cli.write_text(SCRIPT.format(python=python))
    cli.chmod(0o755)
    script = venv / "bin" / "testserver"
    shutil.copy(LAUNCHER, script)
    return [str(script)]


def timed_run(command: list[str], project: Path, test_id: str) -> float:
    """Seconds for one ``testserver run --daemon TEST_ID``; stop if it did not pass."""
    began = time.perf_counter()
    result = subprocess.run(
        [*command, "run", "--daemon", "--no-color", test_id],
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


def interpreter(command: list[str]) -> str:
    """The Python of ``command``: a console script's line 1, or testserver-cli's for the
    launcher."""
    script = Path(command[0])
    if script.name == "testserver":  # the launcher: testserver-cli's line 1 names python
        script = script.with_name("testserver-cli")
    if not script.name.startswith("testserver"):
        return str(script)
    return script.read_text().splitlines()[0].removeprefix("#!")


def floor(python: str, *flags: str) -> float:
    """Seconds for ``python FLAGS -c pass``: the floor of any run with that interpreter."""
    began = time.perf_counter()
    subprocess.run([python, *flags, "-c", "pass"], check=True, env=ENV)
    return time.perf_counter() - began


def daemon_request(python: str, project: Path, test_id: str) -> float:
    """Seconds for the daemon to answer the second run's request, sent from this process:
    the part of a warm run that no client start-up is in (the daemon, the warm server and
    its forked worker)."""
    from testserver.backends import warmcli
    from testserver.clients import project as projects

    request = warmcli.request_for(["--daemon", "--no-color", test_id], str(project))
    request.update(python=python, env=ENV, stdout_tty=False, columns=None)
    line = warmcli.encode(request).encode("ascii") + b"\n"
    directory = projects.daemon_dir(projects.find_root(str(project))[0])
    began = time.perf_counter()
    sock = warmcli.connect_running(directory)
    assert sock is not None, "no daemon"
    sock.sendall(line)
    answer = b""
    while not answer.endswith(b"x\0\0\0\x010"):
        chunk = sock.recv(warmcli.READ_SIZE)
        if not chunk:
            sys.exit(f"the daemon's answer ended early: {answer!r}")
        answer += chunk
    sock.close()
    return time.perf_counter() - began


def stop_daemon(command: list[str], project: Path) -> None:
    subprocess.run(
        [*command, "daemon", "stop"],
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
    regular = regular_command()
    layouts = {
        "dev venv (editable)": dev_command(),
        "regular install": regular,
        "regular install, console script (no launcher)": [str(Path(regular[0]).parent / CLI)],
    }
    samples: dict[str, dict[str, list[float]]] = {
        name: {key: [] for key in ("first", "second", "request", "python", "python -I -S")}
        for name in layouts
    }
    try:
        for number in range(1, rounds + 1):
            for name, command in layouts.items():
                shutil.rmtree(project / ".testserver", ignore_errors=True)
                times = samples[name]
                python = interpreter(command)
                try:
                    times["first"].append(timed_run(command, project, test_id))
                    times["second"].append(timed_run(command, project, test_id))
                    times["request"].append(daemon_request(python, project, test_id))
                finally:
                    stop_daemon(command, project)
                times["python"].append(floor(python))
                times["python -I -S"].append(floor(python, "-I", "-S"))
                print(
                    f"round {number}, {name}: first {times['first'][-1]:.3f} s, "
                    f"second {times['second'][-1]:.4f} s, daemon request "
                    f"{times['request'][-1]:.4f} s, python -c pass {times['python'][-1]:.4f} s",
                    flush=True,
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\ntestserver run {test_id} on S2 (10,000 tests), {rounds} rounds, medians:")
    for name, times in samples.items():
        cold, warm = statistics.median(times["first"]), statistics.median(times["second"])
        python = statistics.median(times["python"])
        request = statistics.median(times["request"])
        isolated = statistics.median(times["python -I -S"])
        print(f"  {name}:")
        print(f"    first run (cold: daemon, server, imports): {cold:.3f} s")
        print(f"    second run (warm):                          {warm:.4f} s")
        print(f"      of which the daemon's answer (in-process): {request:.4f} s")
        print(f"    python -c pass:                             {python:.4f} s")
        print(f"    python -I -S -c pass (the launcher's floor): {isolated:.4f} s")
        print(f"    ratio first/second: {cold / warm:.1f}x (goal >= {GOAL:g}x)")
        best = cold / (isolated + request)
        print(f"    ratio first/(python -I -S -c pass + the daemon's answer): {best:.1f}x")
        print("      (the best a Python client could reach with this daemon and server)")
    OUT.mkdir(exist_ok=True)
    (OUT / "cli.json").write_text(json.dumps(samples, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
