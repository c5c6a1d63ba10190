"""The load_tests protocol: keep one test and add a FunctionTestCase."""

import unittest


class Filtered(unittest.TestCase):
    def test_kept(self):
        pass

    def test_dropped(self):
        raise AssertionError("load_tests drops this test")


def added():
    pass


def load_tests(loader, tests, pattern):
    suite = unittest.TestSuite()
    suite.addTest(Filtered("test_kept"))
    suite.addTest(unittest.FunctionTestCase(added))
    return suite
