"""How ``testserver run`` and ``testserver list`` look at a terminal, and their shared options.

Human output is a progress line of one character per finished test (``.`` passed, ``F``
failed, ``E`` error: an exception other than an assertion, or a fixture error, ``s``
skipped, ``x`` expected failure, ``u`` unexpected success), or with ``-v`` one line per test
as ``unittest -v`` prints it; then a block per failure with its traceback and captured
output, the tests that were requested but not run, the slowest tests (``--durations N``),
then ``Ran 12 tests in 0.31s — 9 passed, 1 failed, 1 error, 1 skipped`` and ``OK`` or
``FAILED (...)``. Colour is used only when stdout is a terminal, ``NO_COLOR`` is unset and
``--no-color`` was not given.

This module holds the human rendering, the options every client command shares (loading,
output, reload) and ``testserver list``; ``testserver run`` is :mod:`testserver.clients.runcommand`
(through :mod:`testserver.backends.warmcli`, which runs it in the warm daemon). The run model (test
selection, packet-to-test assembly, the tally and the run loop
:func:`~testserver.clients.runs.drive`) is :mod:`testserver.clients.runs`, shared with ``--format
json`` (:mod:`testserver.clients.jsonout`), ``testserver watch`` (:mod:`testserver.clients.watch`)
and the bridge. This module imports only the client, the run model and, for ``--format json``,
:mod:`testserver.clients.jsonout`.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn, TextIO

from testserver.clients.client import Client, ClientError
from testserver.clients.runs import PROGRESS, TEXT_FIRST, Outcome, Renderer, Tally, select

EXIT_OK = 0
EXIT_FAILED = 1
"""A test failed, a selector matched nothing, or the run was interrupted."""
EXIT_ERROR = 2
"""Bad arguments, or the server could not start or died."""

BREAKPOINT_EXCEPTION = "bdb.BdbQuit"
"""The last line of the traceback of a test whose ``breakpoint()`` found no terminal."""

RULE_WIDTH = 70
"""Width of the ``=====`` and ``-----`` rules around a failure, as unittest draws them."""

DEFAULT_WIDTH = 80
"""Progress line width when stdout is not a terminal."""

PERCENT_WIDTH = len(" [100%]")
"""Room kept at the end of a progress line for the percentage."""

COLOURS = {".": "32", "F": "31", "E": "31", "u": "31", "s": "33", "x": "33"}
"""ANSI colour of each progress character: green, red, yellow."""


# -- rendering ---------------------------------------------------------------------------


def use_colour(
    stream: TextIO, disabled: bool = False, env: Mapping[str, str] | None = None
) -> bool:
    """Colour only on a terminal, without ``NO_COLOR`` (no-color.org) or ``TERM=dumb``."""
    env = os.environ if env is None else env
    if disabled or env.get("NO_COLOR") or env.get("TERM") == "dumb":
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

    def __init__(
        self,
        stream: TextIO,
        style: Style,
        width: int | None = None,
        *,
        err: TextIO | None = None,
        verbose: bool = False,
        durations: int | None = None,
        debug_hint: str = "testserver debug",
    ) -> None:
        self.stream = stream
        self.err = err
        self.style = style
        self.width = width or DEFAULT_WIDTH
        self.dash = dash_for(stream)
        self.verbose = verbose
        self.durations = durations
        self.debug_hint = debug_hint
        self.timed: list[tuple[float, str]] = []
        self.total: int | None = None
        self.done = 0
        self.column = 0

    def message(self, text: str) -> None:
        print(f"testserver: {text}", file=self.err or sys.stderr, flush=True)

    def start(self, total: int | None, changed: Sequence[str] = ()) -> None:
        self.total, self.done, self.column = total, 0, 0

    def finished(self, outcome: Outcome) -> None:
        if outcome.kind == "subtest":
            return
        char = "E" if outcome.is_error else PROGRESS.get(outcome.status, "?")
        if outcome.kind != "fixture":
            self.done += 1
            if outcome.duration is not None:
                self.timed.append((outcome.duration, outcome.test_id))
        if self.verbose:
            self._verbose_line(outcome, char)
            return
        self.stream.write(self.style(char, *([COLOURS[char]] if char in COLOURS else [])))
        self.column += 1
        if self.column >= self.width - PERCENT_WIDTH:
            self._end_line()
        self.stream.flush()

    def _verbose_line(self, outcome: Outcome, char: str) -> None:
        """``pkg.T.test_x ... ok``, as ``unittest -v`` reports a test."""
        word = VERBOSE_WORDS.get(char, outcome.status)
        if outcome.status == "skip":
            word = f"skipped {outcome.text('reason').strip()!r}"
        colour = [COLOURS[char]] if char in COLOURS else []
        self.stream.write(f"{outcome.test_id} ... {self.style(word, *colour)}\n")
        self.stream.flush()

    def _end_line(self) -> None:
        if self.total:
            percent = min(100, self.done * 100 // self.total)
            padding = " " * max(0, self.width - PERCENT_WIDTH - self.column)
            self.stream.write(f"{padding} [{percent:3d}%]")
        self.stream.write("\n")
        self.column = 0

    def finish(self, tally: Tally) -> None:
        if tally.complete.get("status") in ("ok", "incomplete"):  # the batch ran to its end
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
        write(self.missing_block(tally))
        message = tally.complete.get("message")
        if tally.complete.get("status") not in (None, "ok") and message:
            write(f"testserver: {message}\n")
        if self.durations is not None:
            write(self.durations_block())
        write("-" * RULE_WIDTH + "\n")
        write(tally.summary(self.dash) + "\n\n")
        write(self.style.verdict(tally) + "\n")
        self.stream.flush()

    def failure_block(self, outcome: Outcome) -> str:
        """``=====``, ``FAIL: id``, ``-----``, the traceback, then the other attachments."""
        label = {"uxsuccess": "UNEXPECTED SUCCESS", "fail": "FAIL"}.get(outcome.status, "FAIL")
        if outcome.is_error:
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
        if outcome.headline() == BREAKPOINT_EXCEPTION:
            block += self.style(
                "hint: this test called breakpoint(), but `testserver run` gives tests no "
                f"terminal; debug it with pdb:\n  {self.debug_hint} {outcome.test_id}",
                "1",
            )
            block += "\n"
        return block + "\n"

    def missing_block(self, tally: Tally) -> str:
        """The requested tests that got no result: ``not_run`` and unknown ids."""
        missing = [(i, "not run") for i in tally.not_run]
        missing += [(i, "unknown id") for i in tally.unknown]
        if not missing or tally.interrupted:
            return ""
        status = tally.complete.get("status")
        title = (
            f"NOT RUN: {len(missing)} requested test{'s' * (len(missing) != 1)} got no "
            f"result (the batch ended with status {status!r})"
        )
        lines = ["=" * RULE_WIDTH, self.style(title, "1", "31"), "-" * RULE_WIDTH]
        lines += [f"{test_id}  ({why})" for test_id, why in missing]
        return "\n".join(lines) + "\n\n"

    def durations_block(self) -> str:
        """The ``--durations N`` slowest tests (all of them for 0), as unittest shows them."""
        slowest = sorted(self.timed, reverse=True)
        if self.durations:
            slowest = slowest[: self.durations]
        lines = [f"Slowest test durations ({len(slowest)} of {len(self.timed)})"]
        lines += [f"{seconds:10.3f}s {test_id}" for seconds, test_id in slowest]
        return "\n".join(lines) + "\n\n"

    def _section(self, title: str, data: bytes) -> str:
        rule = f" {title} ".center(RULE_WIDTH, "-")
        return f"{self.style(rule, '2')}\n{_ensure_newline(data.decode('utf-8', 'replace'))}"


VERBOSE_WORDS = {
    ".": "ok",
    "F": "FAIL",
    "E": "ERROR",
    "x": "expected failure",
    "u": "unexpected success",
}
"""What ``-v`` prints after a test id, by progress character (skips add their reason)."""


def _ensure_newline(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


# -- command lines -----------------------------------------------------------------------


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The loading options every client command passes on to ``python -m testserver``."""
    group = parser.add_argument_group("loading (as python -m testserver / unittest discover)")
    group.add_argument("-s", "--start-directory", dest="start", help="discovery start directory")
    group.add_argument("-t", "--top-level-directory", dest="top", help="top-level directory")
    group.add_argument("-p", "--pattern", help="test file pattern (default: test*.py)")
    group.add_argument(
        "--isolation",
        choices=("worker", "fork", "none"),
        help="worker (default): a crashing test cannot take the server down, and a worker is "
        "reused while batches pass; fork: a pristine worker per batch; none: in-process",
    )
    group.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="fail a test that runs longer"
    )
    group.add_argument(
        "--worker-command",
        dest="worker_commands",
        action="append",
        default=[],
        metavar="COMMAND",
        help="also run tests on a remote testserver that COMMAND starts (e.g. ssh host "
        "'cd src && python3 -m testserver --serve -s tests'); repeatable",
    )


