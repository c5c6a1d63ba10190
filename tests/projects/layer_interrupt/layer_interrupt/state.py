"""State shared between the sample tests and the test that runs them."""

STOP = False
EVENTS = []


def reset():
    global STOP
    STOP = False
    del EVENTS[:]
