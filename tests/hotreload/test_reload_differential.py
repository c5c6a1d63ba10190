"""Differential test of hot reload: one warm server versus fresh cold runs, edit after edit.

A copy of ``tests/projects/reload_shop`` is edited by a sequence of scenarios (each builds
on the previous state) while one ``python -m testserver --serve`` stays up. After each
scenario the warm server's ``list-tests`` ids (in order) and ``run-tests`` outcomes (every
test and subtest id with its final status and parent id) must equal those of a fresh
``python -m testserver discover --list`` and ``python -m testserver discover`` on the same
tree, with a ``PYTHONPYCACHEPREFIX`` emptied of the project's bytecode before each pair,
so that the reference never reads a stale ``.pyc``. The server must also have done what the
scenario expects: reloaded in place, or restarted itself and said why, or (for a change that
changes nothing) not reloaded at all.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import py_compile
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from serverproc import ServerProcess, Transcript, copy_project

from testserver.wire.commands import ListTests, Reload, RunTests
from testserver.wire.control import RELOAD
from testserver.wire.packets import decode_packets

BENCH = str(Path(__file__).resolve().parent.parent.parent / "bench")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

from replay_history import Outcomes, listed, outcomes  # noqa: E402  (shared with the replay)

ARGS = ("discover", "-t", ".", "-s", "shop")
ENV = {"PYTHONPATH": "vendor/site-packages", "PYTHONDONTWRITEBYTECODE": ""}
"""The server may write bytecode at startup, as usual; extlib is found on the path. A stale
``.pyc`` is planted on purpose by one scenario (another tool compiling the file)."""

MIN_SCENARIOS = 30


class Tree:
    """Edits to the project copy; every helper checks that it changed something."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mtimes: dict[str, int] = {}

    def path(self, rel: str) -> Path:
        return self.root / rel

    def write(self, rel: str, text: str) -> None:
        path = self.path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def replace(self, rel: str, old: str, new: str) -> None:
        text = self.path(rel).read_text()
        assert old in text, f"{old!r} not in {rel}"
        self.write(rel, text.replace(old, new, 1))

    def append(self, rel: str, text: str) -> None:
        self.write(rel, self.path(rel).read_text() + text)

    def delete(self, rel: str) -> None:
        path = self.path(rel)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()

    def rename(self, old: str, new: str) -> None:
        os.replace(self.path(old), self.path(new))

    def compile(self, rel: str) -> None:
        """Write the file's ``.pyc`` into the tree, as an IDE or another test run would."""
        path = str(self.path(rel))
        py_compile.compile(path, cfile=importlib.util.cache_from_source(path), doraise=True)

    def remember_mtime(self, rel: str) -> None:
        self.mtimes[rel] = self.path(rel).stat().st_mtime_ns

    def restore_mtime(self, rel: str) -> None:
        path = self.path(rel)
        os.utime(path, ns=(path.stat().st_atime_ns, self.mtimes[rel]))


@dataclass
class Scenario:
    name: str
    edit: Callable[[Tree], None]
    expect: str = "inplace"
    """``inplace``: reloaded without restarting; ``restart``: restarted with a reason;
    ``none``: no reload at all."""
    force: bool = False
    """Send ``reload`` before listing."""


def _nothing(tree: Tree) -> None:
    pass


ADDED_METHOD = "\n    def test_added(self):\n        self.assertTrue(True)\n"
EXTRA_CLASS = """

class ExtraModelTests(unittest.TestCase):
    def test_one(self):
        self.assertEqual(make("widget").kind, "widget")

    def test_two(self):
        self.assertEqual(make("gadget").name, "not x")
"""
NEW_MODULE = """import unittest


class NewTests(unittest.TestCase):
    def test_fresh(self):
        self.assertTrue(True)

    def test_fresh_failure(self):
        self.fail("on purpose")
"""
INHERITED = "\n    def test_inherited(self):\n        self.assertEqual(self.basket, [])\n"
WIDGET = 'class Widget(Item):\n    kind = "widget"\n'
WIDGET_STANDALONE = (
    'class Widget:\n    kind = "widget"\n\n    def __init__(self, name, price):\n'
    "        self.name = name\n"
)
XML_PLUGIN = '\n\n@register\nclass XmlExport:\n    name = "xml"\n'
EXTRA_TEST = """import unittest

from shop.tests.extra import LEVEL


class ExtraTests(unittest.TestCase):
    def test_level(self):
        for level in range(3):
            with self.subTest(level=level):
                self.assertLess(level, LEVEL)
"""
NATIVE_TEST = """import unittest

from shop import _bisect


class NativeTests(unittest.TestCase):
    def test_bisect(self):
        self.assertEqual(_bisect.bisect_left([1, 2, 3], 2), 1)
"""


