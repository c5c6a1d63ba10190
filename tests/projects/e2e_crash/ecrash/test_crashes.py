import ctypes
import os
import sys
import time
import unittest


class Crashes(unittest.TestCase):
    def test_before(self):
        pass

    def test_os_exit(self):
        print("about to exit")
        os._exit(3)

    def test_segfault(self):
        print("about to segfault")
        ctypes.string_at(0)

    def test_sys_exit(self):
        sys.exit(4)

    def test_keyboard_interrupt(self):
        raise KeyboardInterrupt

    def test_after(self):
        pass


class Slow(unittest.TestCase):
    def test_hang(self):
        time.sleep(60)

    def test_quick(self):
        pass
