"""Where a batch's units of work come from: what the session asks of a scheduler.

A :class:`~testserver.wire.serversession.ServerSession` with ``jobs`` workers asks a
:class:`UnitSource` for each worker's next unit and tells it when a unit finished or a
worker was lost. :class:`testserver.scheduling.Scheduler` is the source of a ``--jobs N``
batch (units that start small and grow, longest first, fixture groups whole); the driver
hands the session a factory for it, as the wire layer imports nothing else of testserver.
:class:`WholeBatch` is the source of a one-worker batch: the whole batch is one unit, and
after a crash the rest of it is the next, so ``--jobs 1`` runs as it always did.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol


class HasIds(Protocol):
    """A unit of work: the ids one worker runs, in this order."""

    @property
    def ids(self) -> tuple[str, ...]: ...


class UnitSource(Protocol):
    """The scheduler interface the session drives (see :class:`~testserver.scheduling.
    scheduler.Scheduler` for the meaning of each call)."""

    def worker_ready(self, worker: Hashable) -> HasIds | None: ...

    def unit_finished(self, worker: Hashable) -> None: ...

    def worker_lost(
        self, worker: Hashable, finished: Iterable[str] = (), *, reason: str, replacing: bool
    ) -> Sequence[HasIds]: ...

    def abandon(self, reason: str) -> list[str]: ...


UnitSourceFactory = Callable[[list[str], int], UnitSource]
"""Builds the source of one batch from its resolved ids and the number of workers."""


@dataclass(frozen=True)
class WholeUnit:
    """The unit of :class:`WholeBatch`: every id not handed out yet."""

    ids: tuple[str, ...]


class WholeBatch:
    """A :class:`UnitSource` for one worker: the whole batch, then after a crash its rest."""

    def __init__(self, ids: Sequence[str], workers: int = 1) -> None:
        if workers != 1:
            raise ValueError(f"WholeBatch hands out work to one worker, not {workers}")
        self._pending: list[str] = list(ids)
        self._out: list[str] | None = None

    def worker_ready(self, worker: Hashable) -> WholeUnit | None:
        """Everything pending, as one unit (``None`` when nothing is)."""
        if not self._pending:
            return None
        self._out, self._pending = self._pending, []
        return WholeUnit(tuple(self._out))

    def unit_finished(self, worker: Hashable) -> None:
        """The unit ended: whatever it did not run stays not run."""
        self._out = None

    def worker_lost(
        self, worker: Hashable, finished: Iterable[str] = (), *, reason: str, replacing: bool
    ) -> list[WholeUnit]:
        """The worker died: the ids of its unit after ``finished`` (a prefix) are pending."""
        out, self._out = self._out or [], None
        self._pending = out[len(list(finished)) :] + self._pending
        return []

    def abandon(self, reason: str) -> list[str]:
        """Nothing more is handed out; the ids given up."""
        given_up, self._pending = self._pending, []
        return given_up
