"""Where a project is, and where its daemon and its state live, however the tool is invoked.

A *project* is the nearest directory, from a starting point upwards, that holds one of
:data:`MARKERS` (``pyproject.toml``, ``.git``, ``.testr.conf``, ...); with none up to the
file-system root, the starting point itself. Paths are resolved first (symbolic links,
``..``, ``./``), so ``calc/tests``, ``./calc/tests`` and ``/abs/calc/tests`` name the same
project. Its daemon and the CLI's memory of the last run (``--lf``/``--ff``) live in
``<project>/.testserver/`` (mode 0700, with a ``.gitignore`` of ``*``), unless
``TESTSERVER_DAEMON_DIR`` names another daemon directory (for CI and tests).

The checks a client makes before connecting (:func:`private_problem`,
:func:`unix_address`) are here too. This module imports only :mod:`os`: the fast client
paths (:mod:`testserver.backends.testr`, :mod:`testserver.backends.warmcli`) use it.
"""

from __future__ import annotations

import os

MARKERS = (
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "tox.ini",
    ".testr.conf",
    ".stestr.conf",
    ".git",
    ".hg",
)
"""Files or directories that mark a project's root, nearest first wins."""

STATE_DIR = ".testserver"
"""The project's private directory: the daemon's socket and log, the last run's results."""

DAEMON_DIR_ENV = "TESTSERVER_DAEMON_DIR"
"""Overrides the daemon directory (one daemon for every project: CI, tests)."""

MAX_UNIX_PATH = 100
"""Socket paths longer than this do not fit ``sockaddr_un`` (108 bytes on Linux, 104 on BSD)."""

GITIGNORE = "# Created by testserver: its daemon socket, log and last-run results.\n*\n"
"""Written into a new state directory, so that git never sees it."""


def find_root(start: str | None = None) -> tuple[str, bool]:
    """``(project root, whether a marker was found)``, searching upwards from ``start``."""
    path = os.path.realpath(start or os.getcwd())
    if not os.path.isdir(path):
        path = os.path.dirname(path)
    here = path
    while True:
        if any(os.path.exists(os.path.join(here, marker)) for marker in MARKERS):
            return here, True
        parent = os.path.dirname(here)
        if parent == here:
            return path, False
        here = parent


def state_dir(root: str) -> str:
    """``<root>/.testserver``."""
    return os.path.join(root, STATE_DIR)


def daemon_dir(root: str) -> str:
    """The daemon directory of the project at ``root`` (or ``$TESTSERVER_DAEMON_DIR``)."""
    override = os.environ.get(DAEMON_DIR_ENV)
    return os.path.abspath(override) if override else state_dir(root)


def ensure_gitignore(directory: str) -> None:
    """Put a ``.gitignore`` of ``*`` into ``directory`` if it has none (best effort)."""
    path = os.path.join(directory, ".gitignore")
    if os.path.exists(path):
        return
    try:
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(GITIGNORE)
    except OSError:
        pass


def loading_start(top: str | None, start: str | None, cwd: str | None = None) -> str:
    """The directory a project is searched from for these loading options: the top-level
    directory, else the start directory (unittest's default top), else ``cwd``."""
    base = cwd or os.getcwd()
    return os.path.realpath(os.path.join(base, top or start or "."))


def private_problem(directory: str) -> str | None:
    """Why ``directory`` is not ours alone (mode 0700, our uid, not a link), or ``None``.

    A socket in a directory that someone else can write to could be theirs: connecting to it
    would hand them our tests, our environment and our output.
    """
    try:
        info = os.lstat(directory)
    except OSError as error:
        return f"no daemon directory {directory}: {error.strerror}"
    if not os.path.isdir(directory) or os.path.islink(directory):
        return f"{directory} is not a directory"
    if info.st_uid != os.getuid():
        return f"{directory} belongs to uid {info.st_uid}, not to us"
    if info.st_mode & 0o077:
        mode = info.st_mode & 0o777
        return f"{directory} is open to other users (mode {mode:o}); run: chmod 700 {directory}"
    return None


def unix_address(path: str) -> str:
    """``path``, or a shorter relative path to it when it is too long for a Unix socket."""
    if len(path) <= MAX_UNIX_PATH:
        return path
    relative = os.path.relpath(path)
    return relative if len(relative) < len(path) else path
