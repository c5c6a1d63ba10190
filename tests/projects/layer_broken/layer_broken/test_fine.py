"""A module that loads fine next to broken ones."""

import unittest


class Fine(unittest.TestCase):
    def test_fine(self):
        pass
