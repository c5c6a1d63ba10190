"""One test per unittest outcome."""

import sys
import unittest


class Outcomes(unittest.TestCase):
    def test_pass(self):
        pass

    def test_fail(self):
        self.assertEqual(1, 2, "one is not two")

    def test_error(self):
        raise ValueError("an error on purpose")

    def test_skip(self):
        self.skipTest("skipped on purpose")

    @unittest.skip("decorated skip")
    def test_skip_decorated(self):
        raise AssertionError("never runs")

    @unittest.expectedFailure
    def test_xfail(self):
        self.fail("expected to fail")

    @unittest.expectedFailure
    def test_uxsuccess(self):
        pass

    def test_system_exit(self):
        sys.exit(3)


@unittest.skip("whole class skipped")
class SkippedClass(unittest.TestCase):
    def test_in_skipped_class(self):
        raise AssertionError("never runs")