def _atomic_save(tree: Tree) -> None:
    rel = "shop/tests/test_models.py"
    text = (
        tree.path(rel)
        .read_text()
        .replace('make("gadget").kind, "gadget"', 'make("gadget").kind, "gadgets"')
    )
    tree.write(rel + "~", tree.path(rel).read_text())  # the editor's backup
    tree.write("shop/tests/.test_models.py.swp", "swap")
    tree.write(rel + ".tmp", text)
    tree.rename(rel + ".tmp", rel)
    tree.delete(rel + "~")
    tree.delete("shop/tests/.test_models.py.swp")


def _extension_file() -> Path | None:
    bisect = sys.modules.get("_bisect") or importlib.import_module("_bisect")
    path = getattr(bisect, "__file__", None)
    return Path(path) if path else None


EXTENSION_NAME = "shop/_bisect" + importlib.machinery.EXTENSION_SUFFIXES[0]


def _add_extension(tree: Tree) -> None:
    source = _extension_file()
    assert source is not None
    shutil.copyfile(source, tree.path(EXTENSION_NAME))
    tree.write("shop/tests/test_native.py", NATIVE_TEST)


CASES, LIMITS, GUIDE = "shop/tests/cases", "shop/limits.json", "shop/tests/guide.txt"


def data_scenarios() -> list[Scenario]:
    """Edits to data files that modules read or list while they are imported."""
    return [
        Scenario(
            "add a file to a directory a test module lists at import",
            lambda t: t.write(f"{CASES}/gamma.txt", "gamma\n"),
        ),
        Scenario(
            "edit a data file a helper reads at import (its importers fail now)",
            lambda t: t.replace(LIMITS, "10", "4"),
        ),
        Scenario(
            "add a file that the listing module's glob does not match",
            lambda t: t.write(f"{CASES}/notes.md", "not a case\n"),
        ),
        Scenario("delete a data file", lambda t: t.delete(f"{CASES}/beta.txt")),
        Scenario("delete the whole data directory", lambda t: t.delete(CASES)),
        Scenario(
            "recreate the data directory with another file",
            lambda t: t.write(f"{CASES}/delta.txt", "delta\n"),
        ),
        Scenario(
            "add a file to the recreated directory, restore the data file read at import",
            lambda t: (t.write(f"{CASES}/epsilon.txt", "epsilon\n"), t.replace(LIMITS, "4", "10")),
        ),
        Scenario("delete the data file read at import", lambda t: t.delete(LIMITS)),
        Scenario("restore it", lambda t: t.write(LIMITS, '{"max_length": 6}\n')),
        Scenario(
            "edit a doctest file that load_tests reads (no module imports it)",
            lambda t: t.replace(GUIDE, "12.5", "12.0"),
        ),
        Scenario("fix the doctest file", lambda t: t.replace(GUIDE, "12.0", "12.5")),
    ]


