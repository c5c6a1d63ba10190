"""``testserver`` / ``python -m testserver``: the commands, the server and the drop-in.

The first argument may name a client command (:data:`CLIENT_COMMANDS`: ``run``, ``list``,
``watch``, ``debug``, ``bridge``, ``daemon``), dispatched without importing anything else, so
``testserver run`` starts fast. Otherwise the arguments follow ``python -m subunit.run``
(and so ``python -m unittest``)::

    python -m testserver [--serve] [discover [START [PATTERN [TOP]]]] [-s START] [-t TOP]
                         [-p PATTERN] [-k PATTERN] [--list] [--load-list FILE] [NAME ...]

Both write binary subunit on stdout, so they refuse a terminal there (as a pager refuses
binary input); a bare word that is neither a command nor a module in the working directory
(``testserver runn``) is a usage error that suggests the closest command.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from testserver.wire.constants import EXIT_USAGE

TYPE_CHECKING = False  # typing costs a millisecond at start-up: `testserver run` avoids it

if TYPE_CHECKING:
    import argparse

CLIENT_COMMANDS = {
    "run": "testserver.backends.warmcli:main",
    "list": "testserver.clients.console:list_main",
    "watch": "testserver.clients.watch:main",
    "debug": "testserver.clients.debug:main",
    "bridge": "testserver.clients.bridge:main",
    "daemon": "testserver.backends.daemonctl:main",
}
"""First arguments that select a client command instead of a test name."""

COMMAND_HELP = {
    "run": "run tests and show the results (warm on the project's daemon at a terminal)",
    "list": "list test ids, one per line",
    "watch": "re-run the affected tests whenever a file changes",
    "debug": "run one test with this terminal joined to it, so pdb works",
    "bridge": "JSON-lines bridge for editors (VS Code, Emacs, Vim)",
    "daemon": "start, stop or show the project's warm-server daemon",
}
"""One line per command for ``testserver --help``."""

SHARD_ENV = "TESTSERVER_SHARD"
"""``K/N``: one-shot mode's ``--shard`` when the command line has none (stestr writes its
backend's command line itself; a CI matrix sets variables)."""

