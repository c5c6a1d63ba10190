import time
import unittest


class Slow(unittest.TestCase):
    def test_a_fast(self):
        pass

    def test_b_sleeps(self):
        time.sleep(120)

    def test_c_after(self):
        pass
