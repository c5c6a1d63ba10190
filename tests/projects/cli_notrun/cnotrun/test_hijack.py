"""A test that replaces unittest.TestCase.run: the tests after it report nothing."""

import unittest


class A(unittest.TestCase):
    def test_1_hijack(self):
        unittest.TestCase.run = lambda self, result=None: None

    def test_2_silent(self):
        pass
