"""Grouping facts (testserver.engine.fixturegroups): which tests share a class or module
fixture, on a project written at test time and loaded as the server loads it."""

from __future__ import annotations

import textwrap
from pathlib import Path

from testserver.engine.fixturegroups import fixture_groups
from testserver.engine.loading import LoadSpec, load

CLASSES = """
import unittest

class Plain(unittest.TestCase):
    def test_a(self): pass

class WithSetUp(unittest.TestCase):
    @classmethod
    def setUpClass(cls): pass
    def test_a(self): pass
    def test_b(self): pass

class Inherits(WithSetUp):
    def test_c(self): pass

class OnlyTearDown(unittest.TestCase):
    @classmethod
    def tearDownClass(cls): pass
    def test_a(self): pass
"""

MODULE = """
import unittest

def tearDownModule(): pass

class One(unittest.TestCase):
    @classmethod
    def setUpClass(cls): pass
    def test_a(self): pass

class Two(unittest.TestCase):
    def test_a(self): pass
"""


def test_groups_follow_class_and_module_fixtures(tmp_path: Path) -> None:
    package = tmp_path / "fgroups_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "test_classes.py").write_text(textwrap.dedent(CLASSES))
    (package / "test_module.py").write_text(textwrap.dedent(MODULE))
    (package / "test_broken.py").write_text("import fgroups_no_such_module\n")
    index = load(LoadSpec(start=str(tmp_path), top=str(tmp_path)))
    classes, module = "fgroups_pkg.test_classes.", "fgroups_pkg.test_module."
    assert fixture_groups(index) == {
        f"{classes}Inherits.test_a": f"class:{classes}Inherits",
        f"{classes}Inherits.test_b": f"class:{classes}Inherits",
        f"{classes}Inherits.test_c": f"class:{classes}Inherits",
        f"{classes}OnlyTearDown.test_a": f"class:{classes}OnlyTearDown",
        f"{classes}WithSetUp.test_a": f"class:{classes}WithSetUp",
        f"{classes}WithSetUp.test_b": f"class:{classes}WithSetUp",
        f"{module}One.test_a": "module:fgroups_pkg.test_module",
        f"{module}Two.test_a": "module:fgroups_pkg.test_module",
    }  # Plain and the import failure stand alone
    assert len(index.ids) == 10
