"""calc: a tiny calculator, here as a realistic unittest project for testserver to run.

``evaluate("1 + 2 * 3")`` parses and evaluates an expression exactly, with
:class:`fractions.Fraction` arithmetic; :mod:`calc.arithmetic` holds the operations.
"""

from calc.arithmetic import CalcError
from calc.parsing import evaluate, explain, tokenize

__all__ = ["CalcError", "evaluate", "explain", "tokenize"]
