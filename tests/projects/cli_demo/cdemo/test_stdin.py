import sys
import unittest


class Stdin(unittest.TestCase):
    def test_reads_end_of_input(self):
        self.assertEqual(sys.stdin.read(), "")
