"""Signals a test sends to its own process behave as under ``python -m unittest``."""

import os
import signal
import time
import unittest

IMPORT_PID = os.getpid()
"""The pid at import time: under testserver, the server's (the module is imported there)."""


def _wait_for_signal() -> None:
    for _ in range(2000):  # the handler runs between two bytecodes; give it the chance
        time.sleep(0.001)


class OwnSignals(unittest.TestCase):
    def test_a_sigint_caught(self):
        with self.assertRaises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            _wait_for_signal()

    def test_b_sigint_uncaught_is_an_error(self):
        os.kill(os.getpid(), signal.SIGINT)
        _wait_for_signal()

    def test_c_sigint_own_handler(self):
        seen = []
        previous = signal.signal(signal.SIGINT, lambda number, frame: seen.append(number))
        try:
            os.kill(os.getpid(), signal.SIGINT)
            _wait_for_signal()
        finally:
            signal.signal(signal.SIGINT, previous)
        self.assertEqual(seen, [signal.SIGINT])

    def test_d_sigint_default_handler_is_pythons(self):
        self.assertIs(signal.getsignal(signal.SIGINT), signal.default_int_handler)

    def test_e_unittest_install_handler(self):
        unittest.installHandler()
        try:
            os.kill(os.getpid(), signal.SIGINT)  # the first one stops registered results only
            _wait_for_signal()
        finally:
            unittest.removeHandler()

    def test_f_sigalrm_own_handler(self):
        class Alarm(Exception):
            pass

        def on_alarm(number, frame):
            raise Alarm

        previous = signal.signal(signal.SIGALRM, on_alarm)
        try:
            with self.assertRaises(Alarm):
                signal.setitimer(signal.ITIMER_REAL, 0.01)
                _wait_for_signal()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def test_g_sigterm_kills_the_process(self):
        os.kill(os.getpid(), signal.SIGTERM)
        _wait_for_signal()

    def test_g2_signal_to_the_import_time_pid(self):
        seen = []
        previous = signal.signal(signal.SIGUSR1, lambda number, frame: seen.append(number))
        try:
            os.kill(IMPORT_PID, signal.SIGUSR1)
            for _ in range(2000):
                if seen:
                    break
                time.sleep(0.001)
        finally:
            signal.signal(signal.SIGUSR1, previous)
        self.assertEqual(seen, [signal.SIGUSR1])

    def test_h_after_signals(self):
        pass
