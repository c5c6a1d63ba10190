"""Registers its classes in shop.registry at import time."""

from shop.registry import register


@register
class CsvExport:
    name = "csv"


@register
class JsonExport:
    name = "json"
