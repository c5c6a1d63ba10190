import unittest

import no_such_module_anywhere  # noqa: F401


class Never(unittest.TestCase):
    def test_never(self):
        pass
