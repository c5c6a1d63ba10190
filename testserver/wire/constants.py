"""Values more than one layer needs, each written once.

No I/O here: these are numbers and names the drivers share (how much to read from a pipe at
once, the exit status of a usage error) and a name unittest gives its loader's failures.
"""

READ_SIZE = 1 << 16
"""Bytes a driver asks for in one read of a pipe or socket (server, worker, clients)."""

EXIT_USAGE = 2
"""Exit status of a command given bad arguments (argparse's own)."""

FAILED_TEST_PREFIX = "unittest.loader._FailedTest."
"""Ids unittest's loader gives a module or name it could not import or find."""
