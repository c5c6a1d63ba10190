"""A module whose load_tests raises."""

import unittest


class NeverListed(unittest.TestCase):
    def test_x(self):
        pass


def load_tests(loader, tests, pattern):
    raise RuntimeError("load_tests is broken")
