"""What the pool of a ``--jobs N`` batch asks of one worker, local or remote.

The driver (:mod:`testserver.serve.driver`) runs a batch across workers ``worker-0`` ...
``worker-N-1``. Each is a :class:`PoolWorker`: a *slot* that runs one unit of tests at a
time, in a process it starts for the unit (a fork of the warm server for local workers,
:class:`~testserver.serve.batch.WorkerBatch`) or over a pipe to a server elsewhere (remote
workers, ``--worker-command``). The slot decides nothing: the session
(:class:`~testserver.wire.serversession.ServerSession`) says which unit goes where
(``Dispatch(worker=K)``), when to interrupt or kill, and what a death means.

A slot is built by a :data:`WorkerFactory` with its number ``K``, the ``write`` that puts
bytes on the server's stdout and the ``feed`` that follows one packet of the batch (the
session's tracker, already bound to ``K``). For every complete subunit packet its process
writes, the slot calls ``feed(raw)`` first, then writes it (tagged ``worker-K`` when the
pool has more than one worker), except its own internal "unit done" event. The contract:

- :meth:`~PoolWorker.fds` are polled for reading; :meth:`~PoolWorker.on_readable` is called
  when any is ready. It returns ``None`` while the unit goes on, ``WorkerEnd()`` when the
  unit is done (every packet of it fed and written), or ``WorkerEnd(cause)`` when the process
  (or connection) ended first; ``cause`` says how, in words ("killed by signal 9 (SIGKILL)",
  "disconnected: ..."). After an end the slot holds no process and may be dispatched again.
- :meth:`~PoolWorker.stdin_fd` is polled for writing while stdin bytes wait;
  :meth:`~PoolWorker.on_stdin_writable` writes them without blocking.
- Without an fd that says the process ended, :meth:`~PoolWorker.exit_check_deadline` gives
  the time (``time.monotonic``) by which :meth:`~PoolWorker.check_exit` must be called.
- :meth:`~PoolWorker.report_crash` writes the synthetic failure of a crash's victim with
  what the dead process wrote after its last test; :meth:`~PoolWorker.report_leftover`
  writes that output as global attachments instead (no test failed).
- :meth:`~PoolWorker.close` releases everything; the slot is not used again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from testserver.wire.batchtracking import Crash
from testserver.wire.splitting import Kind

Write = Callable[[bytes], None]
"""Writes bytes (whole packets) to the server's stdout."""

Feed = Callable[[bytes], Kind]
"""Follows one packet of the batch (the session's tracker) and says what it is."""


@dataclass(frozen=True, slots=True)
class WorkerEnd:
    """A slot's unit is over: ``cause`` says how its process died, ``None``: it finished.

    ``lost``: the worker went away through no test's fault (a remote's connection ended):
    no test fails, its unit's unfinished tests run elsewhere, the slot is not used again in
    this batch."""

    cause: str | None = None
    lost: bool = False


def worker_name(number: int) -> str:
    """The name, and the subunit tag, of worker ``number``: ``worker-K``, as testr's."""
    return f"worker-{number}"


class PoolWorker(Protocol):
    """One slot of the pool (see the module docstring for the contract)."""

    name: str
    """``worker-K``: the tag its tests' packets carry when the pool has several workers."""

    def dispatch(self, test_ids: tuple[str, ...]) -> None:
        """Start running ``test_ids`` in this order (a unit); the slot holds no unit now."""

    def fds(self) -> list[int]:
        """Fds to poll for reading while a unit runs (empty when idle)."""

    def on_readable(self) -> WorkerEnd | None:
        """Feed and write what arrived; a :class:`WorkerEnd` when the unit or process ended."""

    def stdin_fd(self) -> int | None:
        """The fd to poll for writing while stdin bytes wait, else ``None``."""

    def on_stdin_writable(self) -> None:
        """Write waiting stdin bytes without blocking."""

    def send_stdin(self, data: bytes) -> None:
        """Queue ``data`` for the running test's stdin; ``b""`` closes it."""

    def exit_check_deadline(self) -> float | None:
        """When :meth:`check_exit` must be called, if the slot cannot be polled for it."""

    def check_exit(self) -> WorkerEnd | None:
        """A :class:`WorkerEnd` if the process ended (see :meth:`exit_check_deadline`)."""

    def interrupt(self) -> None:
        """The batch is cancelled: interrupt the running test (SIGINT) and stop."""

    def kill(self) -> None:
        """End the process now (its test timed out, or the cancel grace period passed)."""

    def report_crash(self, crash: Crash) -> None:
        """Write the synthetic failure of ``crash.victim`` with the dead process's output."""

    def report_leftover(self) -> None:
        """Write the dead process's last output as global attachments."""

    def worker_pid(self) -> int | None:
        """The local pid running the unit (signals are forwarded to it), else ``None``."""

    def close(self) -> None:
        """Release the process and every fd; the slot is not used again."""


WorkerFactory = Callable[[int, Write, Feed], PoolWorker]
"""Builds slot ``K`` of a batch's pool from its number, ``write`` and ``feed``."""
