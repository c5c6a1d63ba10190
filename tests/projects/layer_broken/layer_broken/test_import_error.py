"""A module that fails to import."""

import unittest

import layer_broken_no_such_module  # noqa: F401


class NeverLoaded(unittest.TestCase):
    def test_x(self):
        pass
