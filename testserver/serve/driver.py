"""The driver of a :class:`~testserver.wire.serversession.ServerSession`: the I/O around it.

The session decides (queue, completions, cancel, deadlines, accounting, which worker runs
which unit); :class:`SessionDriver` does: it polls the batch's workers (the slots of its
pool, :class:`~testserver.serve.poolworker.PoolWorker`), the signal wakeup pipe and whatever
a subclass adds (the command channel), tells the session what happened, and carries out the
actions it returns, in order, in :meth:`SessionDriver._act`. With ``--jobs N`` the units
come from :class:`~testserver.scheduling.scheduler.Scheduler`, with the fixture groups of
the loaded suite and the project's timing history. The warm server (:mod:`~testserver.serve.server`)
and one-shot mode (:mod:`~testserver.serve.oneshot`) are its two subclasses.
"""

from __future__ import annotations

import collections
import os
import select
import signal
import time
from dataclasses import dataclass

from testserver.engine.fds import make_private
from testserver.engine.fixturegroups import fixture_groups
from testserver.engine.loading import TestIndex
from testserver.engine.results import PacketResult
from testserver.serve import reaping
from testserver.serve.batch import WorkerBatch, run_in_process
from testserver.serve.channel import PrivateChannel
from testserver.serve.poolworker import Feed, PoolWorker, WorkerEnd, Write, worker_name
from testserver.serve.remote import RemoteWorker
from testserver.serve.worker import WorkerOptions, WorkerSpawner, write_all
from testserver.wire.commands import ListTests, Reload, RunTests
from testserver.wire.serversession import ServerSession, State
from testserver.wire.sessionactions import (
    Action,
    Dispatch,
    Execute,
    Exit,
    ForwardStdin,
    Interrupt,
    Kill,
    ReportCrash,
    Send,
    StartBatch,
)
from testserver.wire.splitting import Kind
from testserver.wire.units import UnitSource

TIDY_INTERVAL_MS = 20
"""While a finished worker or what its tests started may still be alive, look this often."""


class ClientGone(Exception):
    """The client closed the server's stdout: nobody is listening any more."""


HOLD_LIMIT = 1 << 16
"""Bytes of workers' packets held back at most while more are ready to be read."""


