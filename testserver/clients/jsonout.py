"""``--format json``: one JSON object per line, for editors that prefer JSON to subunit.

``testserver run --format json``, ``testserver watch --format json`` and ``testserver list
--format json`` write UTF-8 JSON lines on stdout (RFC 8259 objects, one per line, no
other output on stdout). ``spec/json-output.md`` is the normative description; in short,
every object has ``"event"``:

``start``
    a run begins: ``format`` (this schema's version, 1), ``run`` (1, 2, ... within one
    process), ``tests`` (how many tests were asked for, or null if unknown), ``changed``
    (files whose change caused the run; empty outside ``watch``).
``test``
    a test started (``status`` ``"inprogress"``), finished (``success``, ``fail``,
    ``skip``, ``xfail``, ``uxsuccess``) or exists (``"exists"``, from ``list``):
    ``test_id``, ``parent_id`` (the test a subtest belongs to, else null), ``kind``
    (``test``, ``subtest`` or ``fixture`` for ``setUpClass (pkg.mod.Class)`` & co.),
    ``file`` and ``line`` (where the test is defined, or null), and when finished
    ``attachments`` (name to text: ``traceback``, ``reason``, ``stdout``, ``stderr``, ...)
    and ``duration`` (seconds, or null).
``output``
    output written outside any test: ``name`` (``stdout`` or ``stderr``) and ``text``.
``reload``
    the server reloaded changed sources: the body of ``testserver.reload`` (``generation``,
    ``changed``, ``reloaded``, ``added``, ``removed``, ``restarted``, ``reason``).
``message``
    something that is not a test: ``text`` (e.g. a selector that matched nothing).
``summary``
    the run completed: ``ok``, ``status`` (``ok``, ``cancelled``, ``error``,
    ``incomplete``...), ``ran``, ``outcomes``, ``failures`` (failed by an assertion),
    ``errors`` (failed by another exception, and fixture errors), ``unknown``, ``not_run``,
    ``crashes``, ``unmatched``, ``duration`` and ``text`` (the human summary line).

Attachments are decoded as UTF-8 with invalid bytes replaced (U+FFFD). ``file`` and
``line`` are computed on the client without importing anything: the module part of the test
id is mapped to ``<root>/a/b.py`` (or ``<root>/a/b/__init__.py``) under the project's
top-level directory, the file is parsed with :mod:`ast`, and ``line`` is the line of the
``def`` of the test method (or of the class, or of a fixture such as ``setUpClass``); a
method inherited from a class of the same module is found through that class. Anything
else (a method inherited from another module, tests made by ``load_tests``) gets the
nearest thing found, or null.
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Sequence
from typing import Any, TextIO

from testserver.clients.runs import Outcome, Output, Renderer, Started, Tally
from testserver.wire.constants import FAILED_TEST_PREFIX

FORMAT_VERSION = 1
"""The version of this JSON schema, in every ``start`` event; it grows when a key changes."""

FIXTURE_ID = re.compile(r"(setUpClass|tearDownClass|setUpModule|tearDownModule) \((.+)\)\Z")
"""The ids unittest gives class and module fixture errors: ``setUpClass (pkg.mod.Class)``."""

MAX_INHERITANCE_DEPTH = 20
"""Base classes followed, within one module, to find an inherited test method."""


class _SourceIndex:
    """The definition lines of one source file: ``{"Class.method": line}``, class bases."""

    def __init__(self, tree: ast.Module) -> None:
        self.lines: dict[str, int] = {}
        self.bases: dict[str, list[str]] = {}
        self._visit(tree.body, "")

    def _visit(self, body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.lines[prefix + node.name] = node.lineno
            elif isinstance(node, ast.ClassDef):
                name = prefix + node.name
                self.lines[name] = node.lineno
                self.bases[name] = [b.id for b in node.bases if isinstance(b, ast.Name)]
                self._visit(node.body, name + ".")

    def line(self, qualname: str) -> int | None:
        """The line of ``qualname``; an inherited method's; else the nearest enclosing class's."""
        if qualname in self.lines:
            return self.lines[qualname]
        owner, _, name = qualname.rpartition(".")
        found = self._inherited(owner, name, MAX_INHERITANCE_DEPTH)
        while found is None and owner:
            found = self.lines.get(owner)
            owner = owner.rpartition(".")[0]
        return found

    def _inherited(self, owner: str, name: str, depth: int) -> int | None:
        if depth <= 0:
            return None
        for base in self.bases.get(owner, []):
            line = self.lines.get(f"{base}.{name}")
            if line is None:
                line = self._inherited(base, name, depth - 1)
            if line is not None:
                return line
        return None


class Locator:
    """Finds the file and line of a test from its id, by reading (never importing) sources."""

    def __init__(self, roots: Sequence[str]) -> None:
        self.roots = [os.path.abspath(root) for root in roots]
        self._indexes: dict[str, tuple[tuple[int, int], _SourceIndex | None]] = {}

    def locate(self, test_id: str, parent_id: str | None = None) -> tuple[str | None, int | None]:
        """``(absolute path, line)`` of the definition of ``test_id``; ``None`` if unknown."""
        dotted, module_only = _definition(parent_id or test_id)
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):
            path = self.module_path(".".join(parts[:cut]))
            if path is None:
                continue
            qualname = ".".join(parts[cut:])
            if module_only or not qualname:
                return path, None
            index = self._index(path)
            return path, None if index is None else index.line(qualname)
        return None, None

    def module_path(self, module: str) -> str | None:
        """The source file of dotted ``module`` under the roots, if there is one."""
        relative = os.path.join(*module.split("."))
        for root in self.roots:
            for candidate in (relative + ".py", os.path.join(relative, "__init__.py")):
                path = os.path.join(root, candidate)
                if os.path.isfile(path):
                    return path
        return None

    def _index(self, path: str) -> _SourceIndex | None:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._indexes.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            with open(path, "rb") as handle:
                index: _SourceIndex | None = _SourceIndex(ast.parse(handle.read(), path))
        except (OSError, SyntaxError, ValueError):
            index = None
        self._indexes[path] = (stamp, index)
        return index


def _definition(test_id: str) -> tuple[str, bool]:
    """``(dotted name of the definition, whether only its module can be known)``."""
    fixture = FIXTURE_ID.match(test_id)
    if fixture is not None:
        return f"{fixture.group(2)}.{fixture.group(1)}", False
    if test_id.startswith(FAILED_TEST_PREFIX):
        return test_id[len(FAILED_TEST_PREFIX) :], True
    return test_id.split(" ", 1)[0], False  # "pkg.T.test_x (i=1)": a subtest's parent


def text(data: bytes) -> str:
    """Attachment bytes as text: UTF-8, invalid sequences replaced by U+FFFD."""
    return data.decode("utf-8", "replace")


class JsonRenderer(Renderer):
    """Writes each event of a run as one line of JSON (see the module docstring)."""

    def __init__(self, stream: TextIO, locator: Locator) -> None:
        self.stream = stream
        self.locator = locator
        self.run = 0

    def emit(self, event: str, **fields: Any) -> None:
        """Write one JSON line and flush it, so that an editor sees it at once."""
        line = json.dumps({"event": event, **fields}, ensure_ascii=False)
        self.stream.write(line + "\n")
        self.stream.flush()

    def _test(self, test_id: str, parent_id: str | None, status: str, kind: str) -> dict:
        file, line = self.locator.locate(test_id, parent_id)
        return {
            "test_id": test_id,
            "parent_id": parent_id,
            "status": status,
            "kind": kind,
            "file": file,
            "line": line,
        }

    def start(self, total: int | None, changed: Sequence[str] = ()) -> None:
        self.run += 1
        self.emit("start", format=FORMAT_VERSION, run=self.run, tests=total, changed=list(changed))

    def started(self, item: Started) -> None:
        kind = "subtest" if item.parent_id else ("test" if item.runnable else "fixture")
        self.emit(
            "test", run=self.run, **self._test(item.test_id, item.parent_id, "inprogress", kind)
        )

    def finished(self, outcome: Outcome) -> None:
        fields = self._test(outcome.test_id, outcome.parent_id, outcome.status, outcome.kind)
        fields["attachments"] = {name: text(data) for name, data in outcome.attachments.items()}
        fields["duration"] = None if outcome.duration is None else round(outcome.duration, 6)
        self.emit("test", run=self.run, **fields)

    def output(self, item: Output) -> None:
        self.emit("output", run=self.run, name=item.name, text=text(item.data))

    def control(self, name: str, body: dict[str, Any]) -> None:
        if name == "testserver.reload":
            self.emit("reload", **body)

    def message(self, text: str) -> None:
        self.emit("message", text=text)

    def finish(self, tally: Tally) -> None:
        complete = tally.complete
        self.emit(
            "summary",
            run=self.run,
            ok=tally.ok,
            status=complete.get("status"),
            ran=tally.ran,
            outcomes=dict(tally.counts),
            failures=tally.failures,
            errors=tally.errors,
            unknown=complete.get("unknown", []),
            not_run=tally.not_run,
            crashes=complete.get("crashes", []),
            unmatched=tally.unmatched,
            duration=round(tally.elapsed, 6),
            text=tally.summary(),
        )

    def listing(self, test_ids: Sequence[str]) -> None:
        """``testserver list --format json``: one ``exists`` test event per id."""
        for test_id in test_ids:
            self.emit("test", **self._test(test_id, None, "exists", "test"))
