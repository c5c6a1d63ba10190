import unittest


class Beta(unittest.TestCase):
    def test_pass_3(self):
        self.assertTrue(True)

    def test_pass_4(self):
        self.assertFalse(False)

    def test_error(self):
        raise KeyError("beta broke")

    @unittest.expectedFailure
    def test_xfail(self):
        self.assertEqual(1, 0)

    @unittest.expectedFailure
    def test_uxsuccess(self):
        pass
