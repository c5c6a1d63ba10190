import signal
import sys
import unittest


class WaitsInFixture(unittest.TestCase):
    """setUpClass ignores SIGINT and waits for input: a cancel must kill the worker."""

    @classmethod
    def setUpClass(cls):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("fixture waiting")
        sys.stdin.readline()

    def test_a(self):
        pass

    def test_b(self):
        pass
