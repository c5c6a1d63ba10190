import unittest

EVENTS = []


def setUpModule():
    EVENTS.append("setUpModule")


class WithClassFixture(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        EVENTS.append("setUpClass")

    def test_saw_fixtures(self):
        self.assertEqual(EVENTS[:2], ["setUpModule", "setUpClass"])


class BrokenClassFixture(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        raise ValueError("class fixture broke")

    def test_never_runs(self):
        pass
