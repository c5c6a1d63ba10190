"""``testserver run``: choose tests, run them on a server, show the results, remember failures.

::

    testserver run [-t TOP] [-s START] [-p PATTERN] [--isolation worker|fork|none] [--timeout S]
                   [-j N|auto] [-k PATTERN] [-v] [-x] [--lf | --ff] [--durations N] [--shard K/N]
                   [--format human|json|subunit] [--subtests report|fold] [--no-color]
                   [--daemon | --no-daemon] [ID | PATTERN | FILE.py | DIR/ ...]

A positional argument selects tests: an exact test id selects that test; a path (ending in
``.py`` or ``/``, or an existing one with a ``/``) selects the tests of that module or
package (it must be under the top-level directory); anything else is a pattern, matched like
unittest's ``-k`` (fnmatch when it contains ``*``, else a substring). ``-k`` then keeps only
the selected tests matching one of its patterns. ``--lf`` runs only the tests that failed
last time (all selected tests if none did), ``--ff`` runs them first; the memory is per
project (:mod:`testserver.clients.lastrun`). ``--shard K/N`` then keeps share K of N of the
selected tests (:mod:`testserver.scheduling.shards`; a module's tests stay together), and
an unsharded run records each test's duration in the project's timing history. ``-x``
cancels the run at the first failure or error. ``-j N`` spreads the run over N workers of
the server (``python -m testserver --serve --jobs N``), ordered by that timing history.

The exit status is 0 when every requested test ran and passed (skips and expected failures
included), 1 when a test failed, a requested test was not run or unknown, a selector
matched nothing or the run was interrupted, and 2 for bad arguments or when the server
could not be started or died.

:func:`run_main` runs in the caller's process with a server started for this run (cold), or
inside the warm daemon for a remote terminal (:mod:`testserver.backends.warmcli`,
:mod:`testserver.backends.daemonconsole`): the daemon passes its own ``connect``, streams and
terminal facts, and everything else is the same code.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TextIO

from testserver.clients import lastrun, project
from testserver.clients.client import Client, ClientError
from testserver.clients.console import (
    DEFAULT_WIDTH,
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_OK,
    HumanRenderer,
    ParserExit,
    StreamParser,
    Style,
    add_output_arguments,
    add_server_arguments,
    output_stream,
    project_roots,
    server_arguments,
    stdout_closed,
    use_colour,
)
from testserver.clients.runs import Outcome, Output, Renderer, Started, Tally, drive, select
from testserver.scheduling import timehistory
from testserver.scheduling.jobs import available_cpus, parse_jobs
from testserver.scheduling.shards import parse_shard
from testserver.wire.events import Packet

PASSED = frozenset({"success", "skip", "xfail"})
"""Final statuses that take a test out of the last-failed set."""


class TargetServer:
    """A server to run on: its client, its hello, and how to list its tests."""

    def __init__(self, client: Client) -> None:
        self.client = client

    @property
    def hello(self) -> dict[str, Any]:
        return self.client.hello

    def list(self) -> list[str]:
        """Every test id, freshly listed (changed sources applied first)."""
        return self.client.list()

    def known(self) -> frozenset[str] | None:
        """Ids listed recently, to skip a listing when every selector is one; ``None``."""
        return None


class StartError(ClientError):
    """No server could be started for the command; the message says why."""


Connect = Callable[[list[str]], contextlib.AbstractContextManager[TargetServer]]
"""Given ``python -m testserver --serve`` arguments, a context giving a :class:`TargetServer`."""


def cold_connect(cwd: str | None = None) -> Connect:
    """Start a server for this run only (no reloading) and stop it at the end."""

    @contextlib.contextmanager
    def connect(server_args: list[str]) -> Iterator[TargetServer]:
        try:
            client = Client.spawn(["--no-reload", *server_args], cwd=cwd, stderr=None)
        except (OSError, ClientError) as error:
            raise StartError(str(error)) from None
        with client:
            yield TargetServer(client)

    return connect


# -- arguments ---------------------------------------------------------------------------


_PARSER_LOCK = threading.Lock()
_parsers: list[StreamParser] = []
"""The one ``run`` parser of this process, built on first use: the daemon parses every
terminal's ``run`` with it (building one costs about 0.6 ms, a tenth of a warm answer)."""