TERMINAL_REFUSAL = (
    "testserver: refusing to write binary subunit to a terminal. Pipe it into a reader "
    "(| subunit2pyunit) or redirect it (> out.subunit); to run tests at a terminal use "
    "`testserver run`."
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for ``python -m testserver``."""
    import argparse

    from testserver import __version__
    from testserver.wire.framing import DEFAULT_MAX_PAYLOAD
    from testserver.wire.packets import SUBUNIT_VERSIONS

    commands = "\n".join(f"  {name:<8}{text}" for name, text in COMMAND_HELP.items())
    parser = argparse.ArgumentParser(
        prog="testserver",
        usage="testserver COMMAND [ARGS]   (testserver COMMAND --help)\n"
        "       testserver [--serve] [discover ...] [options] [NAME ...]",
        description="A persistent test server for Python unittest suites.\n\n"
        f"commands:\n{commands}\n\n"
        "Without a command: discover and import unittest tests once, then run them on\n"
        "request (--serve: framed commands on stdin, subunit v2 on stdout), or run them\n"
        "once writing subunit v2 like `python -m subunit.run`.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"testserver {__version__}")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="stay up: read command frames on stdin, write subunit packets on stdout "
        "(see spec/protocol.md)",
    )
    parser.add_argument("-s", "--start-directory", dest="start", help="discovery start directory")
    parser.add_argument("-t", "--top-level-directory", dest="top", help="top-level directory")
    parser.add_argument("-p", "--pattern", help="test file pattern (default: test*.py)")
    parser.add_argument(
        "-k",
        dest="name_patterns",
        action="append",
        default=[],
        help="only tests whose id matches this pattern (fnmatch, or substring), as unittest -k",
    )
    parser.add_argument("-l", "--list", action="store_true", help="list the tests, do not run them")
    parser.add_argument("--load-list", metavar="FILE", help="run (or list) only the ids in FILE")
    parser.add_argument(
        "--shard",
        metavar="K/N",
        help="run (or list) only share K of N of the suite, for machine K of a CI matrix: "
        "every test is in exactly one share, balanced by the timing history when there is one",
    )
    parser.add_argument(
        "--isolation",
        choices=("worker", "fork", "none"),
        default="worker",
        help="worker (default): run batches in a child of the loaded process, reused for the "
        "next batch while batches pass and leave no state behind that it can see; fork: a "
        "fresh child, a pristine copy of the loaded process, for every batch; none: in-process. "
        "Both children survive a crashing test",
    )
    parser.add_argument(
        "-j",
        "--jobs",
        default="1",
        metavar="N",
        help="spread each batch over N workers forked from the loaded suite (default 1; auto: "
        "one per CPU); each test's packets then carry the tag worker-K",
    )
    parser.add_argument(
        "--worker-command",
        dest="worker_commands",
        action="append",
        default=[],
        metavar="COMMAND",
        help="add a remote worker: COMMAND (run by the shell) starts `python -m testserver "
        "--serve ...` elsewhere and speaks the protocol over its stdin and stdout, e.g. "
        "\"ssh host 'cd src && python3 -m testserver --serve -s tests'\"; repeatable, with "
        "--jobs (0: remote workers only); see spec/remote-workers.md",
    )
    parser.add_argument(
        "--subunit-version",
        choices=SUBUNIT_VERSIONS,
        default="2.1",
        help="2.1 (default) adds parent test ids to subtest packets; 2.0 never does, for "
        "strict v2 parsers",
    )
    parser.add_argument(
        "--subtests",
        choices=("report", "fold"),  # testserver.engine.subtests.SUBTEST_MODES, not imported here
        default="report",
        help="report (default): each subtest is a test of its own; fold: subtests fold into "
        "their parent's outcome, for the totals of python -m subunit.run",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="fail a test that runs longer than this and go on with the batch (fork isolation)",
    )
    parser.add_argument(
        "--max-payload",
        type=int,
        default=DEFAULT_MAX_PAYLOAD,
        metavar="BYTES",
        help=f"largest command payload accepted (default {DEFAULT_MAX_PAYLOAD})",
    )
    parser.add_argument(
        "--no-reload",
        dest="reload",
        action="store_false",
        help="serve: do not watch files or reload changed modules",
    )
    parser.add_argument(
        "--poll",
        action="store_true",
        help="serve: detect changes by polling instead of inotify (network or container mounts)",
    )
    parser.add_argument(
        "--watch",
        metavar="DIR",
        action="append",
        default=[],
        help="serve: also watch DIR for changes (default: the top-level directory)",
    )
    for flag in ("-v", "-q", "-b", "-c", "-f"):
        parser.add_argument(flag, action="count", default=0, help=argparse.SUPPRESS)
    parser.add_argument("--locals", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("names", nargs="*", metavar="NAME", help="'discover' or test names")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv`` into options, resolving unittest's ``discover`` positional form."""
    from testserver.engine.loading import LoadSpec

    parser = build_parser()
    args = parser.parse_intermixed_args(list(argv))
    names = list(args.names)
    discover = not names or names[0] == "discover"
    if names and names[0] == "discover":
        positional = names[1:]
        if len(positional) > 3:
            parser.error("discover takes at most START, PATTERN and TOP")
        for attribute, value in zip(("start", "pattern", "top"), positional):
            if getattr(args, attribute) is None:
                setattr(args, attribute, value)
        names = []
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.serve and (args.list or args.load_list or args.name_patterns or args.shard):
        parser.error(
            "--list, --load-list, -k and --shard select tests for one run; with --serve send "
            "list-tests or run-tests commands instead"
        )
    if args.shard is None and not args.serve and os.environ.get(SHARD_ENV):
        args.shard = os.environ[SHARD_ENV]
    if args.shard is not None:
        from testserver.scheduling.shards import parse_shard

        try:
            args.shard = parse_shard(args.shard)
        except ValueError as error:
            parser.error(f"--shard: {error}")
    if args.max_payload < 0:
        parser.error("--max-payload must not be negative")
    from testserver.scheduling.jobs import available_cpus, parse_jobs

    try:
        if args.jobs == "0" and not args.worker_commands:
            raise ValueError("0 local workers needs at least one --worker-command")
        args.jobs = 0 if args.jobs == "0" else parse_jobs(args.jobs, available_cpus())
    except ValueError as error:
        parser.error(f"--jobs: {error}")
    args.worker_commands = tuple(args.worker_commands)
    if args.worker_commands and args.isolation == "none":
        parser.error(
            "--worker-command needs --isolation worker or fork: remote workers join a pool"
        )
    for command in args.worker_commands:
        if not command.strip():
            parser.error("--worker-command: the command is empty")
    if args.jobs > 1 and args.isolation == "none":
        parser.error(
            "--jobs needs --isolation worker or fork: workers are forked from the loaded suite"
        )
    args.load = LoadSpec(
        start=args.start or ".",
        top=args.top,
        pattern=args.pattern or "test*.py",
        names=tuple(names),
        discover=discover,
    )
    return args


def _is_terminal(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


def read_load_list(path: str) -> list[str]:
    """Test ids from a ``--load-list`` file: UTF-8, one per line, blank lines ignored."""
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def shard_ids(index, shard, requested: list[str] | None, load) -> list[str]:
    """The ids of ``shard`` (``--shard K/N``): the loaded suite divided into N shares by
    fixture group and timing history, then ``requested`` (``--load-list``) kept where it
    falls in share K, so that testr can list a shard and run parts of it. An id that names
    no loaded test is kept by shard 1 only (which reports it once)."""
    from testserver.engine.fixturegroups import fixture_groups
    from testserver.scheduling.shards import select_shard
    from testserver.scheduling.timehistory import project_times

    root = history_root(load)
    groups = fixture_groups(index)
    mine = set(select_shard(index.ids, shard, group_of=groups, durations=project_times(root)))
    if requested is None:
        return [test_id for test_id in index.ids if test_id in mine]
    kept = []
    for test_id in requested:
        owners = index.owners(test_id)
        if (owners[0] in mine) if owners else shard.index == 1:
            kept.append(test_id)
    return kept


def history_root(load) -> str:
    """The project root whose timing history orders a ``--jobs`` batch."""
    from testserver.clients.project import find_root, loading_start

    return find_root(loading_start(load.top, load.start))[0]


def _run_options(args: argparse.Namespace, root: str | None, **overrides: object) -> dict:
    """The options of :class:`~testserver.serve.driver.RunOptions`, as given on the command
    line, for the server's and one-shot mode's options alike."""
    options = {
        "isolation": args.isolation,
        "subunit_version": args.subunit_version,
        "subtests": args.subtests,
        "timeout": args.timeout,
        "jobs": args.jobs,
        "worker_commands": args.worker_commands,
        "history_root": root,
    }
    options.update(overrides)
    return options


def _take_resume() -> tuple[int, bytes]:
    """The generation and pending command bytes handed over by a restarting server."""
    from testserver.serve.server import GENERATION_ENV, RESUME_ENV

    generation = int(os.environ.pop(GENERATION_ENV, "0") or 0)
    path = os.environ.pop(RESUME_ENV, None)
    if not path:
        return generation, b""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        os.unlink(path)
    except OSError:
        data = b""
    return generation, data


def _serve(args: argparse.Namespace, index, channel, argv: list[str]) -> int:
    from testserver.serve.server import Server, ServerOptions

    generation, resume = _take_resume()
    reloader = None
    if args.reload:
        from testserver.hotreload.reloader import Reloader

        roots = [args.load.top or args.load.start, *args.watch]
        reloader = Reloader(args.load, roots, poll=args.poll)
        reloader.start(index)
    options = ServerOptions(
        **_run_options(args, history_root(args.load)),
        load=args.load,
        max_payload=args.max_payload,
        argv=argv,
        generation=generation,
        resume=resume,
    )
    return Server(index, channel, options, reloader=reloader).serve()


def unknown_command(word: str) -> str | None:
    """The usage error for a first argument that looks like a mistyped command, or None.

    A bare word (no dot, no slash) is taken as a command unless it is ``discover`` or a
    module or package in the working directory (``python -m testserver test_x`` stays a
    test name, as for unittest)."""
    if word.startswith("-") or "." in word or "/" in word or word == "discover":
        return None
    if os.path.exists(f"{word}.py") or os.path.isdir(word):
        return None
    import difflib

    close = difflib.get_close_matches(word, list(CLIENT_COMMANDS), n=1, cutoff=0.6)
    hint = f"; did you mean `testserver {close[0]}`?" if close else ""
    return (
        f"testserver: unknown command {word!r}{hint}\n"
        f"commands: {', '.join(CLIENT_COMMANDS)} (testserver --help)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m testserver`` and the ``testserver`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in CLIENT_COMMANDS:
        import importlib

        module, _, function = CLIENT_COMMANDS[argv[0]].partition(":")
        return getattr(importlib.import_module(module), function)(argv[1:])
    error = unknown_command(argv[0]) if argv else None
    if error is not None:
        print(error, file=sys.stderr)
        return EXIT_USAGE
    args = parse_args(argv)
    if _is_terminal(sys.stdout):
        print(TERMINAL_REFUSAL, file=sys.stderr)
        return EXIT_USAGE
    try:
        load_ids = read_load_list(args.load_list) if args.load_list else None
    except (OSError, UnicodeDecodeError) as error:
        print(f"testserver: cannot read --load-list file: {error}", file=sys.stderr)
        return EXIT_USAGE

    from testserver.engine.loading import load
    from testserver.serve.channel import open_private_channel

    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    channel = open_private_channel()
    import unittest

    if args.serve and args.reload:
        from testserver.hotreload.reloader import track_startup

        track_startup([args.load.top or args.load.start, *args.watch])
    loader = unittest.TestLoader()
    if args.name_patterns:  # exactly unittest's -k: import failures stay listed
        loader.testNamePatterns = [p if "*" in p else f"*{p}*" for p in args.name_patterns]
    try:
        with channel.suite_fds.during():
            index = load(args.load, loader=loader)
    except (ImportError, ValueError, TypeError, OSError) as error:
        channel.log(f"cannot load tests: {error}")
        return EXIT_USAGE
    ids = load_ids
    if args.shard is not None:
        ids = shard_ids(index, args.shard, load_ids, args.load)
    if args.serve:
        return _serve(args, index, channel, argv)

    from testserver.serve.oneshot import OneShotOptions, run_oneshot

    return run_oneshot(
        index,
        channel,
        OneShotOptions(
            list_only=args.list,
            test_ids=ids,
            **_run_options(
                args,
                history_root(args.load) if args.jobs + len(args.worker_commands) > 1 else None,
                isolation="fork" if args.isolation == "worker" else args.isolation,  # one batch
            ),
        ),
    )
