"""The run model of the client commands: packets in, tests and a tally out.

:func:`select` picks test ids by exact id or by pattern. :class:`Assembler` turns the packets
of a run into :class:`Started`, :class:`Outcome` and :class:`Output`; :class:`Tally` counts
them into what the run amounts to (its summary line and unittest-style verdict). :func:`drive`
runs one batch on a :class:`~testserver.clients.client.Client`, feeding a :class:`Renderer` (the
base class shows nothing) and handling Ctrl-C and input requests.

Shared by ``testserver run`` and ``list`` (:mod:`testserver.clients.console`), ``--format json``
(:mod:`testserver.clients.jsonout`), ``testserver watch`` (:mod:`testserver.clients.watch`) and the
editor bridge (:mod:`testserver.clients.bridge`). This module imports only the client and the wire
layer.
"""

from __future__ import annotations

import fnmatch
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from testserver.clients.client import Client, ClientError
from testserver.wire.clientsession import ControlReceived, StreamPacket
from testserver.wire.constants import FAILED_TEST_PREFIX
from testserver.wire.control import STDIN_WANTED
from testserver.wire.events import Packet

PROGRESS = {"success": ".", "fail": "F", "skip": "s", "xfail": "x", "uxsuccess": "u"}
"""Progress character of each final status (a failing fixture pseudo-test shows ``E``); its
keys are the statuses a :class:`Tally` counts."""

PROBLEM_STATUSES = frozenset({"fail", "uxsuccess"})
"""Final statuses that make a run fail (unittest counts unexpected successes as failures)."""

FAILURE_EXCEPTIONS = ("AssertionError", "MismatchError")
"""Exception names (the last dotted part) that make a failing test a FAIL, as unittest's
``failureException`` and testtools' matcher error do; any other exception is an ERROR."""

TEXT_FIRST = ("traceback", "reason")
"""Attachments shown first in a failure block, unlabelled, and read by
:meth:`Outcome.headline`."""


# -- selecting tests ---------------------------------------------------------------------


