"""load_tests adds the same test twice, under one id."""

import unittest

RUNS = []


class Twice(unittest.TestCase):
    def test_twice(self):
        RUNS.append(self)

    def test_once(self):
        pass


def load_tests(loader, tests, pattern):
    return unittest.TestSuite([Twice("test_twice"), Twice("test_once"), Twice("test_twice")])
