"""``testserver run`` and ``testserver list``: tests for people at a terminal.

``run`` starts a warm server for one use (spawn, list, run, quit) through
:mod:`testserver.client` and shows the packets the way unittest and pytest users expect::

    testserver run [-t TOP] [-s START] [-p PATTERN] [--isolation fork|none] [--timeout S]
                   [--format human|json] [--no-color] [ID-or-pattern ...]
    testserver list [-t TOP] [-s START] [-p PATTERN] [--format human|json] [pattern ...]

A positional argument selects tests: an exact test id selects that test; otherwise it is a
pattern, matched like unittest's ``-k`` (fnmatch when it contains ``*``, else a substring).

Human output is a progress line of one character per finished test (``.`` passed, ``F``
failed, ``E`` fixture error, ``s`` skipped, ``x`` expected failure, ``u`` unexpected
success), then a block per failure with its traceback and captured output, then
``Ran 12 tests in 0.31s — 10 passed, 1 failed, 1 skipped`` and ``OK`` or ``FAILED (...)``.
Colour is used only when stdout is a terminal, ``NO_COLOR`` is unset and ``--no-color`` was
not given. The exit status is 0 when every test passed (skips and expected failures
included), 1 when a test failed, a selector matched nothing or the run was interrupted, and
2 when the server could not be started or died.

The packet-to-test assembly (:class:`Assembler`), the counting (:class:`Tally`) and the run
loop (:func:`drive`) are shared with ``--format json`` (:mod:`testserver.jsonout`) and
``testserver watch`` (:mod:`testserver.watch`). This module imports only the wire layer.
"""

from __future__ import annotations

import argparse
import fnmatch
import io
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from testserver.client import Client, ClientError
from testserver.wire.control import COMPLETE, STDIN_WANTED, decode_control
from testserver.wire.events import Packet

EXIT_OK = 0
EXIT_FAILED = 1
"""A test failed, a selector matched nothing, or the run was interrupted."""
EXIT_ERROR = 2
"""Bad arguments, or the server could not start or died."""

RULE_WIDTH = 70
"""Width of the ``=====`` and ``-----`` rules around a failure, as unittest draws them."""

DEFAULT_WIDTH = 80
"""Progress line width when stdout is not a terminal."""

PERCENT_WIDTH = len(" [100%]")
"""Room kept at the end of a progress line for the percentage."""

PROGRESS = {"success": ".", "fail": "F", "skip": "s", "xfail": "x", "uxsuccess": "u"}
"""Progress character of each final status (a failing fixture pseudo-test shows ``E``)."""

COLOURS = {".": "32", "F": "31", "E": "31", "u": "31", "s": "33", "x": "33"}
"""ANSI colour of each progress character: green, red, yellow."""

PROBLEM_STATUSES = frozenset({"fail", "uxsuccess"})
"""Final statuses that make a run fail (unittest counts unexpected successes as failures)."""

TEXT_FIRST = ("traceback", "reason")
"""Attachments shown first in a failure block, unlabelled."""


# -- selecting tests ---------------------------------------------------------------------


