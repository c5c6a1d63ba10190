import unittest

from dpar.barrier import meet


class TestLeft(unittest.TestCase):
    def test_left(self):
        self.assertTrue(meet("left", "right"), "test_right never ran at the same time")
