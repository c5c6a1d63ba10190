import unittest

from dpar.barrier import meet


class TestRight(unittest.TestCase):
    def test_right(self):
        self.assertTrue(meet("right", "left"), "test_left never ran at the same time")
