"""Tests that interrupt, exit or ask the run to stop."""

import sys
import unittest

from layer_interrupt import state


class Interrupts(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        state.EVENTS.append("setUpClass")

    @classmethod
    def tearDownClass(cls):
        state.EVENTS.append("tearDownClass")

    def test_1_before(self):
        state.EVENTS.append("before")

    def test_2_interrupt(self):
        state.EVENTS.append("interrupt")
        print("output before the interrupt")
        raise KeyboardInterrupt

    def test_3_exit(self):
        state.EVENTS.append("exit")
        sys.exit("leaving")

    def test_4_after(self):
        state.EVENTS.append("after")

    def test_5_request_stop(self):
        state.EVENTS.append("request_stop")
        state.STOP = True

    def test_6_subtests_then_interrupt(self):
        with self.subTest(i=0):
            pass
        raise KeyboardInterrupt


class ExitInSetUpClass(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        sys.exit("setUpClass exits")

    def test_a(self):
        pass

    def test_b(self):
        pass


class InterruptInSetUpClass(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        raise KeyboardInterrupt

    def test_a(self):
        pass


class Other(unittest.TestCase):
    def test_other(self):
        state.EVENTS.append("other")
