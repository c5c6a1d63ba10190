"""Text helpers, imported by the package itself (``from shop.util import slug``)."""


def slug(text):
    return text.lower().replace(" ", "-")
