"""The driver of a :class:`~testserver.wire.serversession.ServerSession`: the I/O around it.

The session decides (queue, completions, cancel, deadlines, accounting); :class:`SessionDriver`
does: it polls the batch's worker, the signal wakeup pipe and whatever a subclass adds (the
command channel), tells the session what happened, and carries out the actions it returns,
in order, in :meth:`SessionDriver._act`. The warm server (:mod:`~testserver.serve.server`)
and one-shot mode (:mod:`~testserver.serve.oneshot`) are its two subclasses.
"""

from __future__ import annotations

import collections
import os
import select
import signal
import time
from typing import Protocol

from testserver.engine.fds import make_private
from testserver.engine.loading import TestIndex
from testserver.engine.results import PacketResult
from testserver.serve import reaping
from testserver.serve.batch import WorkerBatch, WorkerEnd, run_in_process
from testserver.serve.channel import PrivateChannel
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

TIDY_INTERVAL_MS = 20
"""While a finished worker or what its tests started may still be alive, look this often."""


class ClientGone(Exception):
    """The client closed the server's stdout: nobody is listening any more."""


class PacketWriter:
    """Writes packet bytes to the private stdout; a closed pipe becomes :class:`ClientGone`."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __call__(self, data: bytes) -> None:
        try:
            write_all(self.fd, data)
        except BrokenPipeError as error:
            raise ClientGone("the client closed the server's stdout") from error


class RunOptions(Protocol):
    """How batches run: what the server's and one-shot mode's options have in common."""

    isolation: str
    subunit_version: str
    subtests: str
    timeout: float | None


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
        self.session = ServerSession(
            can_reload=can_reload,
            in_process=in_process,
            timeout=None if in_process else options.timeout,  # nothing to kill in process
            generation=generation,
        )
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
        )
        self.batch: WorkerBatch | None = None
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

    def _poll_inputs(self) -> list[tuple[int, int]]:
        """Further ``(fd, events)`` to poll."""
        return []

    def _on_inputs(self, ready: dict[int, int]) -> None:
        """Handle the fds of :meth:`_poll_inputs` that are ready."""

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        """Poll and act until the session says ``Exit``."""
        while not self.exited:
            self._step()

    def _step(self) -> None:
        poller = select.poll()
        for fd, events in self._poll_inputs():
            poller.register(fd, events)
        poller.register(self._wakeup_r, select.POLLIN)
        batch = self.batch
        if batch is not None:
            for fd in batch.fds():
                poller.register(fd, select.POLLIN)
            stdin_fd = batch.stdin_fd()
            if stdin_fd is not None:
                poller.register(stdin_fd, select.POLLOUT)
        ready = dict(poller.poll(self._timeout_ms()))
        self.spawner.reap_exited()
        self._act(self._take_signals())
        self._on_inputs(ready)  # even after Exit: what was read still gets completions
        if not self.exited:
            self._serve_batch(ready)
        if not self.exited:
            self._act(self.session.tick(time.monotonic()))
        if self.batch is not None and not self.session.batch_running:
            self.batch = None
        if self.standby and self.session.state is State.IDLE and not self.session.stopping:
            self.spawner.prepare_standby()

    def _timeout_ms(self) -> int | None:
        """Until the next deadline (session or exit check); short while workers linger."""
        timeout_ms = TIDY_INTERVAL_MS if self.spawner.untidy else None
        deadlines = [self.session.deadline()]
        if self.batch is not None:
            deadlines.append(self.batch.exit_check_deadline())
        times = [d for d in deadlines if d is not None]
        if times:
            wait_ms = max(0, int((min(times) - time.monotonic()) * 1000) + 1)
            timeout_ms = wait_ms if timeout_ms is None else min(timeout_ms, wait_ms)
        return timeout_ms

    def _serve_batch(self, ready: dict[int, int]) -> None:
        batch = self.batch
        if batch is None:
            return
        if any(fd in ready for fd in batch.fds()):
            self._worker_ended(batch.on_readable())
        stdin_fd = batch.stdin_fd()
        if stdin_fd is not None and stdin_fd in ready:
            batch.on_stdin_writable()
        if self.batch is batch and batch.exit_check_deadline() is not None:
            self._worker_ended(batch.check_exit())

    def _worker_ended(self, end: WorkerEnd | None) -> None:
        if end is None:
            return
        if end.cause is None:
            self._act(self.session.batch_ended())
            return
        actions = self.session.worker_died(end.cause, time.monotonic())
        if self.batch is not None and not any(isinstance(a, ReportCrash) for a in actions):
            self.batch.report_leftover()  # cancelled between tests: its output is global
        self._act(actions)

    # -- actions -------------------------------------------------------------------------

    def _act(self, actions: list[Action]) -> None:
        """Carry out ``actions`` in order; an action's follow-ups come before the rest."""
        pending = collections.deque(actions)
        while pending:
            pending.extendleft(reversed(self._do(pending.popleft())))

    def _do(self, action: Action) -> list[Action]:
        batch = self.batch
        if isinstance(action, Send):
            self.send(action.body)
        elif isinstance(action, Execute):
            self.prepare(action.command)
            return self.execute(action.command)
        elif isinstance(action, StartBatch):
            return self._start_batch(action.command)
        elif isinstance(action, Dispatch):
            return self._dispatch(action)
        elif batch is not None and isinstance(action, ForwardStdin):
            batch.send_stdin(action.data)
        elif batch is not None and isinstance(action, Interrupt):
            batch.interrupt()  # in process the test was interrupted already
        elif batch is not None and isinstance(action, Kill):
            batch.kill()
        elif batch is not None and isinstance(action, ReportCrash):
            batch.report_crash(action.crash)
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
        self.batch = None
        if self.isolation != "none":
            self.batch = WorkerBatch(
                command.id, self.spawner, self.write, self._feed, subunit_version=self.version
            )
        return self.session.batch_resolved([test_id for test_id, _ in found], unknown)

    def _feed(self, raw: bytes) -> Kind:
        return self.session.worker_packet(raw, time.monotonic())

    def _dispatch(self, action: Dispatch) -> list[Action]:
        if self.batch is None:
            return self._run_in_process()
        self.batch.dispatch(action.test_ids)
        if action.close_stdin:
            self.batch.send_stdin(b"")
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
        """Where a test's signal to the server goes: the running worker, else nowhere (with
        ``--isolation none`` the defaults are back while tests run, see run_in_process)."""
        return None if self.batch is None else self.batch.worker_pid()

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
