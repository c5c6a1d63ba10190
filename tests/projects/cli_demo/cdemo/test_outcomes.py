import sys
import unittest


class Outcomes(unittest.TestCase):
    def test_pass(self):
        self.assertTrue(True)

    def test_fail(self):
        print("printed before failing")
        sys.stderr.write("warned before failing\n")
        self.assertEqual(1 + 1, 3)

    def test_error(self):
        raise KeyError("broken")

    @unittest.skip("not today")
    def test_skip(self):
        pass

    @unittest.expectedFailure
    def test_xfail(self):
        self.assertTrue(False)

    @unittest.expectedFailure
    def test_uxsuccess(self):
        pass

    def test_bytes(self):
        sys.stdout.flush()
        sys.stdout.buffer.write(b"bad \xb3 byte\n")
        sys.stdout.flush()
        self.fail("see the output")