class PacketWriter:
    """Writes packet bytes to the private stdout; a closed pipe becomes :class:`ClientGone`.

    While :attr:`holding`, writes are kept (up to :data:`HOLD_LIMIT`) and go out in one write
    at the next :meth:`flush` or the next write made while not holding, in the order they
    were made: the driver holds workers' packets while more are ready, and flushes before it
    waits, so a busy batch wakes the client once per burst instead of once per read.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.holding = False
        self._held = bytearray()

    def __call__(self, data: bytes) -> None:
        if self.holding and len(self._held) + len(data) <= HOLD_LIMIT:
            self._held += data
            return
        self.flush()
        self._write(data)

    def flush(self) -> None:
        """Write what is held."""
        if self._held:
            data = bytes(self._held)
            self._held.clear()
            self._write(data)

    def _write(self, data: bytes) -> None:
        try:
            write_all(self.fd, data)
        except BrokenPipeError as error:
            raise ClientGone("the client closed the server's stdout") from error


@dataclass
class RunOptions:
    """How batches run: what the server's and one-shot mode's options have in common."""

    isolation: str = "worker"
    subunit_version: str = "2.1"
    subtests: str = "report"
    timeout: float | None = None
    jobs: int = 1
    """Local workers per batch (``--jobs``; 0 with remote workers only)."""
    worker_commands: tuple[str, ...] = ()
    """``--worker-command``: one remote worker each, numbered after the local ones
    (``spec/remote-workers.md``)."""
    history_root: str | None = None
    """The project root whose timing history orders a ``--jobs`` batch, if known."""


class SessionDriver:
    """Carries out a :class:`ServerSession`'s actions with real workers, pipes and signals.

    Subclasses write completions (:meth:`send`), carry out ``list-tests`` and ``reload``
    (:meth:`execute`), may apply source changes before a command (:meth:`prepare`), and add
    fds to the poll (:meth:`_poll_inputs`, :meth:`_on_inputs`).
    """

    handled_signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
    """Signals that become session events (SIGINT: interrupt, SIGTERM: terminate)."""

    def __init__(
        self,
        index: TestIndex,
        channel: PrivateChannel,
        options: RunOptions,
        *,
        can_reload: bool,
        generation: int = 0,
        interactive_stdin: bool,
        standby: bool,
    ) -> None:
        in_process = options.isolation == "none"
        self.remotes = {
            options.jobs + k: RemoteWorker(
                command, options.jobs + k, subunit_version=options.subunit_version, log=channel.log
            )
            for k, command in enumerate(options.worker_commands)
        }
        """The ``--worker-command`` workers, by number; connected while the server runs."""
        self.session = ServerSession(
            can_reload=can_reload,
            in_process=in_process,
            timeout=None if in_process else options.timeout,  # nothing to kill in process
            generation=generation,
            jobs=1 if in_process else options.jobs + len(self.remotes),
            units=self._units,
        )
        self.history_root = options.history_root
        self.index = index
        self.channel = channel
        self.isolation = options.isolation
        self.version = options.subunit_version
        self.subtests = options.subtests
        self.standby = standby and not in_process
        """Keep a forked worker ready whenever the session is idle."""
        self.write = PacketWriter(channel.packets_fd)
        self.spawner = WorkerSpawner(
            index,
            WorkerOptions(
                subunit_version=options.subunit_version,
                interactive_stdin=interactive_stdin,
                subtests=options.subtests,
                reuse=options.isolation == "worker",
            ),
            suite_fds=channel.suite_fds.still_open,
            keep=self._remote_pids,
        )
        self.slots: dict[int, PoolWorker] = {}
        """The pool of the running batch: worker number -> its slot."""
        self._command_id = ""
        self._groups: tuple[TestIndex, dict[str, str]] | None = None
        self.exited = False
        self.signals: list[int] = []
        self._found: list = []
        """In process, the ``(id, test)`` pairs between ``StartBatch`` and ``Dispatch``; held
        no longer, or a reload would find the old test classes still referenced."""
        self._wakeup_r = self._wakeup_w = -1
        self._old_handlers: dict = {}

    # -- what subclasses provide ---------------------------------------------------------

    def send(self, body: dict) -> None:
        """Write (or keep) the ``testserver.complete`` with ``body``."""
        raise NotImplementedError

    def execute(self, command: ListTests | Reload) -> list[Action]:
        """Carry out ``command``; return the actions of ``session.command_finished``."""
        raise NotImplementedError

    def prepare(self, command: ListTests | Reload | RunTests) -> None:
        """Before ``command`` runs: apply pending source changes (nothing by default)."""

    def requested(self, command: RunTests) -> list[str]:
        """The ids ``command`` asks for; none means every loaded test."""
        return list(command.test_ids) if command.test_ids else list(self.index.ids)

    def make_worker(self, number: int, write: Write, feed: Feed) -> PoolWorker:
        """Slot ``number`` of the running batch's pool: a forked local worker, or a remote
        one (numbered after the local ones) attached to this batch."""
        remote = self.remotes.get(number)
        if remote is not None:
            return remote.attach(self._command_id, write, feed, tagged=self.session.jobs > 1)
        return WorkerBatch(
            self._command_id,
            self.spawner,
            write,
            feed,
            subunit_version=self.version,
            name=worker_name(number),
            tagged=self.session.jobs > 1,
            keep_worker=self.session.jobs > 1,
        )

    def _poll_inputs(self) -> list[tuple[int, int]]:
        """Further ``(fd, events)`` to poll."""
        return []

    def _on_inputs(self, ready: dict[int, int]) -> None:
        """Handle the fds of :meth:`_poll_inputs` that are ready."""

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        """Poll and act until the session says ``Exit``."""
        try:
            while not self.exited:
                self._step()
        finally:
            self.write.holding = False
        self.write.flush()

    def _step(self) -> None:
        poller = select.poll()
        for fd, events in self._poll_inputs():
            poller.register(fd, events)
        poller.register(self._wakeup_r, select.POLLIN)
        for slot in self.slots.values():
            for fd in slot.fds():
                poller.register(fd, select.POLLIN)
            stdin_fd = slot.stdin_fd()
            if stdin_fd is not None:
                poller.register(stdin_fd, select.POLLOUT)
        ready = dict(poller.poll(0))
        if not ready:  # about to wait: what is held goes out first
            self.write.flush()
            ready = dict(poller.poll(self._timeout_ms()))
        self.spawner.reap_exited()
        self._act(self._take_signals())
        self._on_inputs(ready)  # even after Exit: what was read still gets completions
        if not self.exited:
            self.write.holding = True
            try:
                self._serve_batch(ready)
            finally:
                self.write.holding = False
        if not self.exited:
            self._act(self.session.tick(time.monotonic()))
        if self.slots and not self.session.batch_running:
            self._close_slots()
        if self.standby and self.session.state is State.IDLE and not self.session.stopping:
            self.spawner.prepare_standby()

    def _timeout_ms(self) -> int | None:
        """Until the next deadline (session or exit check); short while workers linger."""
        timeout_ms = TIDY_INTERVAL_MS if self.spawner.untidy else None
        deadlines = [self.session.deadline()]
        deadlines += [slot.exit_check_deadline() for slot in self.slots.values()]
        times = [d for d in deadlines if d is not None]
        if times:
            wait_ms = max(0, int((min(times) - time.monotonic()) * 1000) + 1)
            timeout_ms = wait_ms if timeout_ms is None else min(timeout_ms, wait_ms)
        return timeout_ms

    def _serve_batch(self, ready: dict[int, int]) -> None:
        for number, slot in list(self.slots.items()):
            if self.slots.get(number) is not slot:
                continue  # the batch ended meanwhile
            if any(fd in ready for fd in slot.fds()):
                self._worker_ended(number, slot.on_readable())
            stdin_fd = slot.stdin_fd()
            if stdin_fd is not None and stdin_fd in ready:
                slot.on_stdin_writable()
            if self.slots.get(number) is slot and slot.exit_check_deadline() is not None:
                self._worker_ended(number, slot.check_exit())

    def _worker_ended(self, number: int, end: WorkerEnd | None) -> None:
        if end is None:
            return
        batch = self.session.current
        if end.cause is None:
            actions = self.session.unit_ended(number)
        elif end.lost:
            self.channel.log(f"{worker_name(number)} lost: {end.cause}")
            actions = self.session.worker_lost(end.cause, time.monotonic(), number)
        else:
            actions = self.session.worker_died(end.cause, time.monotonic(), number)
            if not any(isinstance(a, ReportCrash) for a in actions):
                self.slots[number].report_leftover()  # cancelled between tests: global output
        if self.session.current is not batch:  # its completion comes next: end what its
            for slot in self.slots.values():  # workers (and their tests) left running first
                slot.close()
        self._act(actions)

    def _close_slots(self) -> None:
        slots, self.slots = self.slots, {}
        for slot in slots.values():
            slot.close()

    def _remote_pids(self) -> list[int]:
        """The local pids of the remote workers' commands: children the sweep must spare."""
        pids = (remote.pid() for remote in self.remotes.values())
        return [pid for pid in pids if pid is not None]

    def close_remotes(self) -> None:
        """Send every connected remote ``quit`` and end its command (the server exits)."""
        for remote in self.remotes.values():
            remote.request_quit()  # all at once: they exit side by side
        for remote in self.remotes.values():
            remote.shutdown()

    # -- actions -------------------------------------------------------------------------

    def _act(self, actions: list[Action]) -> None:
        """Carry out ``actions`` in order; an action's follow-ups come before the rest."""
        pending = collections.deque(actions)
        while pending:
            pending.extendleft(reversed(self._do(pending.popleft())))

    def _do(self, action: Action) -> list[Action]:
        if isinstance(action, Send):
            self.send(action.body)
        elif isinstance(action, Execute):
            self.prepare(action.command)
            return self.execute(action.command)
        elif isinstance(action, StartBatch):
            return self._start_batch(action.command)
        elif isinstance(action, Dispatch):
            return self._dispatch(action)
        elif isinstance(action, ForwardStdin):
            for slot in self._slots_of(action.worker):
                slot.send_stdin(action.data)
        elif isinstance(action, Interrupt):
            for slot in self.slots.values():  # in process the test was interrupted already
                slot.interrupt()
        elif isinstance(action, Kill):
            for slot in self._slots_of(action.worker):
                slot.kill()
        elif isinstance(action, ReportCrash):
            self.slots[action.worker].report_crash(action.crash)
        elif isinstance(action, Exit):
            self.exited = True
        return []

    def _start_batch(self, command: RunTests) -> list[Action]:
        self.prepare(command)
        found, unknown = self.index.resolve(self.requested(command))
        if unknown:
            reporter = PacketResult(self.write, subunit_version=self.version)
            for test_id in unknown:
                reporter.report_missing(test_id)
        self._found = found if self.isolation == "none" else []  # no test objects kept
        self._close_slots()
        self._command_id = command.id
        return self.session.batch_resolved([test_id for test_id, _ in found], unknown)

    def _units(self, ids: list[str], workers: int) -> UnitSource:
        """The scheduler of a ``--jobs`` batch: fixture groups whole, longest first."""
        from testserver.scheduling.scheduler import Scheduler
        from testserver.scheduling.timehistory import project_times

        if self._groups is None or self._groups[0] is not self.index:
            self._groups = (self.index, fixture_groups(self.index))
        root = self.history_root
        durations = project_times(root) if root else {}
        return Scheduler(ids, workers=workers, group_of=self._groups[1], durations=durations)

    def _slot(self, number: int) -> PoolWorker:
        slot = self.slots.get(number)
        if slot is None:
            session = self.session

            def feed(raw: bytes) -> Kind:
                return session.worker_packet(raw, time.monotonic(), number)

            slot = self.slots[number] = self.make_worker(number, self.write, feed)
        return slot

    def _slots_of(self, worker: int | None) -> list[PoolWorker]:
        """The slot ``worker`` (``None``: every slot of the batch)."""
        if worker is None:
            return list(self.slots.values())
        return [self.slots[worker]] if worker in self.slots else []

    def _dispatch(self, action: Dispatch) -> list[Action]:
        if self.isolation == "none":
            return self._run_in_process()
        slot = self._slot(action.worker)
        slot.dispatch(action.test_ids)
        if action.close_stdin:
            slot.send_stdin(b"")
        return []

    def _run_in_process(self) -> list[Action]:
        """``--isolation none``: run the batch here, then end it (signals first)."""
        found, self._found = self._found, []
        run_in_process(
            found,
            self.write,
            self.channel.capture,
            lambda raw: self.session.worker_packet(raw, 0.0),  # no timeout: time unused
            subunit_version=self.version,
            should_stop=lambda: bool(self.signals),
            on_interrupt=lambda: self.signals.append(signal.SIGINT),
            subtests=self.subtests,
        )
        reaping.sweep(set())  # no workers here: every child left is a test's
        return self._take_signals() + self.session.batch_ended()

    # -- signals -------------------------------------------------------------------------

    def _install_signals(self) -> None:
        self._wakeup_r, self._wakeup_w = (make_private(fd) for fd in os.pipe())
        os.set_blocking(self._wakeup_r, False)
        os.set_blocking(self._wakeup_w, False)
        self._old_wakeup = signal.set_wakeup_fd(self._wakeup_w)
        self._old_handlers = {
            number: signal.signal(number, self._on_signal) for number in self.handled_signals
        }
        self._old_handlers.update(reaping.forward_signals(self._signal_target))

    def _signal_target(self) -> int | None:
        """Where a test's signal to the server goes: the first running worker, else nowhere
        (with ``--isolation none`` the defaults are back while tests run, see
        run_in_process)."""
        pids = [slot.worker_pid() for slot in self.slots.values()]
        return next((pid for pid in pids if pid is not None), None)

    def _restore_signals(self) -> None:
        if self._wakeup_r < 0:
            return
        signal.set_wakeup_fd(self._old_wakeup)
        for number, handler in self._old_handlers.items():
            signal.signal(number, handler)
        for fd in (self._wakeup_r, self._wakeup_w):
            os.close(fd)
        self._wakeup_r = self._wakeup_w = -1

    def _on_signal(self, number: int, frame: object) -> None:
        self.signals.append(number)

    def _take_signals(self) -> list[Action]:
        """The session's answer to the signals that came since the last look."""
        try:
            while os.read(self._wakeup_r, 512):
                pass
        except BlockingIOError:
            pass
        signals, self.signals = self.signals, []
        actions: list[Action] = []
        now = time.monotonic()
        for number in signals:
            if self.session.state is State.CLOSED:
                break
            if number == signal.SIGTERM:
                actions += self.session.terminate(now)
            else:
                actions += self.session.interrupt(now)
        return actions