def select(ids: Sequence[str], selectors: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(selected ids in load order, selectors that matched nothing)``.

    An exact id selects itself only; any other selector is a pattern as in unittest's
    ``-k``. No selector selects every id.
    """
    if not selectors:
        return list(ids), []
    known = set(ids)
    chosen: set[str] = set()
    unmatched = []
    for selector in selectors:
        if selector in known:
            hits = {selector}
        else:
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
    """Failing fixture pseudo-tests (``setUpClass (pkg.mod.Class)``)."""
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
        elif outcome.kind == "fixture" and outcome.status == "fail":
            self.errors += 1

    @property
    def ran(self) -> int:
        """Runnable tests that finished (subtests and fixtures excluded, as ``ran``)."""
        return sum(self.counts.values())

    @property
    def not_run(self) -> list[str]:
        """Ids the server never started (after a cancel)."""
        return list(self.complete.get("not_run", []))

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
        )

    def summary(self, dash: str = "—") -> str:
        """``Ran 12 tests in 0.31s — 10 passed, 1 failed, 1 skipped``."""
        counts = self.counts
        parts = [
            (counts["success"], "passed", "passed"),
            (counts["fail"], "failed", "failed"),
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
            ("failures", counts["fail"]),
            ("errors", self.errors),
            ("skipped", counts["skip"]),
            ("expected failures", counts["xfail"]),
            ("unexpected successes", counts["uxsuccess"]),
            ("not run", len(self.not_run)),
            ("unmatched", len(self.unmatched)),
        ]
        inside = ", ".join(f"{name}={number}" for name, number in details if number)
        if self.finished == 0 and self.complete.get("status") == "ok":
            word = "NO TESTS RAN"
        elif self.interrupted or self.complete.get("status") == "cancelled":
            word = "INTERRUPTED"
        else:
            word = "OK" if self.ok else "FAILED"
        return f"{word} ({inside})" if inside else word


# -- rendering ---------------------------------------------------------------------------


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

    def control(self, name: str, body: dict[str, Any]) -> None:
        """A control event other than the run's completion (``testserver.reload``...)."""

    def message(self, text: str) -> None:
        """Something the user should know that is not a test (written to stderr)."""
        print(f"testserver: {text}", file=sys.stderr, flush=True)

    def finish(self, tally: Tally) -> None:
        """The run completed."""


def use_colour(stream: TextIO, disabled: bool = False) -> bool:
    """Colour only on a terminal, without ``NO_COLOR`` (no-color.org) or ``TERM=dumb``."""
    if disabled or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Style:
    """Wraps text in ANSI colour codes, or leaves it alone."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, *codes: str) -> str:
        if not self.enabled or not codes:
            return text
        return f"\x1b[{';'.join(codes)}m{text}\x1b[0m"

    def verdict(self, tally: Tally) -> str:
        """The verdict, green when OK, red otherwise."""
        return self(tally.verdict(), "1", "32" if tally.ok else "31")


def dash_for(stream: TextIO) -> str:
    """An em dash if ``stream`` can encode one, else ``-``."""
    try:
        "—".encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "-"
    return "—"


class HumanRenderer(Renderer):
    """unittest-like output: a progress line, failure blocks, a summary and a verdict."""

    def __init__(self, stream: TextIO, style: Style, width: int | None = None) -> None:
        self.stream = stream
        self.style = style
        self.width = width or DEFAULT_WIDTH
        self.dash = dash_for(stream)
        self.total: int | None = None
        self.done = 0
        self.column = 0

    def start(self, total: int | None, changed: Sequence[str] = ()) -> None:
        self.total, self.done, self.column = total, 0, 0

    def finished(self, outcome: Outcome) -> None:
        if outcome.kind == "subtest":
            return
        char = PROGRESS.get(outcome.status, "?")
        if outcome.kind == "fixture":
            char = "E" if outcome.status == "fail" else char
        else:
            self.done += 1
        self.stream.write(self.style(char, *([COLOURS[char]] if char in COLOURS else [])))
        self.column += 1
        if self.column >= self.width - PERCENT_WIDTH:
            self._end_line()
        self.stream.flush()

    def _end_line(self) -> None:
        if self.total:
            percent = min(100, self.done * 100 // self.total)
            padding = " " * max(0, self.width - PERCENT_WIDTH - self.column)
            self.stream.write(f"{padding} [{percent:3d}%]")
        self.stream.write("\n")
        self.column = 0

    def finish(self, tally: Tally) -> None:
        if tally.complete.get("status") == "ok":
            self.done = self.total or 0  # tests skipped by a failed fixture never report
        if self.column:
            self._end_line()
        write = self.stream.write
        for outcome in tally.problems:
            write(self.failure_block(outcome))
        if not tally.ok:
            for item in tally.output:
                write(self._section(f"{item.name} outside tests", item.data))
        for crash in tally.complete.get("crashes", []):
            write(self.style(f"crash: {crash}", "31") + "\n")
        message = tally.complete.get("message")
        if tally.complete.get("status") not in (None, "ok") and message:
            write(f"testserver: {message}\n")
        write("-" * RULE_WIDTH + "\n")
        write(tally.summary(self.dash) + "\n\n")
        write(self.style.verdict(tally) + "\n")
        self.stream.flush()

    def failure_block(self, outcome: Outcome) -> str:
        """``=====``, ``FAIL: id``, ``-----``, the traceback, then the other attachments."""
        label = {"uxsuccess": "UNEXPECTED SUCCESS", "fail": "FAIL"}.get(outcome.status, "FAIL")
        if outcome.kind == "fixture":
            label = "ERROR"
        lines = ["=" * RULE_WIDTH, self.style(f"{label}: {outcome.test_id}", "1", "31")]
        lines.append("-" * RULE_WIDTH)
        block = "\n".join(lines) + "\n"
        for name in TEXT_FIRST:
            if name in outcome.attachments:
                block += _ensure_newline(outcome.text(name))
        for name, data in outcome.attachments.items():
            if name not in TEXT_FIRST and data:
                block += self._section(f"captured {name}", data)
        return block + "\n"

    def _section(self, title: str, data: bytes) -> str:
        rule = f" {title} ".center(RULE_WIDTH, "-")
        return f"{self.style(rule, '2')}\n{_ensure_newline(data.decode('utf-8', 'replace'))}"


def _ensure_newline(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


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
    Ctrl-C raises at once. :class:`~testserver.client.ClientError` propagates.
    """
    tally = tally if tally is not None else Tally()
    assembler = Assembler()
    renderer.start(total, changed)
    began = time.perf_counter()
    run = client.run(test_ids)
    with _Interrupts(client, cancel_on_interrupt) as guard:
        for packet in run:
            control = decode_control(packet)
            if control is None:
                for item in assembler.feed(packet):
                    _dispatch(item, renderer, tally)
            elif control[0] == STDIN_WANTED:
                client.send_stdin(b"")
            elif control[0] != COMPLETE:  # other commands' completions (our stdin's) aside
                renderer.control(*control)
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


# -- command lines -----------------------------------------------------------------------


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The loading options every client command passes on to ``python -m testserver``."""
    group = parser.add_argument_group("loading (as python -m testserver / unittest discover)")
    group.add_argument("-s", "--start-directory", dest="start", help="discovery start directory")
    group.add_argument("-t", "--top-level-directory", dest="top", help="top-level directory")
    group.add_argument("-p", "--pattern", help="test file pattern (default: test*.py)")
    group.add_argument(
        "--isolation",
        choices=("fork", "none"),
        help="fork (default): a crashing test cannot take the server down; none: in-process",
    )
    group.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="fail a test that runs longer"
    )


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--format`` and ``--no-color``."""
    parser.add_argument(
        "--format",
        choices=("human", "json"),
        default="human",
        help="human (default) or json: one JSON object per line (spec/json-output.md)",
    )
    parser.add_argument("--no-color", action="store_true", help="never use colour")


def server_arguments(args: argparse.Namespace) -> list[str]:
    """The ``python -m testserver --serve`` arguments for the loading options in ``args``."""
    argv = []
    for flag, value in (
        ("-s", args.start),
        ("-t", args.top),
        ("-p", args.pattern),
        ("--isolation", args.isolation),
        ("--timeout", args.timeout),
    ):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def project_roots(args: argparse.Namespace) -> list[str]:
    """Where test modules live: the top-level directory (unittest defaults it to START)."""
    return [os.path.abspath(args.top or args.start or ".")]


def spawn(server_args: Sequence[str], command: str) -> Client | None:
    """Start a server for ``command``; on failure say why on stderr and return ``None``."""
    try:
        return Client.spawn(list(server_args), stderr=None)
    except (OSError, ClientError) as error:
        print(f"testserver {command}: cannot start the server: {error}", file=sys.stderr)
        return None


def output_stream(args: argparse.Namespace, stdout: TextIO | None) -> TextIO:
    """``stdout``, or ``sys.stdout`` set up for ``--format``: UTF-8 for JSON (the spec says
    so), replacement of what the terminal cannot show for humans (never a crash)."""
    if stdout is not None:
        return stdout
    stream = sys.stdout
    if isinstance(stream, io.TextIOWrapper):
        if args.format == "json":
            stream.reconfigure(encoding="utf-8", errors="strict")
        else:
            stream.reconfigure(errors="replace")
    return stream


def stdout_closed() -> int:
    """The reader of stdout went away (``testserver list | head``): stop quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # so that the flush at exit does not complain
    os.close(devnull)
    return EXIT_FAILED


def make_renderer(args: argparse.Namespace, stream: TextIO) -> Renderer:
    """The renderer ``--format`` asks for."""
    if args.format == "json":
        from testserver.jsonout import JsonRenderer, Locator

        return JsonRenderer(stream, Locator(project_roots(args)))
    width = shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns if stream.isatty() else None
    return HumanRenderer(stream, Style(use_colour(stream, args.no_color)), width)


def run_parser() -> argparse.ArgumentParser:
    """Arguments of ``testserver run``."""
    parser = argparse.ArgumentParser(
        prog="testserver run",
        description="Run tests on a testserver started for this run and show the results.",
    )
    add_server_arguments(parser)
    add_output_arguments(parser)
    parser.add_argument(
        "selectors",
        nargs="*",
        metavar="ID-or-pattern",
        help="a test id, or a pattern as unittest -k (fnmatch with *, else substring)",
    )
    return parser


def run_main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    """Entry point of ``testserver run``."""
    args = run_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    stream = output_stream(args, stdout)
    renderer = make_renderer(args, stream)
    client = spawn(["--no-reload", *server_arguments(args)], "run")
    if client is None:
        return EXIT_ERROR
    try:
        with client:
            ids: list[str] = []
            unmatched: list[str] = []
            total = client.hello.get("tests")
            if args.selectors:
                ids, unmatched = select(client.list(), args.selectors)
                total = len(ids)
                _report_selection(client, renderer, ids, unmatched)
            if args.selectors and not ids:
                tally = Tally(unmatched=unmatched, complete={"status": "ok"})
                renderer.start(0)
                renderer.finish(tally)
                return EXIT_FAILED
            tally = drive(client, ids, renderer, total=total, tally=Tally(unmatched=unmatched))
    except KeyboardInterrupt:
        print("testserver run: aborted", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        return stdout_closed()
    except ClientError as error:
        renderer.message(f"the server failed: {error}")
        return EXIT_ERROR
    return EXIT_OK if tally.ok else EXIT_FAILED


def _report_selection(
    client: Client, renderer: Renderer, ids: Sequence[str], unmatched: Sequence[str]
) -> None:
    for selector in unmatched:
        renderer.message(f"no test matches {selector!r}")
    chosen = set(ids)
    for error in client.hello.get("discovery_errors", []):
        if error.get("test_id") not in chosen:
            renderer.message(
                f"module {error.get('module')} failed to import and was not selected: "
                f"{error.get('message')}"
            )


main = run_main
"""``testserver run`` is this module's main command (``testserver.cli`` dispatch)."""


def list_parser() -> argparse.ArgumentParser:
    """Arguments of ``testserver list``."""
    parser = argparse.ArgumentParser(
        prog="testserver list", description="List test ids, one per line."
    )
    add_server_arguments(parser)
    add_output_arguments(parser)
    parser.add_argument("selectors", nargs="*", metavar="pattern", help="as for testserver run")
    return parser


def list_main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    """Entry point of ``testserver list``: exit 1 if a module failed to import."""
    args = list_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    stream = output_stream(args, stdout)
    client = spawn(["--no-reload", *server_arguments(args)], "list")
    if client is None:
        return EXIT_ERROR
    try:
        with client:
            ids, unmatched = select(client.list(), args.selectors)
            errors = client.hello.get("discovery_errors", [])
    except ClientError as error:
        print(f"testserver list: the server failed: {error}", file=sys.stderr)
        return EXIT_ERROR
    try:
        if args.format == "json":
            from testserver.jsonout import JsonRenderer, Locator

            JsonRenderer(stream, Locator(project_roots(args))).listing(ids)
        else:
            stream.write("".join(f"{test_id}\n" for test_id in ids))
            stream.flush()
    except BrokenPipeError:
        return stdout_closed()
    for selector in unmatched:
        print(f"testserver list: no test matches {selector!r}", file=sys.stderr)
    for error in errors:
        print(
            f"testserver list: module {error.get('module')} failed to import: "
            f"{error.get('message')}",
            file=sys.stderr,
        )
    return EXIT_FAILED if unmatched or errors else EXIT_OK