def select(ids: Sequence[str], selectors: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(selected ids in load order, selectors that matched nothing)``: the one selection
    rule of every client (``run``, ``list``, ``watch``, the editor bridge; README "Choosing").

    A selector is an exact test id (it selects itself only); else a dotted prefix (a package,
    module or class: every test below it, and the import-failure stand-in of the module it
    names or lies in); else a pattern as in unittest's ``-k`` (fnmatch with ``*``, else a
    substring). No selector selects every id.
    """
    if not selectors:
        return list(ids), []
    known = set(ids)
    failed = {i[len(FAILED_TEST_PREFIX) :]: i for i in ids if i.startswith(FAILED_TEST_PREFIX)}
    chosen: set[str] = set()
    unmatched = []
    for selector in selectors:
        prefix = selector + "."
        if selector in known:
            hits = {selector}
        else:
            hits = {i for i in ids if i.startswith(prefix)}
            hits |= {
                stand_in
                for module, stand_in in failed.items()
                if module.startswith(prefix) or prefix.startswith(f"{module}.")
            }
        if not hits:
            pattern = selector if "*" in selector else f"*{selector}*"
            hits = {test_id for test_id in ids if fnmatch.fnmatchcase(test_id, pattern)}
        if not hits:
            unmatched.append(selector)
        chosen |= hits
    return [test_id for test_id in ids if test_id in chosen], unmatched


# -- assembling packets into tests -------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """A test began (``inprogress``)."""

    test_id: str
    parent_id: str | None
    runnable: bool


@dataclass(frozen=True)
class Outcome:
    """A test finished: its final status and every attachment it carried, joined."""

    test_id: str
    status: str
    parent_id: str | None = None
    runnable: bool = True
    attachments: dict[str, bytes] = field(default_factory=dict)
    started_ns: int | None = None
    finished_ns: int | None = None

    @property
    def kind(self) -> str:
        """``"test"``, ``"subtest"`` (has a parent) or ``"fixture"`` (not runnable)."""
        if self.parent_id is not None:
            return "subtest"
        return "test" if self.runnable else "fixture"

    @property
    def duration(self) -> float | None:
        """Seconds from ``inprogress`` to the final status, when both had timestamps."""
        if self.started_ns is None or self.finished_ns is None:
            return None
        return max(0, self.finished_ns - self.started_ns) / 1e9

    def text(self, name: str) -> str:
        """Attachment ``name`` decoded as UTF-8 with replacement ("" when absent)."""
        return self.attachments.get(name, b"").decode("utf-8", "replace")

    @property
    def is_error(self) -> bool:
        """A failure unittest would call an ERROR: a failing fixture, or a test that raised
        something other than an assertion (judged from its traceback's last line)."""
        if self.status != "fail":
            return False
        if self.kind == "fixture":
            return True
        if "traceback" not in self.attachments:
            return False  # an unknown id, a crash or a cancel: reported, not raised
        name = self.headline().partition(":")[0].strip().rpartition(".")[2]
        return bool(name) and " " not in name and name not in FAILURE_EXCEPTIONS

    def headline(self) -> str:
        """The last non-blank line of the traceback or reason: what went wrong, in short."""
        for name in TEXT_FIRST:
            for line in reversed(self.text(name).splitlines()):
                if line.strip():
                    return line.strip()
        return ""


@dataclass(frozen=True)
class Output:
    """Output written outside any test (a global ``stdout``/``stderr`` attachment)."""

    name: str
    data: bytes


class Assembler:
    """Turns the packets of a run into :class:`Started`, :class:`Outcome` and :class:`Output`.

    Attachment pieces are joined per (route code, test id, name) until the final status
    (for tests) or ``eof`` (for global output); control events are not its business.
    """

    def __init__(self) -> None:
        self._files: dict[tuple[str | None, str | None], dict[str, bytearray]] = {}
        self._started: dict[tuple[str | None, str], int | None] = {}

    def feed(self, packet: Packet) -> list[Started | Outcome | Output]:
        """The items ``packet`` completes (usually none or one)."""
        items: list[Started | Outcome | Output] = []
        key = (packet.route_code, packet.test_id)
        if packet.file_name is not None:
            files = self._files.setdefault(key, {})
            files.setdefault(packet.file_name, bytearray()).extend(packet.file_bytes)
            if packet.test_id is None and packet.eof:
                items.append(Output(packet.file_name, bytes(files.pop(packet.file_name))))
        if packet.test_id is None or packet.status is None:
            return items
        if packet.status == "inprogress":
            self._started[(packet.route_code, packet.test_id)] = packet.timestamp_ns
            items.append(Started(packet.test_id, packet.parent_test_id, packet.runnable))
        elif packet.is_final:
            files = self._files.pop(key, {})
            items.append(
                Outcome(
                    packet.test_id,
                    packet.status,
                    packet.parent_test_id,
                    packet.runnable,
                    {name: bytes(data) for name, data in files.items()},
                    self._started.pop((packet.route_code, packet.test_id), None),
                    packet.timestamp_ns,
                )
            )
        return items


@dataclass
class Tally:
    """What a run amounts to: counts like the server's ``outcomes``, and the failures."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROGRESS, 0))
    errors: int = 0
    """Failing fixture pseudo-tests (``setUpClass (pkg.mod.Class)``) and tests that raised an
    exception other than an assertion (:attr:`Outcome.is_error`)."""
    test_errors: int = 0
    """The tests among :attr:`errors` (counted in ``counts["fail"]`` too)."""
    failfast: bool = False
    """The run was cancelled on purpose after its first failure (``-x``)."""
    problems: list[Outcome] = field(default_factory=list)
    """Failed and unexpectedly successful tests, subtests and fixtures, in order."""
    output: list[Output] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    complete: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0
    interrupted: bool = False
    finished: int = 0
    """Every outcome, subtests and fixtures included."""

    def add(self, outcome: Outcome) -> None:
        """Count one finished test."""
        self.finished += 1
        if outcome.status in PROBLEM_STATUSES:
            self.problems.append(outcome)
        if outcome.kind == "test":
            self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        if outcome.kind != "subtest" and outcome.is_error:
            self.errors += 1
            self.test_errors += outcome.kind == "test"

    @property
    def ran(self) -> int:
        """Runnable tests that finished (subtests and fixtures excluded, as ``ran``)."""
        return sum(self.counts.values())

    @property
    def failures(self) -> int:
        """Failed tests that are not errors (``fail`` outcomes raised by an assertion)."""
        return self.counts["fail"] - self.test_errors

    @property
    def not_run(self) -> list[str]:
        """Requested ids that got no final status (a cancel, a fixture, a broken runner)."""
        return list(self.complete.get("not_run", []))

    @property
    def unknown(self) -> list[str]:
        """Requested ids the server does not know."""
        return list(self.complete.get("unknown", []))

    @property
    def ok(self) -> bool:
        """True when the run counts as a success (unittest's ``wasSuccessful``, and more)."""
        return (
            self.finished > 0
            and not self.problems
            and not self.unmatched
            and not self.interrupted
            and self.complete.get("status") == "ok"
            and not self.complete.get("crashes")
            and not self.not_run
            and not self.unknown
        )

    def summary(self, dash: str = "—") -> str:
        """``Ran 12 tests in 0.31s — 10 passed, 1 failed, 1 skipped``."""
        counts = self.counts
        parts = [
            (counts["success"], "passed", "passed"),
            (self.failures, "failed", "failed"),
            (self.errors, "error", "errors"),
            (counts["skip"], "skipped", "skipped"),
            (counts["xfail"], "expected failure", "expected failures"),
            (counts["uxsuccess"], "unexpected success", "unexpected successes"),
            (len(self.not_run), "not run", "not run"),
        ]
        text = f"Ran {self.ran} test{'' if self.ran == 1 else 's'} in {self.elapsed:.2f}s"
        words = ", ".join(f"{n} {one if n == 1 else many}" for n, one, many in parts if n)
        return f"{text} {dash} {words}" if words else text

    def verdict(self) -> str:
        """unittest's last line: ``OK``, ``OK (skipped=1)``, ``FAILED (failures=1)``..."""
        counts = self.counts
        details = [
            ("failures", self.failures),
            ("errors", self.errors),
            ("skipped", counts["skip"]),
            ("expected failures", counts["xfail"]),
            ("unexpected successes", counts["uxsuccess"]),
            ("not run", len(self.not_run)),
            ("unknown", len(self.unknown)),
            ("unmatched", len(self.unmatched)),
        ]
        inside = ", ".join(f"{name}={number}" for name, number in details if number)
        if self.finished == 0 and self.complete.get("status") == "ok":
            word = "NO TESTS RAN"
        elif self.interrupted or (self.complete.get("status") == "cancelled" and not self.failfast):
            word = "INTERRUPTED"
        else:
            word = "OK" if self.ok else "FAILED"
        return f"{word} ({inside})" if inside else word


# -- the renderer interface --------------------------------------------------------------


class Renderer:
    """What a run looks like; the base class shows nothing. See :func:`drive`."""

    def start(self, total: int | None, changed: Sequence[str] = ()) -> None:
        """A run of ``total`` tests (``None``: unknown) begins; ``changed`` files caused it."""

    def started(self, item: Started) -> None:
        """A test began."""

    def finished(self, outcome: Outcome) -> None:
        """A test finished."""

    def output(self, item: Output) -> None:
        """Output outside any test arrived."""

    def packet(self, packet: Packet) -> None:
        """A packet of the run that is not a control event, before it is assembled."""

    def control(self, name: str, body: dict[str, Any]) -> None:
        """A control event other than the run's completion (``testserver.reload``...)."""

    def message(self, text: str) -> None:
        """Something the user should know that is not a test (written to stderr)."""
        print(f"testserver: {text}", file=sys.stderr, flush=True)

    def finish(self, tally: Tally) -> None:
        """The run completed."""


# -- driving a run -----------------------------------------------------------------------


class _Interrupts:
    """While entered (and enabled): the first Ctrl-C cancels the run, a second one aborts it."""

    def __init__(self, client: Client, enabled: bool) -> None:
        self.client = client
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.count = 0
        self.previous: Any = None

    def __enter__(self) -> _Interrupts:
        if self.enabled:
            self.previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def _on_sigint(self, number: int, frame: object) -> None:
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt
        # A thread, because the main thread may hold the client's write lock right now.
        threading.Thread(target=self._cancel, daemon=True).start()

    def _cancel(self) -> None:
        try:
            self.client.cancel()
        except ClientError:
            pass


def drive(
    client: Client,
    test_ids: Sequence[str],
    renderer: Renderer,
    *,
    total: int | None = None,
    changed: Sequence[str] = (),
    cancel_on_interrupt: bool = True,
    tally: Tally | None = None,
) -> Tally:
    """Run ``test_ids`` (all when empty) on ``client``, feeding ``renderer``; return the tally.

    ``tally`` may come pre-filled (say with unmatched selectors); by default a fresh one.

    A test that waits for input gets end of input (no one is typing). With
    ``cancel_on_interrupt`` the first Ctrl-C cancels the batch (the run then completes with
    the tests not run listed) and a second one raises :class:`KeyboardInterrupt`; without it,
    Ctrl-C raises at once. :class:`~testserver.clients.client.ClientError` propagates.
    """
    tally = tally if tally is not None else Tally()
    assembler = Assembler()
    renderer.start(total, changed)
    began = time.perf_counter()
    run = client.run(test_ids)
    with _Interrupts(client, cancel_on_interrupt) as guard:
        for packet, received in run.events():
            if isinstance(received, StreamPacket):
                renderer.packet(packet)
                for item in assembler.feed(packet):
                    _dispatch(item, renderer, tally)
            elif isinstance(received, ControlReceived):
                if received.name == STDIN_WANTED:
                    client.send_stdin(b"")
                else:
                    renderer.control(received.name, received.body)
    tally.complete = run.complete or {}
    tally.interrupted = guard.count > 0
    tally.elapsed = time.perf_counter() - began
    renderer.finish(tally)
    return tally


def _dispatch(item: Started | Outcome | Output, renderer: Renderer, tally: Tally) -> None:
    if isinstance(item, Started):
        renderer.started(item)
    elif isinstance(item, Outcome):
        tally.add(item)
        renderer.finished(item)
    else:
        tally.output.append(item)
        renderer.output(item)
