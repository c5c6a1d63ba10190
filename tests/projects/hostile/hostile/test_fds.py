"""Tests that touch file descriptors they do not own, and odd output."""

import os
import sys
import unittest


class Descriptors(unittest.TestCase):
    def test_a_consecutive_fds(self):
        first = os.open(os.devnull, os.O_RDONLY)
        second = os.open(os.devnull, os.O_RDONLY)
        os.close(first)
        os.close(second)
        self.assertEqual(second, first + 1)

    def test_b_closerange_finds_free_fds(self):
        # As CPython's test_os.test_closerange: a freed fd and the nine after it are free.
        fd = os.open(os.devnull, os.O_RDONLY)
        os.close(fd)
        for offset in range(10):
            try:
                os.fstat(fd + offset)
            except OSError:
                continue
            self.fail(f"fd {fd + offset} is open: {os.readlink(f'/proc/self/fd/{fd + offset}')}")
        os.closerange(fd, fd + 9)

    def test_c_write_low_fds(self):
        for fd in range(3, 64):
            try:
                os.write(fd, b"\xb3 garbage from a test \x00\xff\n")
            except OSError:
                pass

    def test_d_write_every_open_fd(self):
        for name in os.listdir("/proc/self/fd"):
            try:
                os.write(int(name), b"\xb3\x29\x01garbage from a test\n")
            except OSError:
                pass

    def test_e_close_stdio(self):
        sys.stdout.flush()
        for fd in (0, 1, 2):
            os.close(fd)

    def test_f_print_after_close(self):
        print("visible after a close")

    def test_g_huge_output(self):
        chunk = b"x" * 65535 + b"\n"
        for _ in range(160):  # 10 MiB
            os.write(1, chunk)

    def test_h_non_utf8_output(self):
        os.write(1, b"\xff\xfe\x80 not utf-8\n")
        os.write(2, b"\xc3\x28 bad stderr\n")

    def test_i_reads_stdin(self):
        self.assertEqual(sys.stdin.read(), "")

    def test_j_isatty_tells_the_truth(self):
        self.assertEqual(sys.stdin.isatty(), os.isatty(0))
