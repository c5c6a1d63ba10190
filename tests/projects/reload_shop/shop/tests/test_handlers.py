import unittest

import extlib
import integrations  # noqa: F401  (registers its handler with extlib)


class HandlerTests(unittest.TestCase):
    def test_one_handler(self):
        self.assertEqual([h.code for h in extlib.HANDLERS], ["price"])

    def test_library_version(self):
        self.assertEqual(extlib.VERSION, 1)
