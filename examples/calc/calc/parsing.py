"""Tokenize, parse and evaluate arithmetic expressions such as ``2 * (3 + 4) ^ 2``.

Grammar (``^`` binds tightest and is right-associative; unary minus binds looser than ``^``)::

    expr   := term (("+" | "-") term)*
    term   := unary (("*" | "/") unary)*
    unary  := "-" unary | power
    power  := atom ("^" unary)?
    atom   := NUMBER | "(" expr ")"
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from calc.arithmetic import OPERATORS, CalcError, Number, normalize

TOKEN_PATTERN = re.compile(r"\s*(?:(?P<number>\d+(?:\.\d+)?)|(?P<op>[-+*/^()]))")


@dataclass(frozen=True)
class Token:
    kind: str  # "number" or "op"
    text: str
    position: int


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens; raise :class:`CalcError` naming the first bad character."""
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        if text[position:].isspace():
            break
        match = TOKEN_PATTERN.match(text, position)
        if match is None:
            bad = position + len(text[position:]) - len(text[position:].lstrip())
            raise CalcError(f"unexpected character {text[bad]!r} at position {bad}")
        kind = match.lastgroup or "op"
        tokens.append(Token(kind, match.group(kind), match.start(kind)))
        position = match.end()
    return tokens


class _Parser:
    """A recursive-descent evaluator over a token list (one instance per expression)."""

    def __init__(self, tokens: list[Token], steps: list[str] | None) -> None:
        self.tokens = tokens
        self.index = 0
        self.steps = steps

    def peek(self) -> str | None:
        if self.index < len(self.tokens):
            return self.tokens[self.index].text
        return None

    def take(self) -> Token:
        if self.index >= len(self.tokens):
            raise CalcError("unexpected end of expression")
        token = self.tokens[self.index]
        self.index += 1
        return token

    def apply(self, op: str, left: Number, right: Number) -> Number:
        result = OPERATORS[op](left, right)
        if self.steps is not None:
            self.steps.append(f"{left} {op} {right} = {result}")
        return result

    def expr(self) -> Number:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take().text
            value = self.apply(op, value, self.term())
        return value

    def term(self) -> Number:
        value = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take().text
            value = self.apply(op, value, self.unary())
        return value

    def unary(self) -> Number:
        if self.peek() == "-":
            self.take()
            return -self.unary()
        return self.power()

    def power(self) -> Number:
        base = self.atom()
        if self.peek() == "^":
            self.take()
            return self.apply("^", base, self.unary())
        return base

    def atom(self) -> Number:
        token = self.take()
        if token.kind == "number":
            return normalize(Fraction(token.text))
        if token.text == "(":
            value = self.expr()
            closing = self.take()
            if closing.text != ")":
                raise CalcError(f"expected ')' at position {closing.position}")
            return value
        raise CalcError(f"unexpected {token.text!r} at position {token.position}")


def _run(text: str, steps: list[str] | None) -> Number:
    parser = _Parser(tokenize(text), steps)
    value = parser.expr()
    if parser.index != len(parser.tokens):
        extra = parser.tokens[parser.index]
        raise CalcError(f"unexpected {extra.text!r} at position {extra.position}")
    return value


def evaluate(text: str) -> Number:
    """Evaluate ``text`` exactly: ``evaluate("1/3 + 1/6")`` is ``Fraction(1, 2)``."""
    return _run(text, None)


def explain(text: str) -> Number:
    """Evaluate ``text``, printing each step to stdout; return the result."""
    steps: list[str] = []
    value = _run(text, steps)
    print(f"explain {text!r}:")
    for number, step in enumerate(steps, 1):
        print(f"  {number}. {step}")
    print(f"  result: {value}")
    return value
