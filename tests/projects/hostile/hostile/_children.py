"""Helpers for tests that leave processes behind: each records its pid for the harness."""

import os
import sys
import time


def record(pid: int) -> None:
    """Note ``pid`` in ``$HOSTILE_PIDS`` (a directory), for the harness to check later."""
    directory = os.environ.get("HOSTILE_PIDS")
    if directory:
        with open(os.path.join(directory, str(pid)), "w") as handle:
            handle.write(str(pid))


def fork_forever(*, new_session: bool = False, chatter: bool = False) -> int:
    """Fork a child that never exits by itself (optionally in a session of its own)."""
    pid = os.fork()
    if pid == 0:
        try:
            if new_session:
                os.setsid()
            record(os.getpid())
            while True:
                if chatter:
                    os.write(1, b"child still talking\n")
                time.sleep(0.01 if chatter else 60)
        finally:
            os._exit(0)
    return pid


def never_ending_command() -> list[str]:
    return [sys.executable, "-c", "import time\nwhile True: time.sleep(60)"]
