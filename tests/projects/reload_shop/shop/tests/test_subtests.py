import unittest

from shop.util import slug


class SlugTests(unittest.TestCase):
    def test_slugs(self):
        for text, expected in [("A b", "a-b"), ("C", "c"), ("D e f", "d-e-f")]:
            with self.subTest(text=text):
                self.assertEqual(slug(text), expected)
