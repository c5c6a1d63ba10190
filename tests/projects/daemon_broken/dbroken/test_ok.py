import unittest


class TestOk(unittest.TestCase):
    def test_ok(self):
        pass
