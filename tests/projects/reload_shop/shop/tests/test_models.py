import unittest

from shop.factory import make
from shop.models import Item, Widget


class ModelTests(unittest.TestCase):
    def test_widget_is_item(self):
        self.assertIsInstance(make("widget"), Item)

    def test_widget_is_widget(self):
        self.assertIsInstance(make("widget"), Widget)

    def test_gadget_kind(self):
        self.assertEqual(make("gadget").kind, "gadget")
