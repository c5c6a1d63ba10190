import unittest

from .helpers import double


class HelpersTest(unittest.TestCase):
    def test_double(self):
        self.assertEqual(double(2), 4)
