"""Doctests from a text file that ``load_tests`` reads while the tests are loaded."""

import doctest


def load_tests(loader, tests, pattern):
    tests.addTests(doctest.DocFileSuite("guide.txt"))
    return tests
