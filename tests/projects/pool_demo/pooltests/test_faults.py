"""Tests that crash, hang or block when the server was started with POOL_FAULTS set: each
starts a class fixture group, so the tests after it are the rest of its unit."""

import os
import sys
import time
import unittest

FAULTS = os.environ.get("POOL_FAULTS", "")


class Crash(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        pass

    def test_a_crash(self):
        if "crash" in FAULTS:
            os._exit(3)

    def test_b_after(self):
        pass

    def test_c_after(self):
        pass


class Hang(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        pass

    def test_a_hang(self):
        if "hang" in FAULTS:
            time.sleep(600)

    def test_b_after(self):
        pass


class Block(unittest.TestCase):
    def test_block_1(self):
        if "block" in FAULTS:
            time.sleep(600)

    def test_block_2(self):
        if "block" in FAULTS:
            time.sleep(600)


class Input(unittest.TestCase):
    def test_readline(self):
        line = sys.stdin.readline() if "stdin" in FAULTS else "\n"
        print(f"read {line!r}")
