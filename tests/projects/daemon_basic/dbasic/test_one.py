import unittest


class TestOne(unittest.TestCase):
    def test_a(self):
        self.assertEqual(1 + 1, 2)

    def test_b(self):
        self.assertTrue(True)

    def test_skip(self):
        self.skipTest("not today")
