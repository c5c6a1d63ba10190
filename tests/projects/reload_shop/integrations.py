"""Registers a class with an installed library (identity escapes the project).

Top level on purpose: reloading the whole `shop` package does not re-run it."""

import extlib


@extlib.handler
class PriceHandler:
    code = "price"
