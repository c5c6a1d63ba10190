"""A module whose setUpModule fails: its tests never run."""

import unittest


def setUpModule():
    raise RuntimeError("setUpModule is broken")


class Unreachable(unittest.TestCase):
    def test_a(self):
        pass

    def test_b(self):
        pass
