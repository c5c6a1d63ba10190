"""Fuzz the frame decoder and the packet decoder for a fixed time; print inputs tried and findings.

::

    python bench/fuzz_decoders.py --seconds 60                 # each target, atheris if installed
    python bench/fuzz_decoders.py --engine hypothesis --seconds 20 --target frames

Targets (the invariants are stated in ``tests/fuzz_invariants.py``):

- ``frames``: bytes on the server's stdin, through ``FrameDecoder`` (F1-F5);
- ``packets``: bytes on the server's stdout, through ``PacketDecoder`` (P1-P6);
- ``fields``: packets with a correct length and CRC around fuzzed flags and fields, so the
  field parser and the agreement with python-subunit are reached (P1-P6).

Engines: ``atheris`` (coverage-guided libFuzzer; ``pip install atheris``) runs each target
in a child process whose corpus, in ``bench/out/fuzz/TARGET/``, is seeded from the golden
vectors in ``spec/vectors/``; libFuzzer stops a target at its first finding and saves the
input as ``crash-*`` there. ``hypothesis`` mutates the same seeds, in batches until the time
is up, and shrinks a finding. ``auto`` (the default) picks atheris when it imports.
Exit status 0 when nothing was found, 1 otherwise. ``--replay FILE --target T`` checks one
saved input and shows the traceback of a finding.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the invariants are test code, shared with pytest

TARGETS = ("frames", "packets", "fields")
OUT = ROOT / "bench" / "out" / "fuzz"
MAX_LEN = 2048
"""Largest input atheris tries: every invariant is checked byte by byte, so keep it short."""
HYPOTHESIS_BATCH = 200
"""Examples per hypothesis run; runs repeat until the time is up."""


@dataclass
class Result:
    """What one target's run found."""

    target: str
    engine: str
    seconds: float = 0.0
    inputs: int = 0
    corpus: str = ""
    findings: list[str] = field(default_factory=list)


def atheris_available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


# -- atheris ------------------------------------------------------------------------------


def seed_corpus(target: str, directory: Path) -> int:
    """Write the target's seeds into ``directory`` (kept between runs); return their count."""
    from fuzz_invariants import seeds

    directory.mkdir(parents=True, exist_ok=True)
    corpus = seeds(target)
    for number, data in enumerate(corpus):
        (directory / f"seed-{number:03d}").write_bytes(data)
    return len(corpus)


def atheris_child(target: str, seconds: int, corpus: Path, artifacts: Path) -> None:
    """Run in the child process: libFuzzer on one target; it exits the process when done."""
    import atheris

    with atheris.instrument_imports(include=["testserver", "fuzz_invariants"]):
        from fuzz_invariants import CHECKS
    check = CHECKS[target]
    argv = [
        sys.argv[0],
        f"-max_total_time={seconds}",
        f"-max_len={MAX_LEN}",
        "-timeout=20",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}/",
        str(corpus),
    ]
    atheris.Setup(argv, check)
    atheris.Fuzz()


def run_atheris(target: str, seconds: int) -> Result:
    corpus, artifacts = OUT / target / "corpus", OUT / target
    seeded = seed_corpus(target, corpus)
    before = {path.name for path in artifacts.glob("crash-*")}
    command = [sys.executable, __file__, "--child", target, "--seconds", str(seconds)]
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, errors="replace")
    result = Result(target, "atheris", time.monotonic() - started)
    stats = dict(re.findall(r"stat::(\w+):\s*(\d+)", proc.stderr))
    result.inputs = int(stats.get("number_of_executed_units", 0))
    final = re.findall(r"^#\d+\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/", proc.stderr, re.M)
    cov = f", coverage {final[-1][0]} edges" if final else ""
    result.corpus = f"{seeded} seeds -> {len(list(corpus.iterdir()))} inputs{cov}"
    for path in sorted(artifacts.glob("crash-*")):
        if path.name not in before:
            result.findings.append(f"{path} ({path.read_bytes()[:80]!r})")
    if proc.returncode and not result.findings:
        tail = "\n".join(proc.stderr.splitlines()[-25:])
        result.findings.append(f"libFuzzer exited {proc.returncode}:\n{tail}")
    elif result.findings:
        result.findings.append("\n".join(_traceback(proc.stderr)))
    return result


def _traceback(stderr: str) -> list[str]:
    """The Python traceback atheris printed for a finding."""
    lines = stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if "Uncaught Python exception" in line]
    return lines[starts[0] : starts[0] + 40] if starts else lines[-25:]


# -- hypothesis ---------------------------------------------------------------------------


def run_hypothesis(target: str, seconds: int) -> Result:
    from fuzz_invariants import CHECKS, mutated, seeds
    from hypothesis import HealthCheck, given, settings

    check, count = CHECKS[target], [0]
    result = Result(target, "hypothesis", corpus=f"{len(seeds(target))} seeds, mutated")

    @settings(
        max_examples=HYPOTHESIS_BATCH,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(mutated(seeds(target)))
    def one(data: bytes) -> None:
        count[0] += 1
        check(data)

    started = time.monotonic()
    while time.monotonic() - started < seconds and not result.findings:
        try:
            one()
        except Exception as error:  # noqa: BLE001 - a finding is whatever escapes a check
            notes = "\n".join(getattr(error, "__notes__", []))
            result.findings.append(f"{type(error).__name__}: {error}\n{notes}")
    result.seconds, result.inputs = time.monotonic() - started, count[0]
    return result


# -- main ---------------------------------------------------------------------------------


def replay(path: Path, targets: tuple[str, ...]) -> int:
    """Check one saved input against ``targets``; a finding raises with its traceback."""
    from fuzz_invariants import CHECKS

    data = path.read_bytes()
    for target in targets:
        CHECKS[target](data)
        print(f"{target}: {path} keeps every invariant")
    return 0


def report(results: list[Result]) -> None:
    print(f"{'target':8} {'engine':10} {'seconds':>8} {'inputs':>10} {'per s':>8}  corpus")
    for r in results:
        rate = r.inputs / r.seconds if r.seconds else 0.0
        print(
            f"{r.target:8} {r.engine:10} {r.seconds:8.1f} {r.inputs:10,d} {rate:8,.0f}  {r.corpus}"
        )
    findings = [(r.target, finding) for r in results for finding in r.findings]
    found = [r.target for r in results if r.findings]
    print(f"findings: {len(found)} target(s) {' '.join(found)}".rstrip())
    for target, finding in findings:
        print(f"[{target}] {finding}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="fuzzing time per target")
    parser.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    parser.add_argument("--target", choices=(*TARGETS, "all"), default="all")
    parser.add_argument("--replay", type=Path, help="check one saved input (a crash-* file)")
    parser.add_argument("--child", choices=TARGETS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.replay:
        return replay(args.replay, TARGETS if args.target == "all" else (args.target,))
    if args.seconds < 1:
        parser.error("--seconds must be at least 1")
    if args.child:
        atheris_child(args.child, args.seconds, OUT / args.child / "corpus", OUT / args.child)
        return 0
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if atheris_available() else "hypothesis"
    elif engine == "atheris" and not atheris_available():
        parser.error("atheris is not installed: pip install atheris, or use --engine hypothesis")
    targets = TARGETS if args.target == "all" else (args.target,)
    print(f"fuzzing {', '.join(targets)} with {engine}, {args.seconds} s each (pid {os.getpid()})")
    runner = run_atheris if engine == "atheris" else run_hypothesis
    results = [runner(target, args.seconds) for target in targets]
    report(results)
    return 1 if any(r.findings for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
