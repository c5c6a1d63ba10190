"""``testserver watch``: test on save, with one warm server.

::

    testserver watch [-t TOP] [-s START] [-p PATTERN] [--isolation worker|fork|none] [--timeout S]
                     [--poll] [--watch DIR] [--no-reload] [--format human|json] [--no-color]
                     [ID-or-pattern ...]

Starts one server, runs the selected tests (all by default) once, then waits. A watchdog
observer (:class:`testserver.hotreload.watcher.Watcher`) records the ``.py`` files that change under
the top-level directory (and every ``--watch DIR``); once no new change has arrived for
:data:`DEBOUNCE_SECONDS` (editors write several events per save), the affected tests are run
on the same server:

- the tests of the changed modules (a test module that fails to import included);
- the tests of every module that imports a changed module, directly or not, found with a
  static import graph (:class:`ProjectModules`; importing ``a.b`` counts as importing ``a``,
  and a changed package affects its submodules);
- the tests that failed in the previous run, until they pass.

The server applies the changes itself before the next command (hot reload, announced by a
``testserver.reload`` event). With ``--no-reload``, or a server that cannot reload, watch
restarts the server instead. Results are concise: the first failure of a run with its
traceback, the others on one line each, each with the ``file:line`` where it failed in the
project (:mod:`testserver.clients.tracebacks`); a module that does not import shows the file, line
and source line of the error; then a summary line. ``--format json`` writes the JSON lines
of :mod:`testserver.clients.jsonout`.

On a terminal, keys act at once (:mod:`testserver.clients.watchkeys`; the terminal is in cbreak
mode until watch exits): ``a`` runs all the selected tests, ``f`` only the last failures,
``p`` asks for a pattern to filter by (empty: back to the command line's selection),
Enter runs the last run's tests again, ``q`` quits, ``h`` shows the keys. ``q`` or Ctrl-C
stops the server and exits with status 0.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

from testserver.clients.client import Client, ClientError
from testserver.clients.console import (
    EXIT_ERROR,
    EXIT_OK,
    Style,
    add_output_arguments,
    add_reload_arguments,
    add_server_arguments,
    dash_for,
    output_stream,
    reload_arguments,
    server_arguments,
    spawn,
    stdout_closed,
    use_colour,
)
from testserver.clients.jsonout import FIXTURE_ID, Locator
from testserver.clients.runs import Outcome, Renderer, Tally, drive, select
from testserver.clients.tracebacks import import_failure, project_frame
from testserver.clients.watchkeys import ENTER, Input, Keys
from testserver.wire.commands import ListTests
from testserver.wire.constants import FAILED_TEST_PREFIX
from testserver.wire.control import decode_control

DEBOUNCE_SECONDS = 0.2
"""Quiet time after the last change before a run: editors write several events per save."""

MAX_DEBOUNCE_SECONDS = 2.0
"""A run starts at most this long after the first change, even if changes keep coming."""

POLL_SECONDS = 0.05
"""How often the change recorder is checked; bounds the added latency."""

KEYS_HELP = "keys: a run all, f run failures, p filter by pattern, Enter run again, q quit"
"""Shown on a terminal once watching starts, and again for ``h`` or ``?``."""


# -- project modules and their imports ---------------------------------------------------


def module_name(path: str, root: str) -> str | None:
    """The dotted name ``path`` is imported as, with ``root`` on ``sys.path``.

    The name starts at the first directory above the file that is not a package (has no
    ``__init__.py``), or at ``root``: ``root/src/pkg/mod.py`` is ``pkg.mod`` when ``src`` is
    not a package. ``None`` when ``path`` is not a ``.py`` file below ``root``. (The client
    imports nothing, so it cannot ask ``sys.path`` as the server does.)
    """
    if not path.endswith(".py") or not path.startswith(os.path.join(root, "")):
        return None
    directory, filename = os.path.split(path)
    parts = [] if filename == "__init__.py" else [filename[:-3]]
    while directory != root and os.path.isfile(os.path.join(directory, "__init__.py")):
        directory, package = os.path.split(directory)
        parts.insert(0, package)
    return ".".join(parts) or None


class ProjectModules:
    """The project's modules on disk and which imports which, read without importing them.

    The import edges come from :class:`testserver.hotreload.modulegraph.ImportGraph`, the graph hot
    reload uses, fed with every ``.py`` file under the roots instead of the loaded modules.
    Hidden directories, caches and virtual environments are skipped.
    """

    def __init__(self, roots: Sequence[str]) -> None:
        from testserver.hotreload.modulegraph import ImportGraph

        self.roots = [os.path.realpath(root) for root in roots]
        self.graph = ImportGraph(_stat_digest)

    def scan(self) -> dict[str, str]:
        """``{module name: path}`` for every ``.py`` file under the roots now."""
        from testserver.hotreload.watcher import is_ignored_name, is_venv_dir

        found: dict[str, str] = {}
        for root in self.roots:
            for directory, subdirs, files in os.walk(root):
                subdirs[:] = [
                    d
                    for d in subdirs
                    if not is_ignored_name(d) and not is_venv_dir(os.path.join(directory, d))
                ]
                for filename in files:
                    if filename.endswith(".py") and not is_ignored_name(filename):
                        path = os.path.join(directory, filename)
                        found.setdefault(module_name(path, root) or "", path)
        found.pop("", None)
        return found

    def modules_of(self, paths: Iterable[str]) -> dict[str, str]:
        """``{module name: path}`` for ``paths`` (changed, added or deleted files)."""
        names = {}
        for path in paths:
            real = os.path.realpath(path)
            for root in self.roots:
                name = module_name(real, root)
                if name is not None:
                    names[name] = real
                    break
        return names

    def affected_modules(self, paths: Iterable[str]) -> set[str]:
        """The modules of ``paths``, their submodules, and every module that imports one of
        them, directly or not."""
        changed = self.modules_of(paths)
        project = {**self.scan(), **changed}  # a deleted module keeps its importers
        self.graph.invalidate()
        return self.graph.importers_closure(changed, project)


def _stat_digest(path: str) -> bytes | None:
    """A cache key for a file's imports: its modification time and size."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return f"{stat.st_mtime_ns}:{stat.st_size}".encode()


