"""A tiny shop: the project the reload differential tests edit."""

from shop.util import slug

VERSION = "1.0"

__all__ = ["VERSION", "slug"]
