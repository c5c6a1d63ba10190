import unittest

import no_such_module_for_testserver  # noqa: F401


class TestNever(unittest.TestCase):
    def test_never(self):
        pass
