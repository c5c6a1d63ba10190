import unittest

from shop import VERSION
from shop.tests.sub import FLAG


class FlagTests(unittest.TestCase):
    def test_flag(self):
        self.assertEqual(FLAG, "on")

    def test_version(self):
        self.assertEqual(VERSION, "1.0")
