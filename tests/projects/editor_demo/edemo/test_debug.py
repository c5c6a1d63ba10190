import unittest


class Debug(unittest.TestCase):
    def test_breakpoint(self):
        secret = 6 * 7
        breakpoint()
        self.assertEqual(secret, 42)

    def test_input(self):
        answer = input("name? ")
        self.assertEqual(answer, "ok")
