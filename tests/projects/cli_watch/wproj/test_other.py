import unittest


class OtherTest(unittest.TestCase):
    def test_truth(self):
        self.assertTrue(True)
