"""Shared set-up: tests live in one folder per layer; the helpers stay in ``tests/``.

``serverproc`` (a real server over pipes), ``subunit_reader`` (python-subunit as the reference
reader), ``conformance``, ``daemonproc``, ``terminal`` and ``inprocess`` are imported by
name from every folder.
"""

import sys
from pathlib import Path

TESTS = Path(__file__).parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
