import os
import sys
import unittest


class Work(unittest.TestCase):
    def test_a(self):
        pass

    def test_b(self):
        print("b ran")

    def test_c(self):
        self.assertEqual(1, 1)

    def test_d(self):
        self.assertEqual(2, 2)


class Gate(unittest.TestCase):
    def test_waits(self):
        """Blocks on the FIFO named by RBASIC_GATE, if set, until someone writes to it."""
        gate = os.environ.get("RBASIC_GATE")
        if gate:
            with open(gate) as fifo:
                fifo.read()


class Asks(unittest.TestCase):
    def test_readline(self):
        print(f"read {sys.stdin.readline()!r}")