def parse_run_args(argv: Sequence[str], out: TextIO | None, err: TextIO | None) -> Any:
    """``testserver run``'s arguments, help and errors printed to ``out`` / ``err``."""
    with _PARSER_LOCK:
        if not _parsers:
            _parsers.append(run_parser())
        parser = _parsers[0]
        parser.out, parser.err = out, err
        try:
            return parser.parse_args(list(argv))
        finally:
            parser.out = parser.err = None


def run_parser(out: TextIO | None = None, err: TextIO | None = None) -> StreamParser:
    """Arguments of ``testserver run``."""
    parser = StreamParser(
        prog="testserver run",
        description="Run tests and show the results. At a terminal the tests run on a warm "
        "server kept by a background daemon for this project (see `testserver daemon "
        "status|stop`), so the second run is fast; elsewhere on a server started for the run.",
        out=out,
        err=err,
    )
    add_server_arguments(parser)
    add_output_arguments(parser, ("human", "json", "subunit"))
    parser.add_argument(
        "--subtests",
        choices=("report", "fold"),
        default="report",
        help="--format subunit: report each subtest as a test (default), or fold them into "
        "their parent, for the totals of python -m subunit.run",
    )
    parser.add_argument(
        "-j",
        "--jobs",
        metavar="N",
        help="run the tests in N workers forked from the warm server (auto: one per CPU); "
        "the longest first, by the project's timing history",
    )
    choose = parser.add_argument_group("choosing tests")
    choose.add_argument(
        "-k",
        dest="name_patterns",
        metavar="PATTERN",
        action="append",
        default=[],
        help="only tests matching PATTERN (fnmatch with *, else substring), as unittest -k",
    )
    again = choose.add_mutually_exclusive_group()
    again.add_argument(
        "--lf",
        "--last-failed",
        dest="last_failed",
        action="store_true",
        help="only the tests that failed last time (all of them if none did)",
    )
    again.add_argument(
        "--ff",
        "--failed-first",
        dest="failed_first",
        action="store_true",
        help="the tests that failed last time first, then the others",
    )
    choose.add_argument(
        "--shard",
        metavar="K/N",
        help="only share K of N of the selected tests, for machine K of a CI matrix (the "
        "tests of a module stay together; balanced by the timing history when there is one)",
    )
    choose.add_argument(
        "selectors",
        nargs="*",
        metavar="ID-PATTERN-or-FILE",
        help="a test id, a test file or package directory (tests/test_x.py), or a pattern",
    )
    show = parser.add_argument_group("running and showing")
    show.add_argument("-v", "--verbose", action="store_true", help="one line per test")
    show.add_argument(
        "-x", "--failfast", action="store_true", help="stop at the first failure or error"
    )
    show.add_argument(
        "--durations", type=int, metavar="N", help="show the N slowest tests (0: all)"
    )
    where = show.add_mutually_exclusive_group()
    where.add_argument(
        "--daemon",
        dest="daemon",
        action="store_true",
        default=None,
        help="run on the project's warm daemon even when not at a terminal",
    )
    where.add_argument(
        "--no-daemon",
        dest="daemon",
        action="store_false",
        help="start a server for this run only, never the daemon",
    )
    return parser


# -- choosing tests ----------------------------------------------------------------------


def is_path(selector: str, cwd: str) -> bool:
    """Whether a positional argument names a file or directory rather than tests: it ends
    in ``.py`` or ``/``, or has a ``/`` and exists (a subtest id may hold a ``/`` too)."""
    if selector.endswith((".py", "/")) or selector in (".", ".."):
        return True
    return "/" in selector and os.path.exists(os.path.join(cwd, selector))


def path_pattern(selector: str, top: str, cwd: str) -> str:
    """The id pattern of the module or package at path ``selector``; ValueError if none."""
    path = os.path.realpath(os.path.join(cwd, selector))
    if not os.path.exists(path):
        raise ValueError(f"no such file or directory: {selector}")
    relative = os.path.relpath(path, top)
    if relative.startswith(".."):
        raise ValueError(f"{selector} is not under the top-level directory {top}")
    if relative == ".":
        return "*"
    module = relative[:-3] if relative.endswith(".py") else relative
    module = module.replace(os.sep, ".")
    return f"{module[: -len('.__init__')]}.*" if module.endswith(".__init__") else f"{module}.*"