def scenarios() -> list[Scenario]:
    models, pricing = "shop/tests/test_models.py", "shop/pricing.py"
    util, testing = "shop/util.py", "shop/testing.py"
    fixtures = "shop/tests/test_fixtures.py"
    found = [
        Scenario("baseline: nothing changed", _nothing, "none"),
        Scenario(
            "edit a test body (the test now fails)",
            lambda t: t.replace(models, '.kind, "gadget")', '.kind, "gizmo")'),
        ),
        Scenario(
            "edit the test body back",
            lambda t: t.replace(models, '.kind, "gizmo")', '.kind, "gadget")'),
        ),
        Scenario("add a test method", lambda t: t.append(models, ADDED_METHOD)),
        Scenario("rename a test method", lambda t: t.replace(models, "test_added", "test_renamed")),
        Scenario(
            "delete a test method",
            lambda t: t.replace(models, ADDED_METHOD.replace("added", "renamed"), ""),
        ),
        Scenario("add a test class", lambda t: t.append(models, EXTRA_CLASS)),
        Scenario(
            "rename a test class",
            lambda t: t.replace(models, "class ExtraModelTests", "class MoreModelTests"),
        ),
        Scenario(
            "delete a test class",
            lambda t: t.replace(models, EXTRA_CLASS.replace("Extra", "More"), ""),
        ),
        Scenario("add a test module", lambda t: t.write("shop/tests/test_new.py", NEW_MODULE)),
        Scenario(
            "rename a test module",
            lambda t: t.rename("shop/tests/test_new.py", "shop/tests/test_newer.py"),
        ),
        Scenario("delete a test module", lambda t: t.delete("shop/tests/test_newer.py")),
        Scenario(
            "edit a helper used as `import m` and `from m import f`",
            lambda t: t.replace(pricing, "(1 + TAX_RATE), 2)", "(1 + TAX_RATE) + 1, 2)"),
        ),
        Scenario(
            "edit the helper back",
            lambda t: t.replace(pricing, "(1 + TAX_RATE) + 1, 2)", "(1 + TAX_RATE), 2)"),
        ),
        Scenario(
            "change a module-level constant",
            lambda t: t.replace(pricing, "TAX_RATE = 0.25", "TAX_RATE = 0.30"),
        ),
        Scenario(
            "save twice within one second, same size, no command in between",
            lambda t: (
                t.replace(pricing, "TAX_RATE = 0.30", "TAX_RATE = 0.35"),
                t.replace(pricing, "TAX_RATE = 0.35", "TAX_RATE = 0.25"),
            ),
        ),
        Scenario(
            "edit a helper the package __init__ imports (same size); another tool compiles it",
            lambda t: (t.replace(util, '"-")', '"_")'), t.remember_mtime(util), t.compile(util)),
        ),
        Scenario(
            "revert it with the same size and the same mtime (a stale .pyc would still fail)",
            lambda t: (t.replace(util, '"_")', '"-")'), t.restore_mtime(util)),
        ),
        Scenario(
            "change a class that tests check with isinstance",
            lambda t: t.replace("shop/models.py", WIDGET, WIDGET_STANDALONE),
        ),
        Scenario(
            "change the class back (old class objects must not linger)",
            lambda t: t.replace("shop/models.py", WIDGET_STANDALONE, WIDGET),
        ),
        Scenario(
            "edit a base class shared by several test modules",
            lambda t: t.replace(testing, 'currency = "EUR"', 'currency = "USD"'),
        ),
        Scenario(
            "add a test method to the shared base class",
            lambda t: t.replace(
                testing, "    def setUp(self):", INHERITED.lstrip("\n") + "\n    def setUp(self):"
            ),
        ),
        Scenario(
            "restore the base class",
            lambda t: (
                t.replace(testing, INHERITED.lstrip("\n") + "\n", ""),
                t.replace(testing, 'currency = "USD"', 'currency = "EUR"'),
            ),
        ),
        Scenario(
            "introduce a syntax error in a test module",
            lambda t: t.replace(
                models, "def test_gadget_kind(self):", "def test_gadget_kind(self)"
            ),
        ),
        Scenario(
            "fix the syntax error",
            lambda t: t.replace(
                models, "def test_gadget_kind(self)", "def test_gadget_kind(self):"
            ),
        ),
        Scenario(
            "introduce a syntax error in a helper",
            lambda t: t.replace(
                pricing, "def total(price, quantity=1):", "def total(price, quantity=1)"
            ),
        ),
        Scenario(
            "fix the helper",
            lambda t: t.replace(
                pricing, "def total(price, quantity=1)", "def total(price, quantity=1):"
            ),
        ),
        Scenario(
            "import a module that does not exist",
            lambda t: t.replace(
                fixtures,
                "import unittest\n",
                "import unittest\n\nimport shop.missing  # noqa: F401\n",
            ),
        ),
        Scenario("create the missing module", lambda t: t.write("shop/missing.py", "VALUE = 1\n")),
        Scenario("delete a helper module a test imports", lambda t: t.delete("shop/missing.py")),
        Scenario(
            "remove the import",
            lambda t: t.replace(fixtures, "\nimport shop.missing  # noqa: F401\n", ""),
        ),
        Scenario(
            "change setUpModule",
            lambda t: t.replace(fixtures, 'STATE["mode"] = "basic"', 'STATE["mode"] = "fancy"'),
        ),
        Scenario(
            "change the package __init__.py",
            lambda t: t.replace("shop/__init__.py", 'VERSION = "1.0"', 'VERSION = "2.0"'),
        ),
        Scenario(
            "change a subpackage __init__.py",
            lambda t: t.replace("shop/tests/sub/__init__.py", '"on"', '"off"'),
        ),
        Scenario(
            "restore both __init__.py files",
            lambda t: (
                t.replace("shop/__init__.py", 'VERSION = "2.0"', 'VERSION = "1.0"'),
                t.replace("shop/tests/sub/__init__.py", '"off"', '"on"'),
            ),
        ),
        Scenario(
            "register one more plugin (a registry filled at import time)",
            lambda t: t.append("shop/plugins.py", XML_PLUGIN),
        ),
        Scenario(
            "edit the registering module again",
            lambda t: t.replace("shop/plugins.py", '"xml"', '"yaml"'),
        ),
        Scenario(
            "edit a test module that bumps another module's counter at import",
            lambda t: t.append("shop/tests/test_registry.py", "\n# touched\n"),
        ),
        Scenario(
            "edit a subclass of a base whose __init_subclass__ records subclasses",
            lambda t: t.append("shop/tests/test_basket.py", "\n# touched\n"),
        ),
        Scenario(
            "add a subpackage with tests",
            lambda t: (
                t.write("shop/tests/extra/__init__.py", "LEVEL = 2\n"),
                t.write("shop/tests/extra/test_extra.py", EXTRA_TEST),
            ),
        ),
        Scenario("delete the subpackage", lambda t: t.delete("shop/tests/extra")),
        Scenario("an editor's atomic save (temp file renamed over)", _atomic_save),
        *data_scenarios(),
        Scenario(
            "touch a file without changing it",
            lambda t: os.utime(t.path(models)),
            "none",
        ),
        Scenario("force a reload with the reload command", _nothing, "inplace", force=True),
        Scenario(
            "change an installed library (not a project module)",
            lambda t: t.replace(
                "vendor/site-packages/extlib/__init__.py", "VERSION = 1", "VERSION = 2"
            ),
            "restart",
        ),
        Scenario(
            "edit a class registered with an installed library",
            lambda t: t.append("integrations.py", "\n# touched\n"),
            "restart",
        ),
    ]
    if _extension_file() is not None:
        found += [
            Scenario("add a compiled extension module", _add_extension, "restart"),
            Scenario(
                "change the compiled extension",
                lambda t: t.path(EXTENSION_NAME).write_bytes(
                    t.path(EXTENSION_NAME).read_bytes() + b"\0"
                ),
                "restart",
            ),
            Scenario(
                "remove the extension and its test",
                lambda t: (t.delete(EXTENSION_NAME), t.delete("shop/tests/test_native.py")),
                "restart",
            ),
        ]
    found.append(
        Scenario(
            "edit a test body after the restarts",
            lambda t: t.replace(models, '.kind, "gadgets")', '.kind, "gadget")'),
        )
    )
    return found


