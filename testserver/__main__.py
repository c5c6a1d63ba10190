"""``python -m testserver``: see :mod:`testserver.cli`."""

import sys

from testserver.cli import main

if __name__ == "__main__":
    sys.exit(main())
