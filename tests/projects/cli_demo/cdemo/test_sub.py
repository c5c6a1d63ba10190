import unittest


class Sub(unittest.TestCase):
    def test_numbers(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertNotEqual(i, 1)


class Base:
    def test_inherited(self):
        pass


class Child(Base, unittest.TestCase):
    pass


class BrokenFixture(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        raise ValueError("class fixture broke")

    def test_never(self):
        pass
