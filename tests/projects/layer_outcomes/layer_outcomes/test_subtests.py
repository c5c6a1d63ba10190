"""Subtests that pass, fail, skip and error."""

import unittest


class Subtests(unittest.TestCase):
    def test_all_pass(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertLess(i, 3)

    def test_some_fail(self):
        for i in range(4):
            with self.subTest(i=i):
                self.assertNotEqual(i % 2, 1, f"odd {i}")

    def test_one_errors(self):
        for i in range(2):
            with self.subTest(i=i):
                if i == 1:
                    raise KeyError("boom")

    def test_one_skips(self):
        for i in range(3):
            with self.subTest(i=i):
                if i == 1:
                    self.skipTest("skip one")

    def test_message(self):
        with self.subTest("labelled", kind="x"):
            self.fail("labelled failure")
