import os
import signal
import unittest


class TestCrash(unittest.TestCase):
    def test_a_passes(self):
        pass

    def test_b_kills_the_server(self):
        # The test runs in a worker forked from the warm server: kill the server itself.
        os.kill(os.getppid(), signal.SIGKILL)
