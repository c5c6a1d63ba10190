import os
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


class TestSlow(unittest.TestCase):
    def test_quick(self):
        pass

    def test_waits(self):
        """Says it started, then waits (up to a minute) for a release file."""
        with open(os.path.join(HERE, "started"), "w"):
            pass
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(HERE, "release")):
            self.assertLess(time.monotonic(), deadline, "never released")
            time.sleep(0.01)
