"""What a :class:`~testserver.wire.serversession.ServerSession` asks its driver to do.

Each event method of the session returns a list of these actions; the driver carries them
out in order. They are frozen values: no I/O happens until the driver acts on one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from testserver.wire.batchtracking import Crash
from testserver.wire.commands import ListTests, Reload, RunTests

CANCEL_GRACE_SECONDS = 2.0
"""How long a cancelled worker may take to stop by itself before it is killed (spec 4.5)."""


@dataclass(frozen=True, slots=True)
class Send:
    """Write a ``testserver.complete`` control event with this body."""

    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Execute:
    """Apply pending source changes, carry out ``command``, then call ``command_finished``."""

    command: ListTests | Reload


@dataclass(frozen=True, slots=True)
class StartBatch:
    """Apply pending source changes, resolve the ids (report unknown ones), then call
    ``batch_resolved``."""

    command: RunTests


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Hand ``test_ids`` (a unit) to a fresh process in slot ``worker`` (or run them in
    process); close its stdin first when ``close_stdin`` (the command channel has ended)."""

    test_ids: tuple[str, ...]
    close_stdin: bool = False
    worker: int = 0


@dataclass(frozen=True, slots=True)
class ForwardStdin:
    """Queue ``data`` for the stdin of ``worker``'s running test (``None``: every worker of
    the batch); ``b""`` closes it."""

    data: bytes
    worker: int | None = None


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Cancel every worker of the batch: SIGINT (in process: ``KeyboardInterrupt``)."""


@dataclass(frozen=True, slots=True)
class Kill:
    """SIGKILL ``worker``, whose test ran past the timeout (``None``: every worker of the
    batch, the cancel's grace period passed)."""

    worker: int | None = None


@dataclass(frozen=True, slots=True)
class ReportCrash:
    """Write the synthetic failure of ``crash.victim`` (with ``worker``'s leftover output)."""

    crash: Crash
    worker: int = 0


@dataclass(frozen=True, slots=True)
class Exit:
    """Every command has its completion: release the workers and exit with status 0."""


Action = (
    Send | Execute | StartBatch | Dispatch | ForwardStdin | Interrupt | Kill | ReportCrash | Exit
)
