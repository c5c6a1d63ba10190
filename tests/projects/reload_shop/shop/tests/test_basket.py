from shop.testing import ShopTestCase


class BasketTests(ShopTestCase):
    def test_empty(self):
        self.assertEqual(self.basket, [])

    def test_currency(self):
        self.assertEqual(self.currency, "EUR")

    def test_subclasses_registered_once(self):
        self.assertEqual(sorted(ShopTestCase.subclasses), ["BasketTests", "PricingTests"])
