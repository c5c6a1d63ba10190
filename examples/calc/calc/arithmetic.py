"""Exact arithmetic on integers and fractions."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction

Number = int | Fraction

MAX_EXPONENT = 1000
"""Larger powers take noticeable time and memory; a calculator has no use for them."""


class CalcError(ValueError):
    """An expression that cannot be computed (division by zero, bad syntax, ...)."""


def normalize(value: Number) -> Number:
    """Return ``value`` as an ``int`` when it is a whole number."""
    if isinstance(value, Fraction) and value.denominator == 1:
        return value.numerator
    return value


def add(left: Number, right: Number) -> Number:
    return normalize(left + right)


def subtract(left: Number, right: Number) -> Number:
    return normalize(left - right)


def multiply(left: Number, right: Number) -> Number:
    return normalize(left * right)


def divide(left: Number, right: Number) -> Number:
    """Divide exactly: ``divide(1, 3)`` is ``Fraction(1, 3)``, never ``0.333...``."""
    if right == 0:
        raise CalcError("division by zero")
    return normalize(Fraction(left) / Fraction(right))


def power(base: Number, exponent: Number) -> Number:
    """Raise ``base`` to a whole ``exponent`` (negative exponents give fractions)."""
    if not isinstance(normalize(exponent), int):
        raise CalcError(f"exponent {exponent} is not a whole number")
    if abs(exponent) > MAX_EXPONENT:
        raise CalcError(f"exponent {exponent} is too large (limit {MAX_EXPONENT})")
    if base == 0 and exponent < 0:
        raise CalcError("division by zero")
    return normalize(Fraction(base) ** int(exponent))


def mean(values: Iterable[Number]) -> Number:
    """The arithmetic mean of ``values``, exactly."""
    items = list(values)
    if not items:
        raise CalcError("mean of no values")
    return divide(sum(items), len(items))


OPERATORS = {"+": add, "-": subtract, "*": multiply, "/": divide, "^": power}
"""Binary operator symbol -> function."""