def matches(test_id: str, patterns: Sequence[str]) -> bool:
    """Whether ``test_id`` matches one of ``-k``'s patterns (as :func:`select` does)."""
    return any(select([test_id], [pattern])[0] for pattern in patterns)


def choose(
    args: Any, session: TargetServer, top: str, cwd: str, memory: lastrun.LastRun, say
) -> tuple[list[str], list[str]]:
    """``(ids to run, selectors that matched nothing)``; ValueError for a bad path."""
    selectors = [path_pattern(s, top, cwd) if is_path(s, cwd) else s for s in args.selectors]
    plain = not (args.name_patterns or args.last_failed or args.failed_first)
    known = session.known()
    if plain and selectors and known is not None and all(s in known for s in selectors):
        return list(dict.fromkeys(selectors)), []  # exact ids of a recent listing
    if plain and not selectors:
        return [], []  # everything, in load order
    ids, unmatched = select(session.list(), selectors)
    if args.name_patterns:
        ids = [test_id for test_id in ids if matches(test_id, args.name_patterns)]
        if not ids:
            unmatched += [f"-k {pattern}" for pattern in args.name_patterns]
    if args.last_failed or args.failed_first:
        failed = set(memory.failed())
        if args.last_failed and failed.intersection(ids):
            ids = [test_id for test_id in ids if test_id in failed]
        elif args.last_failed:
            say("no test of this selection failed last time; running them all")
        else:
            ids = lastrun.failed_first(ids, failed)
    return ids, unmatched


# -- running -----------------------------------------------------------------------------


class Recorder(Renderer):
    """Passes everything to ``inner``; remembers outcomes; with ``failfast`` cancels the run
    at the first failure or error."""

    def __init__(self, inner: Renderer, client: Client, failfast: bool) -> None:
        self.inner = inner
        self.client = client
        self.failfast = failfast
        self.stopped = False
        self.passed: list[str] = []
        self.failed: list[str] = []
        self.durations: dict[str, float] = {}

    def start(self, total: int | None, changed: Sequence[str] = ()) -> None:
        self.inner.start(total, changed)

    def started(self, item: Started) -> None:
        self.inner.started(item)

    def packet(self, packet: Packet) -> None:
        self.inner.packet(packet)

    def finished(self, outcome: Outcome) -> None:
        if outcome.kind == "test":
            (self.passed if outcome.status in PASSED else self.failed).append(outcome.test_id)
            if outcome.duration is not None:
                self.durations[outcome.test_id] = outcome.duration
        if self.failfast and not self.stopped and outcome.status in ("fail", "uxsuccess"):
            self.stopped = True
            self.client.cancel()
        self.inner.finished(outcome)

    def output(self, item: Output) -> None:
        self.inner.output(item)

    def control(self, name: str, body: dict[str, Any]) -> None:
        self.inner.control(name, body)

    def message(self, text: str) -> None:
        self.inner.message(text)

    def finish(self, tally: Tally) -> None:
        tally.failfast = self.stopped
        self.inner.finish(tally)


def make_renderer(
    args: Any,
    stream: TextIO,
    err: TextIO,
    env: Mapping[str, str],
    columns: int | None,
) -> Renderer:
    """The renderer ``--format`` asks for."""
    if args.format == "json":
        from testserver.clients.jsonout import JsonRenderer, Locator

        return JsonRenderer(stream, Locator(project_roots(args)))
    if args.format == "subunit":
        from testserver.clients.subunitout import SubunitRenderer

        return SubunitRenderer(getattr(stream, "buffer", stream), subtests=args.subtests, err=err)
    terminal = stream.isatty()
    if terminal and columns is None:
        columns = shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns
    loading = " ".join(server_arguments(args))
    return HumanRenderer(
        stream,
        Style(use_colour(stream, args.no_color, env)),
        columns if terminal else None,
        err=err,
        verbose=args.verbose,
        durations=args.durations,
        debug_hint=f"testserver debug {loading}".rstrip(),
    )


