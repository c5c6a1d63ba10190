import sys
import unittest


class Alpha(unittest.TestCase):
    def test_pass_1(self):
        self.assertEqual(1 + 1, 2)

    def test_pass_2(self):
        self.assertIn("a", "abc")

    def test_fail(self):
        self.assertEqual("left", "right")

    @unittest.skip("skipped on purpose")
    def test_skip(self):
        pass

    def test_output(self):
        print("alpha prints to stdout")
        sys.stderr.write("alpha writes to stderr\n")
