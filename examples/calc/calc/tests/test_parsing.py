"""Tests of calc.parsing: setUpClass, subTest, an expected failure and printed output."""

import unittest
from fractions import Fraction

from calc import CalcError, evaluate, explain, tokenize

EXAMPLES = """
1 + 2          = 3
2 * 3 + 4      = 10
2 * (3 + 4)    = 14
2 ^ 3 ^ 2      = 512
-2 ^ 2         = -4
1/3 + 1/6      = 1/2
1.5 * 4        = 6
"""


class TestTokenize(unittest.TestCase):
    def test_numbers_and_operators(self):
        kinds = [(t.kind, t.text) for t in tokenize("12+3.5")]
        self.assertEqual(kinds, [("number", "12"), ("op", "+"), ("number", "3.5")])

    def test_whitespace_is_ignored(self):
        self.assertEqual(len(tokenize("  1 +\t2  ")), 3)

    def test_unknown_character_is_reported_with_its_position(self):
        with self.assertRaisesRegex(CalcError, r"'x' at position 4"):
            tokenize("1 + x")


class TestEvaluate(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # A class fixture: parse the example table once for every test in the class.
        cls.examples = []
        for line in EXAMPLES.strip().splitlines():
            expression, expected = line.split("=")
            cls.examples.append((expression.strip(), Fraction(expected.strip())))

    def test_examples_were_loaded(self):
        self.assertEqual(len(self.examples), 7)

    def test_examples(self):
        for expression, expected in self.examples:
            with self.subTest(expression=expression):
                self.assertEqual(evaluate(expression), expected)

    def test_syntax_errors(self):
        for expression in ["1 +", "(1 + 2", "1 2", ")"]:
            with self.subTest(expression=expression), self.assertRaises(CalcError):
                evaluate(expression)

    def test_explain_prints_each_step(self):
        self.assertEqual(explain("2 * (3 + 4)"), 14)

    @unittest.expectedFailure
    def test_implicit_multiplication(self):
        # "2(3 + 4)" should mean 2 * (3 + 4); the parser does not support it yet.
        self.assertEqual(evaluate("2(3 + 4)"), 14)
