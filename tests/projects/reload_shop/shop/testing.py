"""The base class several test modules share."""

import unittest


class ShopTestCase(unittest.TestCase):
    currency = "EUR"
    subclasses = []

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        ShopTestCase.subclasses.append(cls.__name__)

    def setUp(self):
        self.basket = []

    def assertPrice(self, value, expected):
        self.assertAlmostEqual(value, expected)
