"""Class and module fixtures, working and failing."""

import unittest

EVENTS = []


def setUpModule():
    EVENTS.append("setUpModule")


def tearDownModule():
    EVENTS.append("tearDownModule")


class WithClassFixture(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        EVENTS.append("setUpClass")
        cls.shared = "ready"

    @classmethod
    def tearDownClass(cls):
        EVENTS.append("tearDownClass")

    def test_one(self):
        self.assertEqual(self.shared, "ready")

    def test_two(self):
        self.assertEqual(self.shared, "ready")


class BrokenSetUpClass(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        raise RuntimeError("setUpClass is broken")

    def test_never_runs_a(self):
        pass

    def test_never_runs_b(self):
        pass


class SkippingSetUpClass(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        raise unittest.SkipTest("no backend here")

    def test_never_runs(self):
        pass


class BrokenTearDownClass(unittest.TestCase):
    @classmethod
    def tearDownClass(cls):
        raise RuntimeError("tearDownClass is broken")

    def test_runs(self):
        pass