def module_tests(ids: Sequence[str], modules: Iterable[str]) -> set[str]:
    """The ids that belong to ``modules``: below them, or their import-failure stand-ins."""
    modules = set(modules)
    prefixes = tuple(f"{module}." for module in modules)
    if not prefixes:
        return set()
    failed = {FAILED_TEST_PREFIX + module for module in modules}
    return {test_id for test_id in ids if test_id.startswith(prefixes) or test_id in failed}


def failing_ids(problems: Iterable[Outcome], ids: Sequence[str]) -> set[str]:
    """The runnable ids to run again for these failures.

    A subtest stands for its parent; a class or module fixture error for every test of the
    class or module.
    """
    failing = set()
    for outcome in problems:
        if outcome.parent_id is not None:
            failing.add(outcome.parent_id)
            continue
        fixture = FIXTURE_ID.match(outcome.test_id)
        if fixture is not None:
            prefix = fixture.group(2) + "."
            failing.update(test_id for test_id in ids if test_id.startswith(prefix))
        else:
            failing.add(outcome.test_id)
    return failing


# -- waiting for changes -----------------------------------------------------------------


def wait_for_changes(
    take: Callable[[], set[str]],
    *,
    quiet: float = DEBOUNCE_SECONDS,
    limit: float = MAX_DEBOUNCE_SECONDS,
    poll: float = POLL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> set[str]:
    """Block until ``take()`` returns paths, then gather more until ``quiet`` seconds pass
    without any (or ``limit`` seconds since the first); return them all."""
    changes: set[str] = set()
    while not changes:
        sleep(poll)
        changes |= take()
    first = last = clock()
    while clock() - last < quiet and clock() - first < limit:
        sleep(poll)
        more = take()
        if more:
            changes |= more
            last = clock()
    return changes


# -- output ------------------------------------------------------------------------------


class ConciseRenderer(Renderer):
    """One line per run, the summary, and the failures: the first one of a run with its
    traceback, the others on one line each, all with the file and line where they failed;
    a module that failed to import with the file, line and source line to blame."""

    def __init__(self, stream: TextIO, style: Style, roots: Sequence[str] = (".",)) -> None:
        self.stream = stream
        self.style = style
        self.dash = dash_for(stream)
        self.roots = list(roots)
        self.locator = Locator(self.roots)
        self.shown: set[str] = set()

    def _line(self, text: str) -> None:
        self.write(text + "\n")

    def write(self, text: str) -> None:
        """Write ``text`` as it is (the ``p`` prompt echoes through here)."""
        self.stream.write(text)
        self.stream.flush()

    def start(self, total: int | None, changed: Sequence[str] = ()) -> None:
        self.shown.clear()
        what = f"{_describe(changed)} changed: " if changed else ""
        count = f"{total} test{'' if total == 1 else 's'}" if total is not None else "all tests"
        self._line(self.style(f"[{time.strftime('%H:%M:%S')}] {what}running {count}", "1"))

    def finished(self, outcome: Outcome) -> None:
        if outcome.status == "fail" and outcome.test_id not in self.shown:
            first = not self.shown
            self.shown.add(outcome.test_id)
            if outcome.parent_id is not None:
                self.shown.add(outcome.parent_id)  # its own line would only repeat this one
            if outcome.test_id.startswith(FAILED_TEST_PREFIX):
                self._import_failure(outcome)
            else:
                self._failure(outcome, detailed=first)
        elif outcome.status == "uxsuccess":
            where = self._where(outcome)
            self._line(self.style("UNEXPECTED SUCCESS", "31") + f" {outcome.test_id} ({where})")

    def _failure(self, outcome: Outcome, *, detailed: bool) -> None:
        head = self.style("FAIL", "31") + f" {outcome.test_id} ({self._where(outcome)})"
        if not detailed:
            self._line(f"{head}: {outcome.headline()}")
            return
        self._line(head)
        details = outcome.text("traceback") or outcome.text("reason") or outcome.headline()
        for line in details.rstrip().splitlines():
            self._line(f"    {line}")

    def _import_failure(self, outcome: Outcome) -> None:
        """``ERROR cannot import pkg.mod (pkg/helper.py:3): SyntaxError: ...``, the source
        line and, for a syntax error, the caret under it."""
        module = outcome.test_id[len(FAILED_TEST_PREFIX) :]
        failure = import_failure(outcome.text("traceback"), self.roots)
        head = self.style("ERROR", "31") + f" cannot import {module}"
        if failure is None:
            self._line(f"{head} ({self._where(outcome)}): {outcome.headline()}")
            return
        frame = failure.frame
        self._line(f"{head} ({_shown_path(frame.path)}:{frame.line}): {failure.error}")
        for extra in (frame.source, frame.marker):
            if extra is not None:
                self._line(f"    {extra}")

    def _where(self, outcome: Outcome) -> str:
        """``path:line`` where ``outcome`` failed in the project, else where it is defined."""
        frame = project_frame(outcome.text("traceback"), self.roots)
        if frame is not None:
            return f"{_shown_path(frame.path)}:{frame.line}"
        path, line = self.locator.locate(outcome.test_id, outcome.parent_id)
        if path is None:
            return "location unknown"
        return _shown_path(path) + (f":{line}" if line else "")

    def control(self, name: str, body: dict[str, Any]) -> None:
        if name == "testserver.reload" and body.get("restarted"):
            self._line(f"server restarted: {body.get('reason')}")

    def message(self, text: str) -> None:
        self._line(text)

    def finish(self, tally: Tally) -> None:
        for crash in tally.complete.get("crashes", []):
            self._line(self.style(f"crash: {crash}", "31"))
        self._line(f"{tally.summary(self.dash)} {self.dash} {self.style.verdict(tally)}")


def _shown_path(path: str) -> str:
    """``path`` relative to the current directory when it is below it."""
    relative = os.path.relpath(path)
    return path if relative.startswith(os.pardir) else relative


def _describe(paths: Sequence[str]) -> str:
    shown = [os.path.relpath(path) for path in sorted(paths)[:3]]
    more = len(paths) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


# -- the loop ----------------------------------------------------------------------------


class WatchedServer:
    """The warm server, restarted when it died or when it cannot reload by itself."""

    def __init__(self, server_args: Sequence[str], renderer: Renderer) -> None:
        self.server_args = list(server_args)
        self.renderer = renderer
        self.client: Client | None = None

    def refresh(self, changed: bool) -> list[str]:
        """Make sure a server is up to date with the sources; return its test ids."""
        client = self.client
        if client is not None and changed and "reload" not in client.hello["capabilities"]:
            self.close()
        if self.client is None:
            self.client = spawn(self.server_args, "watch")
            if self.client is None:
                raise ClientError("cannot start the server")
        packets, _ = self.client.request(ListTests(self.client.new_id()))
        ids = []
        for packet in packets:
            control = decode_control(packet)
            if control is not None:
                self.renderer.control(*control)
            elif packet.status == "exists" and packet.test_id:
                ids.append(packet.test_id)
        return ids

    def close(self) -> None:
        """Stop the running batch, if any, and the server."""
        client, self.client = self.client, None
        if client is None:
            return
        try:
            client.cancel()
        except ClientError:
            pass
        client.close()


class Watch:
    """The state kept from one run to the next: selection, failures, project modules."""

    def __init__(self, args: argparse.Namespace, renderer: Renderer, roots: list[str]) -> None:
        self.args = args
        self.renderer = renderer
        server_args = server_arguments(args) + reload_arguments(args)
        self.session = WatchedServer(server_args, renderer)
        self.modules = ProjectModules(roots)
        self.failing: set[str] = set()
        self.selectors: list[str] = list(args.selectors)
        """What the tests are filtered by: the command line's, or the ``p`` key's pattern."""
        self.last: list[str] = []
        """The ids of the last run, for Enter."""

    def first_run(self) -> None:
        """Run every selected test once."""
        self.run_all()

    def run_all(self) -> None:
        """Run every test the selectors select (``a``)."""
        ids = self.session.refresh(changed=False)
        selected, unmatched = select(ids, self.selectors)
        for selector in unmatched:
            self.renderer.message(f"no test matches {selector!r}")
        if selected:
            self._run(ids, selected, ())

    def run_failures(self) -> None:
        """Run the tests that failed last time (``f``)."""
        ids = self.session.refresh(changed=False)
        selected = [test_id for test_id in ids if test_id in self.failing]
        if not selected:
            self.renderer.message("no failing tests to run")
            return
        self._run(ids, selected, ())

    def run_again(self) -> None:
        """Run the last run's tests again (Enter)."""
        ids = self.session.refresh(changed=False)
        selected = [test_id for test_id in ids if test_id in set(self.last)]
        if not selected:
            self.run_all()
            return
        self._run(ids, selected, ())

    def filter(self, pattern: str) -> None:
        """Filter by ``pattern`` from now on (``p``); an empty one goes back to the command
        line's selection. Then run what it selects."""
        self.selectors = [pattern] if pattern else list(self.args.selectors)
        shown = repr(pattern) if pattern else "none"
        self.renderer.message(f"filter: {shown}")
        self.run_all()

    def on_change(self, paths: set[str]) -> None:
        """Run the tests affected by changes to ``paths``."""
        ids = self.session.refresh(changed=True)
        wanted = module_tests(ids, self.modules.affected_modules(paths)) | (self.failing & set(ids))
        selected = [i for i in select(ids, self.selectors)[0] if i in wanted]
        if not selected:
            self.renderer.message(f"{_describe(sorted(paths))} changed: no tests affected")
            return
        self._run(ids, selected, sorted(paths))

    def serve(self, take: Callable[[], set[str]], keys: Keys | None = None) -> None:
        """The first run, then one per batch of changed paths ``take()`` reports, and one
        per key (see :data:`KEYS`), until ``q``."""
        self.first_run()
        self.renderer.message("watching for changes (Ctrl-C to stop)")
        if keys is not None:
            self.renderer.message(KEYS_HELP)
        source = Input(lambda: {p for p in take() if p.endswith(".py")}, keys)
        while True:
            event = source.next(wait_for_changes)
            if isinstance(event, str):
                if event == "q":
                    return
                action = self._key_action(event, keys)
                if action is None:
                    continue
            else:
                action = functools.partial(self.on_change, event)
            self._attempt(action)

    def _key_action(self, key: str, keys: Keys | None) -> Callable[[], None] | None:
        """What ``key`` does now; ``None`` for a key that does nothing (or a cancelled
        pattern)."""
        if key == "p" and keys is not None:
            write = getattr(self.renderer, "write", _echo)
            pattern = keys.read_line("pattern (Enter: apply, empty: none, Esc: cancel) › ", write)
            return None if pattern is None else functools.partial(self.filter, pattern.strip())
        actions = {
            "a": self.run_all,
            "f": self.run_failures,
            ENTER: self.run_again,
            "\r": self.run_again,
        }
        if key in ("h", "?"):
            self.renderer.message(KEYS_HELP)
        return actions.get(key)

    def _attempt(self, action: Callable[[], None]) -> None:
        """Do ``action``; if the server died, once more on a new one."""
        for attempt in range(2):
            try:
                action()
                return
            except ClientError as error:
                self.session.close()
                again = "; starting a new one" if attempt == 0 else ""
                self.renderer.message(f"the server failed: {error}{again}")

    def _run(self, ids: list[str], selected: list[str], changed: Sequence[str]) -> None:
        assert self.session.client is not None
        tally = drive(
            self.session.client,
            selected,
            self.renderer,
            total=len(selected),
            changed=changed,
            cancel_on_interrupt=False,
        )
        not_run = set(tally.not_run) & self.failing
        self.failing = failing_ids(tally.problems, ids) | not_run
        self.last = list(selected)


def _terminated(number: int, frame: object) -> None:
    """SIGTERM: exit through the ``finally`` that restores the terminal."""
    raise SystemExit(128 + number)


def _echo(text: str) -> None:
    """Echo the typed pattern on stderr: JSON output on stdout stays JSON."""
    sys.stderr.write(text)
    sys.stderr.flush()


def watch_parser() -> argparse.ArgumentParser:
    """Arguments of ``testserver watch``."""
    parser = argparse.ArgumentParser(
        prog="testserver watch",
        description="Run the selected tests, then again the affected ones on every save, "
        "on one warm testserver. Ctrl-C stops.",
    )
    add_server_arguments(parser)
    add_output_arguments(parser)
    add_reload_arguments(
        parser, "restart the server on every change instead of reloading modules in place"
    )
    parser.add_argument(
        "selectors", nargs="*", metavar="ID-or-pattern", help="as for testserver run"
    )
    return parser


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stdin_keys: bool = True
) -> int:
    """Entry point of ``testserver watch``: 0 after ``q`` or Ctrl-C, 2 if the server cannot
    start. ``stdin_keys``: read keys when stdin is a terminal."""
    from testserver.hotreload.watcher import Watcher

    args = watch_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    stream = output_stream(args, stdout)
    roots = [os.path.abspath(args.top or args.start or "."), *map(os.path.abspath, args.watch)]
    if args.format == "json":
        from testserver.clients.jsonout import JsonRenderer, Locator

        renderer: Renderer = JsonRenderer(stream, Locator(roots))
    else:
        renderer = ConciseRenderer(stream, Style(use_colour(stream, args.no_color)), roots)
    state = Watch(args, renderer, roots)
    watcher = Watcher(roots, poll=args.poll)
    keys = Keys.open(sys.stdin) if stdin_keys else None
    if keys is not None:  # a kill must not leave the terminal in cbreak mode
        signal.signal(signal.SIGTERM, _terminated)
    try:
        problem = watcher.start()
        if problem:
            renderer.message(problem)
        state.serve(watcher.take, keys)
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        return stdout_closed()
    except ClientError as error:
        renderer.message(f"the server failed: {error}")
        return EXIT_ERROR
    finally:
        if keys is not None:
            keys.close()
        watcher.close()
        state.session.close()
