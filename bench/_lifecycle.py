"""Where one forked worker's time goes: a bench-only probe, run as its own process.

Usage (``bench_floor.py`` runs it)::

    python bench/_lifecycle.py SUITE_DIR PACKAGE TEST_ID ROUNDS

Loads the suite the way the server does (``loading.load``, then ``gc.freeze()``), then
drives :class:`testserver.serve.worker.WorkerSpawner` directly, with no server loop and no
client, for ``ROUNDS`` one-test batches, each after an idle pause. Per batch it times:

- ``fork_s``: ``prepare_standby()`` in the parent (the fork itself and the pipes);
- ``dispatch_to_done_s``: from writing the batch frame to reading the worker's done event
  (the worker's whole request path: wake up, decode, resolve, run, encode, write);
- ``retire_s``: ``kill_group()`` and ``retire()`` (close, reap without waiting);
- ``exit_s``: from retire to the worker reaped (its teardown, as the parent sees it);
- ``child_minflt`` and ``child_cpu_s``: minor faults and CPU of the whole worker life
  (``getrusage(RUSAGE_CHILDREN)`` deltas), warm-up included;
- a second batch run by the same worker would cost: ``reused_run_s``, one test run again
  into a fresh ``PacketResult`` in a forked child that has already run it once; and
  ``reused_batch_s``, dispatch -> done of a batch on a worker of ``--isolation worker``
  (``WorkerOptions(reuse=True)``, parked with ``keep`` after each batch), its state checks
  included; ``reused_nocheck_s``, the same with the state checks stubbed out (what they
  cost on the request path), sampled in alternating blocks.

Prints one JSON object: lists of seconds (or counts) per key.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time

PAUSE = 0.03
"""Idle seconds before each batch: the standby has warmed up and the last worker is gone."""

REUSE_BLOCKS = 4
"""Blocks of reused-worker batches per variant (with state checks, without), alternated."""


def _batch(spawner, test_id: str) -> tuple[float, float, float, float]:
    """One batch on the standby worker: (dispatch->done, retire, exit) seconds."""
    worker = spawner.take()
    start = time.perf_counter()
    worker.dispatch("probe", [test_id])
    data = b""
    while b"testserver.worker-done" not in data:
        chunk = os.read(worker.events_r, 1 << 16)
        if not chunk:
            raise RuntimeError(f"worker ended early: {data!r}")
        data += chunk
    done = time.perf_counter()
    worker.kill_group()
    spawner.retire(worker)
    retired = time.perf_counter()
    while spawner.untidy:
        time.sleep(0.0002)
        spawner.reap_exited()
    return done - start, retired - done, time.perf_counter() - retired


def _reused_run(found: list) -> float:
    """Seconds for the second run of the test in a forked child (what a reused worker pays)."""
    from testserver.engine import results, running

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        running.run_tests(found, results.PacketResult(lambda data: None))
        start = time.perf_counter()
        running.run_tests(found, results.PacketResult(lambda data: None))
        os.write(write_end, repr(time.perf_counter() - start).encode())
        os._exit(0)
    os.close(write_end)
    seconds = float(os.read(read_end, 64))
    os.close(read_end)
    os.waitpid(pid, 0)
    return seconds


def _reused_batches(index, test_id: str, count: int) -> tuple[list[float], list[float]]:
    """Dispatch -> done seconds of ``count`` batches on a reused worker, with its state
    checks and without, in alternating blocks (one spawner at a time: a spawner's orphan
    sweep ends every child of the process that is not its own)."""
    from testserver.serve import workerstate
    from testserver.serve.worker import WorkerOptions, WorkerSpawner

    options = WorkerOptions(interactive_stdin=False, reuse=True)
    real = workerstate.WorkerState.changed_since
    samples: tuple[list[float], list[float]] = ([], [])
    per_block = max(1, count // REUSE_BLOCKS)
    for _ in range(REUSE_BLOCKS):
        for checks, out in zip((True, False), samples):
            spawner = WorkerSpawner(index, options)
            if not checks:  # the worker is forked with the stub
                workerstate.WorkerState.changed_since = lambda self, before: None  # type: ignore[method-assign]
            try:
                spawner.prepare_standby()
                workerstate.WorkerState.changed_since = real  # type: ignore[method-assign]
                for round_ in range(per_block + 1):
                    time.sleep(PAUSE)
                    seconds = _reused_batch(spawner, test_id)
                    if round_:  # the first batch is the fresh worker's
                        out.append(seconds)
            finally:
                workerstate.WorkerState.changed_since = real  # type: ignore[method-assign]
                spawner.close()
    return samples


def _reused_batch(spawner, test_id: str) -> float:
    worker = spawner.take()
    start = time.perf_counter()
    worker.dispatch("probe", [test_id])
    data = b""
    while b"testserver.worker-done" not in data:
        data += os.read(worker.events_r, 1 << 16)
    seconds = time.perf_counter() - start
    if b'"dirty":null' not in data:
        raise RuntimeError(f"the reused worker is unfit after a batch: {data[-300:]!r}")
    spawner.keep(worker)
    return seconds


def main(argv: list[str]) -> int:
    suite, package, test_id, rounds = argv[0], argv[1], argv[2], int(argv[3])
    os.chdir(suite)
    sys.path.insert(0, suite)
    from testserver.engine import loading
    from testserver.serve.worker import WorkerOptions, WorkerSpawner

    index = loading.load(loading.LoadSpec(package, ".", "test*.py"))
    found, _ = index.resolve([test_id])
    gc.freeze()
    spawner = WorkerSpawner(index, WorkerOptions(interactive_stdin=False))
    keys = ("fork_s", "dispatch_to_done_s", "retire_s", "exit_s", "child_minflt", "child_cpu_s")
    out: dict[str, list[float]] = {key: [] for key in (*keys, "reused_run_s")}
    out["reused_batch_s"], out["reused_nocheck_s"] = _reused_batches(index, test_id, rounds)
    try:
        for _ in range(rounds):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            spawner.prepare_standby()
            out["fork_s"].append(time.perf_counter() - start)
            time.sleep(PAUSE)
            run, retire, exit_ = _batch(spawner, test_id)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            out["dispatch_to_done_s"].append(run)
            out["retire_s"].append(retire)
            out["exit_s"].append(exit_)
            out["child_minflt"].append(after.ru_minflt - before.ru_minflt)
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            out["child_cpu_s"].append(cpu)
            out["reused_run_s"].append(_reused_run(found))
    finally:
        spawner.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