# ---------------------------------------------------------------------------------------------


def cold(root: Path, scratch: Path) -> tuple[list[str], Outcomes]:
    """``--list`` and a full run, in two fresh processes that compile the project afresh.

    They share a bytecode cache outside the tree (``PYTHONPYCACHEPREFIX``) from which the
    project's part is deleted first: the standard library and testserver, which no scenario
    edits, stay compiled, and no ``.pyc`` of the project survives from an earlier scenario.
    """
    prefix = scratch / "pyc"
    shutil.rmtree(prefix / root.resolve().relative_to(root.anchor), ignore_errors=True)
    env = dict(os.environ, PYTHONPATH="vendor/site-packages", PYTHONPYCACHEPREFIX=str(prefix))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "testserver", *ARGS, *extra],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for extra in (["--list"], [])
    ]
    (list_out, _), (run_out, run_err) = (p.communicate(timeout=120) for p in procs)
    assert procs[1].returncode == 0, run_err.decode()
    return listed(decode_packets(list_out)), outcomes(decode_packets(run_out))


class Warm:
    """The one server kept up for the whole sequence."""

    def __init__(self, root: Path) -> None:
        self.server = ServerProcess(root, *ARGS[1:], env=ENV)
        self.count = 0
        self.generation = 0

    def next_id(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def observe(self, force: bool) -> tuple[list[str], Outcomes, list[dict]]:
        transcripts: list[Transcript] = []
        if force:
            transcripts.append(self.server.request(Reload(self.next_id("reload"))))
        listing = self.server.request(ListTests(self.next_id("list")))
        run = self.server.request(RunTests(self.next_id("run")))
        transcripts += [listing, run]
        for transcript in transcripts:
            assert transcript.complete["status"] == "ok", transcript.complete
        reloads = [body for t in transcripts for body in t.controls(RELOAD)]
        generation = run.complete["generation"]
        assert generation == self.generation + len(reloads), (generation, reloads)
        self.generation = generation
        return listed(listing.packets), outcomes(run.packets), reloads


def check_expectation(scenario: Scenario, reloads: list[dict]) -> str | None:
    restarts = [r for r in reloads if r["restarted"]]
    if scenario.expect == "none":
        return f"expected no reload, got {reloads}" if reloads else None
    if not reloads:
        return "expected a reload, the server did not reload"
    if scenario.expect == "restart":
        if not restarts or not all(r["reason"] for r in restarts):
            return f"expected a restart with a reason, got {reloads}"
        return None
    return f"expected an in-place reload, got a restart: {restarts}" if restarts else None


@pytest.mark.heavy
def test_warm_server_agrees_with_cold_runs_after_every_edit(tmp_path: Path) -> None:
    root = copy_project("reload_shop", tmp_path)
    tree = Tree(root)
    plan = scenarios()
    assert len(plan) >= MIN_SCENARIOS
    warm = Warm(root)
    failures: list[str] = []
    report: list[str] = []
    try:
        for number, scenario in enumerate(plan, 1):
            scenario.edit(tree)
            warm_ids, warm_outcomes, reloads = warm.observe(scenario.force)
            cold_ids, cold_outcomes = cold(root, tmp_path)
            problems = []
            if warm_ids != cold_ids:
                problems.append(f"list-tests differs: warm {warm_ids} cold {cold_ids}")
            if warm_outcomes != cold_outcomes:
                diff = {
                    k: (warm_outcomes.get(k), cold_outcomes.get(k))
                    for k in set(warm_outcomes) | set(cold_outcomes)
                    if warm_outcomes.get(k) != cold_outcomes.get(k)
                }
                problems.append(f"run-tests differs (warm, cold): {diff}")
            expectation = check_expectation(scenario, reloads)
            if expectation:
                problems.append(expectation)
            how = (
                "restart"
                if any(r["restarted"] for r in reloads)
                else ("in place" if reloads else "no reload")
            )
            verdict = "agree" if not problems else "DISAGREE"
            report.append(
                f"{number:2d}. {verdict:8s} {how:9s} {len(cold_ids):2d} tests  {scenario.name}"
            )
            for reload in reloads:
                if reload["restarted"]:
                    report.append(f"      restarted: {reload['reason']}")
            failures += [f"{number}. {scenario.name}: {p}" for p in problems]
    finally:
        warm.server.kill()
    agreed = len(plan) - len({f.split(":")[0] for f in failures})
    print("\n".join(report))
    print(f"{agreed}/{len(plan)} scenarios agree")
    assert not failures, "\n".join(failures)


if __name__ == "__main__":  # pragma: no cover - handy for a verbose run
    sys.exit(pytest.main([__file__, "-s", "-q"]))
