"""Tests that each leave one kind of process-wide state behind (test_worker_reuse_e2e.py).

Every test prints the pid of the worker it runs in, so that the client can tell whether the
next batch ran in the same worker.
"""

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

KEPT_OPEN = []
"""Files a test leaves open on purpose."""


class State(unittest.TestCase):
    def setUp(self):
        print(os.getpid())

    def test_clean(self):
        pass

    def test_fail(self):
        self.fail("on purpose")

    def test_chdir(self):
        os.chdir(tempfile.gettempdir())

    def test_environ(self):
        os.environ["RSTATE_LEAK"] = "1"

    def test_sys_path(self):
        sys.path.append("/nonexistent/rstate")

    def test_thread(self):
        threading.Thread(target=threading.Event().wait, daemon=True).start()

    def test_child(self):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(child.pid)

    def test_fd(self):
        KEPT_OPEN.append(open(__file__, "rb"))  # noqa: SIM115 - left open on purpose

    def test_import(self):
        import colorsys  # noqa: F401 - imported by no test module at load time

    def test_signal_handler(self):
        signal.signal(signal.SIGUSR2, lambda number, frame: None)

    def test_umask(self):
        os.umask(0o077)

    def test_reads_stdin(self):
        print(sys.stdin.readline().strip())

    def test_waits(self):
        time.sleep(600)

    def test_alarm(self):
        signal.setitimer(signal.ITIMER_REAL, 600)