def add_output_arguments(
    parser: argparse.ArgumentParser, formats: Sequence[str] = ("human", "json")
) -> None:
    """``--format`` and ``--no-color``."""
    extra = ", subunit: a results-only subunit v2 stream" if "subunit" in formats else ""
    parser.add_argument(
        "--format",
        choices=tuple(formats),
        default="human",
        help=f"human (default), json: one JSON object per line (spec/json-output.md){extra}",
    )
    parser.add_argument("--no-color", action="store_true", help="never use colour")


def add_reload_arguments(parser: argparse.ArgumentParser, no_reload_help: str) -> None:
    """``--poll``, ``--watch DIR`` and ``--no-reload``, for the commands that keep a server."""
    parser.add_argument("--poll", action="store_true", help="poll for changes (network mounts)")
    parser.add_argument(
        "--watch", metavar="DIR", action="append", default=[], help="also watch DIR"
    )
    parser.add_argument("--no-reload", dest="reload", action="store_false", help=no_reload_help)


def reload_arguments(args: argparse.Namespace) -> list[str]:
    """The ``python -m testserver --serve`` arguments for :func:`add_reload_arguments`'s."""
    argv = [arg for root in args.watch for arg in ("--watch", root)]
    return argv + ["--poll"] * args.poll + ["--no-reload"] * (not args.reload)


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
    for command in getattr(args, "worker_commands", ()):
        argv += ["--worker-command", command]
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


class ParserExit(Exception):
    """:class:`StreamParser` finished: help was printed, or the arguments are wrong."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class StreamParser(argparse.ArgumentParser):
    """An argument parser that prints to given streams and raises :class:`ParserExit`
    instead of exiting, so that a command can run inside the daemon for a remote terminal."""

    def __init__(self, *args, out: TextIO | None = None, err: TextIO | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.out = out
        self.err = err

    def _print_message(self, message: str, file=None) -> None:  # noqa: ANN001
        if message:
            stream = self.out if file is sys.stdout or file is None else self.err
            (stream or file or sys.stderr).write(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._print_message(message, sys.stderr)
        raise ParserExit(status)


def list_parser() -> argparse.ArgumentParser:
    """Arguments of ``testserver list``."""
    parser = StreamParser(prog="testserver list", description="List test ids, one per line.")
    add_server_arguments(parser)
    add_output_arguments(parser)
    parser.add_argument("selectors", nargs="*", metavar="pattern", help="as for testserver run")
    return parser


def list_main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    """Entry point of ``testserver list``: exit 1 if a module failed to import."""
    try:
        args = list_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    except ParserExit as exit_:
        return exit_.status
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
            from testserver.clients.jsonout import JsonRenderer, Locator

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
