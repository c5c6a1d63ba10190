import unittest


class Sub(unittest.TestCase):
    def test_mixed(self):
        for i in range(4):
            with self.subTest(i=i):
                if i == 1:
                    self.fail("i is one")
                if i == 2:
                    self.skipTest("skip two")

    def test_all_pass(self):
        for i in range(3):
            with self.subTest(i=i):
                pass
