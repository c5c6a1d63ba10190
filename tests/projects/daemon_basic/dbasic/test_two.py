import sys
import unittest


class TestTwo(unittest.TestCase):
    def test_c(self):
        self.assertIn("a", "abc")

    def test_fail(self):
        self.assertEqual(1, 2)

    def test_print(self):
        print("hello from test_print")
        self.assertEqual(sys.stdin.read(), "")  # end of input, never a hang
