import unittest

import shop.counter
import shop.plugins  # noqa: F401  (registers the plugins)
from shop.registry import PLUGINS

shop.counter.LOADS += 1


class RegistryTests(unittest.TestCase):
    def test_count(self):
        self.assertEqual(len(PLUGINS), 2)

    def test_names(self):
        self.assertEqual([p.name for p in PLUGINS], ["csv", "json"])

    def test_imported_once(self):
        self.assertEqual(shop.counter.LOADS, 1)
