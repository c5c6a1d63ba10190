"""What recording the data read at import time costs (``testserver.hotreload.importreads``).

    python bench/bench_importreads.py [--quick] [--events N] [--modules N] [--repeats N]

Two measurements, each side by side in this one run (compare the ratios, not the times):

1. **The hook while off.** Audit hooks cannot be removed, so once a server has recorded a
   load, every audited call in it and in its workers (``open``, ``os.listdir``, ``exec``,
   ``compile``...) calls our hook, which returns at once. Times ``N`` ``open()``+``close()``
   of one file, and ``N`` ``os.listdir``, before the hook is installed and after (recording
   off), in this process.
2. **A recorded load.** Imports a generated package of ``--modules`` test modules, each of
   which reads a data file and lists a directory at import, in fresh processes: with the
   recording on (as ``--serve`` does at startup and at each reload) and without any hook,
   alternating, ``--repeats`` times; prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testserver.hotreload.importreads import ImportReads

LOAD = """\
import sys, time
sys.path.insert(0, {root!r})
record = {record!r}
if record:
    from testserver.hotreload.importreads import ImportReads
    reads = ImportReads([{root!r}], lambda name: True)
    recording = reads.recording()
    recording.__enter__()
start = time.perf_counter()
import bench_pkg.all_modules
print(time.perf_counter() - start)
if record:
    assert len(reads.files) == {modules}, len(reads.files)
"""

MODULE = """\
import os
HERE = os.path.dirname(__file__)
with open(os.path.join(HERE, "data", "m{i}.txt")) as handle:
    VALUE = handle.read()
NAMES = os.listdir(os.path.join(HERE, "data"))
"""


def per_call(function, count: int) -> float:
    """Seconds per call of ``function`` (best of three loops of ``count``)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(count):
            function()
        best = min(best, time.perf_counter() - start)
    return best / count


def hook_off_cost(count: int, scratch: Path) -> None:
    path = scratch / "probe.txt"
    path.write_text("x")

    def opening() -> None:
        open(path).close()

    def listing() -> None:
        os.listdir(scratch)

    calls = (("open", opening), ("listdir", listing))
    for _, function in calls:
        per_call(function, count)  # warm up the caches first, so that "before" is not slower
    before = {name: per_call(f, count) for name, f in calls}
    with ImportReads([str(scratch)], lambda name: True).recording():
        pass  # installs the hook; it stays installed, switched off
    after = {name: per_call(f, count) for name, f in calls}
    print(f"1. the hook while off ({count:,} calls each, best of 3)")
    for name in before:
        print(
            f"   {name:8s} {before[name] * 1e6:7.2f} us without the hook, "
            f"{after[name] * 1e6:7.2f} us with it off: x{after[name] / before[name]:.2f}"
        )


def make_package(root: Path, modules: int) -> None:
    package = root / "bench_pkg"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for i in range(modules):
        (package / f"m{i}.py").write_text(MODULE.format(i=i))
        (package / "data" / f"m{i}.txt").write_text(str(i))
    imports = "".join(f"from bench_pkg import m{i}  # noqa\n" for i in range(modules))
    (package / "all_modules.py").write_text(imports)


def load_cost(modules: int, repeats: int, scratch: Path) -> None:
    make_package(scratch, modules)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats):
        for record in (False, True):
            code = LOAD.format(root=str(scratch), record=record, modules=modules)
            env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
            done = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
            )
            times[record].append(float(done.stdout))
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"2. importing {modules} modules that each read a file and list a directory")
    print(f"   ({repeats} fresh processes per side, alternating; median)")
    print(f"   no hook {off * 1e3:7.1f} ms, recording {on * 1e3:7.1f} ms: x{on / off:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--modules", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="2,000 calls, 100 modules, 3 runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.modules, args.repeats = 2_000, 100, 3
    with tempfile.TemporaryDirectory(prefix="bench-importreads-") as scratch:
        hook_off_cost(args.events, Path(scratch))
        load_cost(args.modules, args.repeats, Path(scratch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
