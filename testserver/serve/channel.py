"""The private protocol channel: packets and commands on fds no test can reach.

At startup the server duplicates the real stdin, stdout and stderr into the private range
(:mod:`testserver.engine.fds`, close-on-exec), then points fd 0 at ``/dev/null`` and fds 1 and 2 at
capture files. From then on a stray ``print``, a C extension or a child process writes into
the capture (and becomes an attachment), never into the stream; and a worker closes the
private descriptors before it runs a test.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from testserver.engine.capture import OutputCapture, capture_file
from testserver.engine.fds import SuiteFds, is_open, make_private


@dataclass
class PrivateChannel:
    """The server's private fds and the capture that now owns fds 1 and 2."""

    commands_fd: int
    """A duplicate of the real stdin: command frames arrive here."""
    packets_fd: int
    """A duplicate of the real stdout: only subunit packets are written here."""
    log_fd: int
    """A duplicate of the real stderr: diagnostics for humans."""
    capture: OutputCapture
    suite_fds: SuiteFds = field(default_factory=SuiteFds)
    """The descriptors that belong to the tests (inherited, or opened by their imports)."""

    def restore_stdio(self) -> None:
        """Put the real stdin, stdout and stderr back on fds 0, 1 and 2 (before an exec)."""
        self.capture.uninstall()
        os.dup2(self.commands_fd, 0)
        os.dup2(self.packets_fd, 1)
        os.dup2(self.log_fd, 2)

    def log(self, message: str) -> None:
        """Write one diagnostic line to the real stderr (never fails)."""
        try:
            os.write(self.log_fd, f"testserver: {message}\n".encode("utf-8", "backslashreplace"))
        except OSError:
            pass


def open_private_channel() -> PrivateChannel:
    """Take fds 0, 1 and 2 for the protocol and install output capture on 1 and 2."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    suite_fds = SuiteFds.at_startup()
    commands_fd = make_private(os.dup(0) if is_open(0) else os.open(os.devnull, os.O_RDONLY))
    packets_fd = make_private(os.dup(1))
    log_fd = make_private(os.dup(2) if is_open(2) else os.open(os.devnull, os.O_WRONLY))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    capture = OutputCapture(capture_file(), capture_file())
    capture.install()
    return PrivateChannel(commands_fd, packets_fd, log_fd, capture, suite_fds)
