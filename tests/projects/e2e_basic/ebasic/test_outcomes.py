import os
import subprocess
import sys
import unittest


class Outcomes(unittest.TestCase):
    def test_pass(self):
        self.assertTrue(True)

    def test_fail(self):
        self.assertEqual(1, 2)

    def test_error(self):
        raise RuntimeError("boom")

    @unittest.skip("not today")
    def test_skip(self):
        pass

    @unittest.expectedFailure
    def test_xfail(self):
        self.assertEqual(1, 2)

    @unittest.expectedFailure
    def test_uxsuccess(self):
        pass


class Output(unittest.TestCase):
    def test_print(self):
        print("hello from print")
        sys.stderr.write("hello from stderr\n")

    def test_fd_write(self):
        os.write(1, b"hello from fd 1\n")
        os.write(2, b"hello from fd 2\n")

    def test_child_process(self):
        subprocess.run([sys.executable, "-c", "print('hello from a child')"], check=True)

    def test_binary(self):
        os.write(1, b"\xb3\x29\x01\x0c not a packet \xff\n")
