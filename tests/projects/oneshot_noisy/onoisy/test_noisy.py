"""Output in every awkward place: at import time, in fixtures, as raw bytes, huge."""

import os
import subprocess
import sys
import unittest

BIG = 5 * 1024 * 1024 + 123  # more than one subunit packet can carry (4 MiB)

print("printed while importing")
sys.stderr.write("stderr while importing\n")


def tearDownModule():
    print("printed by tearDownModule")


class Noisy(unittest.TestCase):
    def test_signature_byte(self):
        os.write(1, b"\xb3\x29\x01\x0c looks like a packet\n")

    def test_big_output(self):
        sys.stdout.write("x" * BIG)

    def test_no_newline(self):
        print("no newline at the end", end="")

    def test_child_stderr(self):
        code = "import sys; sys.stderr.write('child err\\n')"
        subprocess.run([sys.executable, "-c", code], check=True)

    def test_fails_after_output(self):
        print("before the failure")
        self.fail("after output")
