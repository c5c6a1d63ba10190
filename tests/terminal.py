"""Run a command with a pseudo-terminal (``pty.openpty``) as its stdout, and read it all."""

from __future__ import annotations

import os
import pty
import subprocess

TIMEOUT = 120


def run_at_terminal(
    argv: list[str],
    *,
    cwd: os.PathLike | str,
    env: dict[str, str] | None = None,
    stdin_tty: bool = False,
    stderr_tty: bool = False,
) -> tuple[int, bytes]:
    """Run ``argv`` with stdout (and optionally stdin and stderr) on a new pseudo-terminal;
    return its exit status and every byte it wrote there (CRLF as the terminal makes it)."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        stdin=slave if stdin_tty else subprocess.DEVNULL,
        stdout=slave,
        stderr=slave if stderr_tty else subprocess.DEVNULL,
        env=env,
    )
    os.close(slave)
    shown = read_terminal(master)
    return process.wait(TIMEOUT), shown


def read_terminal(master: int) -> bytes:
    """Everything written to the terminal whose master side is ``master``, until every
    holder of the other side has closed it; closes ``master``."""
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every holder of the terminal's other side has closed it
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return b"".join(chunks)
