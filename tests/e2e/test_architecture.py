"""The layers of ``spec/architecture.md`` §1: imports flow one way, checked on the source.

Each subpackage of ``testserver`` may import only the layers its row of the table names
(lazy imports inside functions count too); this test reads every module's import
statements and fails on any other edge, naming the module and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import testserver

PACKAGE = Path(testserver.__file__).parent

ALLOWED = {
    "wire": {"wire"},
    "scheduling": {"scheduling"},
    "engine": {"engine", "wire"},
    "hotreload": {"hotreload", "engine", "wire"},
    "serve": {"serve", "hotreload", "engine", "wire", "scheduling"},
    "clients": {"clients", "wire", "engine", "scheduling"},
    "backends": {"backends", "clients", "wire", "scheduling"},
}
"""Layer -> the layers it may import (its own included)."""

EXCEPTIONS = {
    ("clients/watch.py", "hotreload"): "watch decides what to run on a save with the "
    "reloader's own file watcher and import graph",
    ("backends/testr.py", "cli"): "without a daemon, the backend runs one-shot mode in process",
}
"""Edges outside the table, each with its reason (spec/architecture.md §1 lists them)."""


def imported_layers(path: Path) -> set[str]:
    """The ``testserver`` subpackages (or top-level modules) ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "testserver":
                names = [f"testserver.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "testserver" and len(parts) > 1 and parts[1] != "__version__":
                found.add(parts[1])
    return found


def test_imports_flow_one_way() -> None:
    wrong = []
    for layer, allowed in ALLOWED.items():
        for path in sorted((PACKAGE / layer).glob("*.py")):
            relative = f"{layer}/{path.name}"
            for target in imported_layers(path) - allowed:
                if (relative, target) not in EXCEPTIONS:
                    wrong.append(f"{relative} imports testserver.{target}")
    assert not wrong, "imports against the layer table:\n" + "\n".join(wrong)


PURE_SCHEDULING = ("groups.py", "scheduler.py", "shards.py")
"""The scheduling core: no I/O and no clock, so a simulation runs the pool's own code."""

IMPURE = frozenset({"os", "sys", "io", "select", "socket", "subprocess", "threading", "time"})
IMPURE |= {"dbm", "json", "tempfile", "pathlib", "shutil", "signal", "watchdog"}


def test_the_scheduling_core_does_no_io_and_reads_no_clock() -> None:
    for name in PURE_SCHEDULING:
        path = PACKAGE / "scheduling" / name
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] not in IMPURE, f"scheduling/{name} imports {module}"


def test_every_module_is_in_a_layer() -> None:
    loose = {p.name for p in PACKAGE.glob("*.py")} - {"__init__.py", "__main__.py", "cli.py"}
    assert not loose, f"modules outside the layer folders: {sorted(loose)}"


MAX_MODULE_LINES = 600
"""The size past which a module is doing more than one job (issue 11)."""


def test_no_module_is_over_600_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): lines
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"
