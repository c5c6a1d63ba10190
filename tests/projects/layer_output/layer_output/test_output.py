"""Output through print, sys.stderr, os.write, a child process and libc."""

import ctypes
import ctypes.util
import os
import subprocess
import sys
import unittest


def libc():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


class Output(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        print("class fixture output")

    @classmethod
    def tearDownClass(cls):
        print("class teardown output")

    def test_print(self):
        print("printed to stdout")

    def test_stderr(self):
        sys.stderr.write("written to stderr\n")

    def test_os_write(self):
        os.write(1, b"raw fd 1\n")
        os.write(2, b"raw fd 2\n")

    def test_subprocess(self):
        subprocess.run(["echo", "from a child process"], check=True)

    def test_libc(self):
        lib = libc()
        if lib is None:
            self.skipTest("no libc to call")
        lib.printf(b"from C printf\n")
        lib.fflush(None)

    def test_silent(self):
        pass

    def test_fail_with_output(self):
        print("output before failing")
        self.fail("failed after printing")

    def test_non_utf8(self):
        os.write(1, b"\xff\xfe not utf-8\n")
        print("caf\u00e9")
