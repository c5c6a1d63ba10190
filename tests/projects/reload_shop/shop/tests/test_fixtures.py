import unittest

STATE = {}


def setUpModule():
    STATE["ready"] = True
    STATE["mode"] = "basic"


class FixtureTests(unittest.TestCase):
    def test_ready(self):
        self.assertTrue(STATE["ready"])

    def test_mode(self):
        self.assertEqual(STATE["mode"], "basic")
