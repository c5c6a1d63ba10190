"""``testserver watch``: test on save, with one warm server.

::

    testserver watch [-t TOP] [-s START] [-p PATTERN] [--isolation fork|none] [--timeout S]
                     [--poll] [--watch DIR] [--no-reload] [--format human|json] [--no-color]
                     [ID-or-pattern ...]

Starts one server, runs the selected tests (all by default) once, then waits. A watchdog
observer (:class:`testserver.watching.Watcher`) records the ``.py`` files that change under
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
restarts the server instead. Results are concise: one line per failing test and a summary
line; ``--format json`` writes the JSON lines of :mod:`testserver.jsonout`. Ctrl-C stops
the server and exits with status 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

from testserver.client import Client, ClientError
from testserver.console import (
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
from testserver.jsonout import FAILED_TEST_PREFIX, FIXTURE_ID
from testserver.runmodel import Outcome, Renderer, Tally, drive, select
from testserver.wire.commands import ListTests
from testserver.wire.control import decode_control

DEBOUNCE_SECONDS = 0.2
"""Quiet time after the last change before a run: editors write several events per save."""

MAX_DEBOUNCE_SECONDS = 2.0
"""A run starts at most this long after the first change, even if changes keep coming."""

POLL_SECONDS = 0.05
"""How often the change recorder is checked; bounds the added latency."""


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

    The import edges come from :class:`testserver.modulegraph.ImportGraph`, the graph hot
    reload uses, fed with every ``.py`` file under the roots instead of the loaded modules.
    Hidden directories, caches and virtual environments are skipped.
    """

    def __init__(self, roots: Sequence[str]) -> None:
        from testserver.modulegraph import ImportGraph

        self.roots = [os.path.realpath(root) for root in roots]
        self.graph = ImportGraph(_stat_digest)

    def scan(self) -> dict[str, str]:
        """``{module name: path}`` for every ``.py`` file under the roots now."""
        from testserver.watching import is_ignored_name, is_venv_dir

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
    """One line per run, one per failing test, and the summary."""

    def __init__(self, stream: TextIO, style: Style) -> None:
        self.stream = stream
        self.style = style
        self.dash = dash_for(stream)
        self.shown: set[str] = set()

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def start(self, total: int | None, changed: Sequence[str] = ()) -> None:
        self.shown.clear()
        what = f"{_describe(changed)} changed: " if changed else ""
        count = f"{total} test{'' if total == 1 else 's'}" if total is not None else "all tests"
        self._line(self.style(f"[{time.strftime('%H:%M:%S')}] {what}running {count}", "1"))

    def finished(self, outcome: Outcome) -> None:
        if outcome.status == "fail" and outcome.test_id not in self.shown:
            self.shown.add(outcome.test_id)
            if outcome.parent_id is not None:
                self.shown.add(outcome.parent_id)  # its own line would only repeat this one
            headline = outcome.headline()
            self._line(self.style("FAIL", "31") + f" {outcome.test_id}: {headline}")
        elif outcome.status == "uxsuccess":
            self._line(self.style("UNEXPECTED SUCCESS", "31") + f" {outcome.test_id}")

    def control(self, name: str, body: dict[str, Any]) -> None:
        if name == "testserver.reload" and body.get("restarted"):
            self._line(f"server restarted: {body.get('reason')}")

    def message(self, text: str) -> None:
        self._line(text)

    def finish(self, tally: Tally) -> None:
        for crash in tally.complete.get("crashes", []):
            self._line(self.style(f"crash: {crash}", "31"))
        self._line(f"{tally.summary(self.dash)} {self.dash} {self.style.verdict(tally)}")


def _describe(paths: Sequence[str]) -> str:
    shown = [os.path.relpath(path) for path in sorted(paths)[:3]]
    more = len(paths) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


# -- the loop ----------------------------------------------------------------------------


class Session:
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
        self.session = Session(server_args, renderer)
        self.modules = ProjectModules(roots)
        self.failing: set[str] = set()

    def first_run(self) -> None:
        """Run every selected test once."""
        ids = self.session.refresh(changed=False)
        selected, unmatched = select(ids, self.args.selectors)
        for selector in unmatched:
            self.renderer.message(f"no test matches {selector!r}")
        if selected:
            self._run(ids, selected, ())

    def on_change(self, paths: set[str]) -> None:
        """Run the tests affected by changes to ``paths``."""
        ids = self.session.refresh(changed=True)
        wanted = module_tests(ids, self.modules.affected_modules(paths)) | (self.failing & set(ids))
        selected = [i for i in select(ids, self.args.selectors)[0] if i in wanted]
        if not selected:
            self.renderer.message(f"{_describe(sorted(paths))} changed: no tests affected")
            return
        self._run(ids, selected, sorted(paths))

    def serve(self, take: Callable[[], set[str]]) -> None:
        """The first run, then one per batch of changed paths ``take()`` reports; forever."""
        self.first_run()
        self.renderer.message("watching for changes (Ctrl-C to stop)")
        while True:
            paths = wait_for_changes(lambda: {p for p in take() if p.endswith(".py")})
            for attempt in range(2):
                try:
                    self.on_change(paths)
                    break
                except ClientError as error:  # the server died: once more, on a new one
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


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    """Entry point of ``testserver watch``: 0 after Ctrl-C, 2 if the server cannot start."""
    from testserver.watching import Watcher

    args = watch_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    stream = output_stream(args, stdout)
    roots = [os.path.abspath(args.top or args.start or "."), *map(os.path.abspath, args.watch)]
    if args.format == "json":
        from testserver.jsonout import JsonRenderer, Locator

        renderer: Renderer = JsonRenderer(stream, Locator(roots))
    else:
        renderer = ConciseRenderer(stream, Style(use_colour(stream, args.no_color)))
    state = Watch(args, renderer, roots)
    watcher = Watcher(roots, poll=args.poll)
    try:
        problem = watcher.start()
        if problem:
            renderer.message(problem)
        state.serve(watcher.take)
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        return stdout_closed()
    except ClientError as error:
        renderer.message(f"the server failed: {error}")
        return EXIT_ERROR
    finally:
        watcher.close()
        state.session.close()
