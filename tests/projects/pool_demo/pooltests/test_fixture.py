"""A class with setUpClass: its tests form one group, so one worker runs them all and the
fixture runs once. POOL_FIXTURE_LOG names a file it appends its pid to."""

import os
import unittest


class WithSetUpClass(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        log = os.environ.get("POOL_FIXTURE_LOG")
        if log:
            with open(log, "a") as handle:
                handle.write(f"{os.getpid()}\n")

    def test_1(self):
        pass

    def test_2(self):
        pass

    def test_3(self):
        pass
