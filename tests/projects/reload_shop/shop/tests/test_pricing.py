import shop.pricing
from shop.pricing import total
from shop.testing import ShopTestCase


class PricingTests(ShopTestCase):
    def test_total_through_module(self):
        self.assertPrice(shop.pricing.total(10), 12.5)

    def test_total_through_name(self):
        self.assertPrice(total(10, 2), 25.0)

    def test_tax_rate(self):
        self.assertEqual(shop.pricing.TAX_RATE, 0.25)

    def test_currency(self):
        self.assertEqual(self.currency, "EUR")
