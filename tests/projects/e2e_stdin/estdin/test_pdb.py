import unittest


class Debugged(unittest.TestCase):
    def test_breakpoint(self):
        secret = 6 * 7
        breakpoint()
        self.assertEqual(secret, 42)

    def test_input_blocks(self):
        answer = input("say something: ")
        print(f"you said {answer!r}")