def run_main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    columns: int | None = None,
    connect: Connect | None = None,
) -> int:
    """Entry point of ``testserver run`` (in this process, or in the daemon for a client)."""
    err = stderr or sys.stderr
    try:
        args = parse_run_args(sys.argv[1:] if argv is None else argv, stdout, err)
    except ParserExit as exit_:
        return exit_.status
    if args.durations is not None and args.durations < 0:
        print("testserver run: --durations must not be negative", file=err)
        return EXIT_ERROR
    if args.shard is not None:
        try:
            args.shard = parse_shard(args.shard)
        except ValueError as error:
            print(f"testserver run: --shard: {error}", file=err)
            return EXIT_ERROR
    if args.jobs is not None:
        try:
            args.jobs = parse_jobs(args.jobs, available_cpus())
        except ValueError as error:
            print(f"testserver run: --jobs: {error}", file=err)
            return EXIT_ERROR
    cwd = cwd or os.getcwd()
    if args.format == "subunit" and (stdout or sys.stdout).isatty():
        print(
            "testserver run: refusing to write binary subunit to a terminal; pipe it into a "
            "reader (| subunit2pyunit) or redirect it (> run.subunit)",
            file=err,
        )
        return EXIT_ERROR
    stream = output_stream(args, stdout)
    renderer = make_renderer(args, stream, err, os.environ if env is None else env, columns)
    top = project.loading_start(args.top, args.start, cwd)
    root = project.find_root(top)[0]
    memory = lastrun.LastRun(root)
    connect = connect or cold_connect(cwd)
    try:
        jobs = [] if args.jobs is None else ["--jobs", str(args.jobs)]
        with connect(server_arguments(args) + jobs) as session:
            return _run(args, session, renderer, (top, cwd, root), memory)
    except KeyboardInterrupt:
        print("testserver run: aborted", file=err)
        return EXIT_FAILED
    except BrokenPipeError:
        return stdout_closed() if stdout is None else EXIT_FAILED
    except StartError as error:
        renderer.message(f"cannot start the server: {error}")
        return EXIT_ERROR
    except (OSError, ClientError) as error:
        renderer.message(f"the server failed: {error}")
        return EXIT_ERROR


def _run(
    args: Any,
    session: TargetServer,
    renderer: Renderer,
    where: tuple[str, str, str],
    memory: lastrun.LastRun,
) -> int:
    top, cwd, root = where
    try:
        ids, unmatched = choose(args, session, top, cwd, memory, renderer.message)
    except ValueError as error:
        renderer.message(str(error))
        return EXIT_ERROR
    if args.shard is not None:
        ids = _shard(args.shard, ids or session.list(), root)
        if not ids:
            renderer.message(f"shard {args.shard} has no tests of this selection")
            return EXIT_OK
    selecting = bool(args.selectors or args.name_patterns or args.last_failed or args.shard)
    total = len(ids) if selecting or ids else session.hello.get("tests")
    if selecting:
        _report_selection(session, renderer, ids, unmatched)
    if selecting and not ids:
        renderer.start(0)
        renderer.finish(Tally(unmatched=unmatched, complete={"status": "ok"}))
        return EXIT_FAILED
    recorder = Recorder(renderer, session.client, args.failfast)
    tally = drive(session.client, ids, recorder, total=total, tally=Tally(unmatched=unmatched))
    memory.record(recorder.passed, recorder.failed + tally.not_run)
    if args.shard is None:  # a shard run must not change the shares of the machines after it
        timehistory.record(root, recorder.durations)
    return EXIT_OK if tally.ok else EXIT_FAILED


def _shard(shard: Any, selected: list[str], root: str) -> list[str]:
    """The ids of ``selected`` in ``shard``; a module's tests stay together (a client sees
    ids only, not the engine's fixture groups)."""
    from testserver.scheduling.groups import module_groups
    from testserver.scheduling.shards import select_shard

    durations = timehistory.project_times(root)
    return select_shard(selected, shard, group_of=module_groups(selected), durations=durations)


def _report_selection(
    session: TargetServer, renderer: Renderer, ids: Sequence[str], unmatched: Sequence[str]
) -> None:
    for selector in unmatched:
        renderer.message(f"no test matches {selector!r}")
    chosen = set(ids)
    for error in session.hello.get("discovery_errors", []):
        if error.get("test_id") not in chosen:
            renderer.message(
                f"module {error.get('module')} failed to import and was not selected: "
                f"{error.get('message')}"
            )


main = run_main
