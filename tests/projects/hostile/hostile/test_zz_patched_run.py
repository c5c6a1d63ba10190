"""A test that breaks unittest for the tests after it: they produce no events at all."""

import unittest


class PatchesRun(unittest.TestCase):
    def test_a_patch(self):
        unittest.TestCase.run = lambda self, result=None: None

    def test_b_victim(self):
        pass
