import sys
import unittest


class ReadsStdin(unittest.TestCase):
    def test_readline(self):
        line = sys.stdin.readline()
        print(f"read {line!r}")
