"""Two tests that pass only when they run at the same time, in two processes."""

import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WAIT = 60.0


def meet(me, other):
    """Say ``me`` arrived, then wait for ``other``: True if it came within ``WAIT`` seconds."""
    with open(os.path.join(HERE, f"arrived-{me}"), "w"):
        pass
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(HERE, f"arrived-{other}")):
            return True
        time.sleep(0.01)
    return False
