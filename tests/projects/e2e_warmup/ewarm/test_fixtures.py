"""Fixtures that log every run to $EWARM_LOG: a batch's worker must run them, nothing else."""

import os
import unittest


def _log(what: str) -> None:
    with open(os.environ["EWARM_LOG"], "a") as handle:
        handle.write(what + "\n")


def setUpModule():  # noqa: N802 - unittest's name
    _log("setUpModule")


def tearDownModule():  # noqa: N802 - unittest's name
    _log("tearDownModule")


class Fixtures(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        _log("setUpClass")

    def test_one(self):
        print("only this")
        _log("test_one")

    def test_two(self):
        _log("test_two")
