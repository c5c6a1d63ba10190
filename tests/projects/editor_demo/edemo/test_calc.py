import unittest

from edemo.calc import add, sub


class Calc(unittest.TestCase):
    def test_add(self):
        self.assertEqual(add(2, 3), 5)

    def test_sub(self):
        self.assertEqual(sub(5, 3), 3)

    def test_prints(self):
        print("hello from test_prints")


def helper():
    return "not a test"
