import unittest

from wproj import calc


class CalcTest(unittest.TestCase):
    def test_add(self):
        self.assertEqual(calc.add(1, 2), 3)

    def test_add_negative(self):
        self.assertEqual(calc.add(-1, -1), -2)
