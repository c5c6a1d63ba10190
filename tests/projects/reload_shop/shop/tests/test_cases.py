"""One test per ``cases/*.txt`` file, made while this module is imported (data, not code)."""

import glob
import os
import unittest

from shop.limits import LIMITS

CASES = os.path.join(os.path.dirname(__file__), "cases")


class CaseTests(unittest.TestCase):
    pass


def _make(path):
    def test(self):
        with open(path) as handle:
            text = handle.read().strip()
        self.assertLessEqual(len(text), LIMITS["max_length"])

    return test


for _path in sorted(glob.glob(os.path.join(CASES, "*.txt"))):
    _name = os.path.splitext(os.path.basename(_path))[0]
    setattr(CaseTests, f"test_{_name}", _make(_path))
