"""Read Python traceback text: where a failure happened, and where an import broke.

Clients get tracebacks as text (a test's ``traceback`` attachment), never as objects. This
module finds in that text what a person wants first: the file and line *in the project*
where the test failed (:func:`project_frame`), and for a module that failed to import the
file, line and source line of the error (:func:`import_failure`), a ``SyntaxError``'s
caret line included. Pure text processing: no imports of the code, no I/O but ``os.path``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Frame", "ImportFailure", "frames", "import_failure", "last_line", "project_frame"]

_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+)(?:, in (?P<name>.+))?$')
"""A frame line; ``SyntaxError`` reports its location as one without ``, in NAME``."""

_MARKER = re.compile(r"^\s*[\^~]+\s*$")
"""A caret line under a source line (``SyntaxError``, and Python 3.11+ error ranges)."""

_OUTSIDE_PROJECT = ("site-packages", "dist-packages", ".venv", "venv", ".tox", ".nox")
"""Directory names whose files are dependencies, never the project's own code."""


@dataclass(frozen=True)
class Frame:
    """One location of a traceback: ``path``, ``line``, the function (``None`` for a
    ``SyntaxError`` location), the source line shown and the caret line under it."""

    path: str
    line: int
    name: str | None = None
    source: str | None = None
    marker: str | None = None


@dataclass(frozen=True)
class ImportFailure:
    """Where a module failed to import: the innermost project frame and the error."""

    frame: Frame
    error: str
    """The exception line, e.g. ``SyntaxError: '(' was never closed``."""


def frames(text: str) -> list[Frame]:
    """Every frame of ``text``, outermost first (chained tracebacks in order of appearance)."""
    lines = text.splitlines()
    found: list[Frame] = []
    for index, line in enumerate(lines):
        match = _FRAME.match(line)
        if match is None:
            continue
        source = marker = None
        following = lines[index + 1 : index + 3]
        if following and not _FRAME.match(following[0]) and _indent(following[0]) > _indent(line):
            indent = _indent(following[0])
            source = following[0][indent:].rstrip()
            if len(following) > 1 and _MARKER.match(following[1]):
                marker = following[1][indent:].rstrip()
        found.append(
            Frame(match["path"], int(match["line"]), match["name"], source or None, marker)
        )
    return found


def project_frame(text: str, roots: Sequence[str]) -> Frame | None:
    """The innermost frame of ``text`` in a file under ``roots`` (dependencies excluded)."""
    prefixes = _prefixes(roots)
    for frame in reversed(frames(text)):
        if _in_project(frame.path, prefixes):
            return frame
    return None


def import_failure(text: str, roots: Sequence[str]) -> ImportFailure | None:
    """Where the import that ``text`` reports failed, if a project file is to blame."""
    frame = project_frame(text, roots)
    if frame is None:
        return None
    return ImportFailure(frame, last_line(text))


def last_line(text: str) -> str:
    """The last non-blank line, stripped: the exception, ``Type: message``."""
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return ""


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _prefixes(roots: Sequence[str]) -> tuple[str, ...]:
    paths = {os.path.abspath(root) for root in roots} | {os.path.realpath(r) for r in roots}
    return tuple(os.path.join(path, "") for path in paths)


def _in_project(path: str, prefixes: tuple[str, ...]) -> bool:
    """Below a root, and not in a dependency directory below it."""
    for prefix in prefixes:
        if path.startswith(prefix):
            parts = path[len(prefix) :].split(os.sep)
            return not any(part in _OUTSIDE_PROJECT for part in parts)
    return False
