"""Tests that end their process or leave processes and threads behind."""

import ctypes
import os
import subprocess
import sys
import threading
import time
import unittest

from hostile import _children


class EndsItsProcess(unittest.TestCase):
    def test_a_os_exit(self):
        print("before os._exit")
        os._exit(3)

    def test_b_segfault(self):
        ctypes.string_at(0)

    def test_c_after_deaths(self):
        pass


class LeavesProcesses(unittest.TestCase):
    def test_a_fork_never_exits(self):
        _children.fork_forever()

    def test_b_fork_new_session_never_exits(self):
        _children.fork_forever(new_session=True)

    def test_c_subprocess_new_session_never_exits(self):
        child = subprocess.Popen(_children.never_ending_command(), start_new_session=True)
        _children.record(child.pid)

    def test_d_child_talks_after_the_test(self):
        _children.fork_forever(chatter=True)

    def test_e_thread_prints_after_the_test(self):
        def chatter():
            for _ in range(20):
                print("thread still talking", flush=True)
                time.sleep(0.005)

        threading.Thread(target=chatter, daemon=True).start()

    def test_f_after_children(self):
        sys.stdout.write("last test\n")
