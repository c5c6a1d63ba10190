"""For ``testserver run -x``: a failure, then a test that only a cancel ends, then another."""

import time
import unittest


class FailFast(unittest.TestCase):
    def test_a_fails(self):
        self.assertEqual(1, 2)

    def test_b_blocks(self):
        time.sleep(600)  # ended by the cancel that -x sends after test_a_fails

    def test_c_never(self):
        pass
