import unittest


class Ok(unittest.TestCase):
    def test_one(self):
        self.assertEqual(1, 1)

    def test_two(self):
        self.assertEqual(2, 2)

    def test_three(self):
        print("noise from a passing test")

    @unittest.skip("later")
    def test_later(self):
        pass
