"""Builds model objects: holds references to the model classes (``from m import C``)."""

from shop.models import Gadget, Widget

KINDS = {"widget": Widget, "gadget": Gadget}


def make(kind, name="x", price=1):
    return KINDS[kind](name, price)
