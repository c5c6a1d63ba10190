"""Helpers for the test layer's in-process tests (capture, execution, results).

:func:`project` loads a sample project under ``tests/projects`` once per session;
:func:`in_child` runs a function in a forked child, so that what it does to fds 1 and 2,
signal handlers or module state stays out of the pytest process, and returns its result.
"""

from __future__ import annotations

import os
import pickle
import traceback
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
from serverproc import PROJECTS

from testserver.engine.loading import LoadSpec, TestIndex, load


@cache
def project(name: str) -> TestIndex:
    """The tests of ``tests/projects/NAME``, loaded with it as start and top-level directory."""
    root = str(PROJECTS / name)
    return load(LoadSpec(start=root, top=root))


def in_child(func: Callable[[], Any]) -> Any:
    """Run ``func`` in a forked child and return its (pickled) result.

    An exception in the child fails the calling test with the child's traceback.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_fd)
            try:
                payload = pickle.dumps(("ok", func()))
            except BaseException:
                payload = pickle.dumps(("error", traceback.format_exc()))
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(payload)
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    kind, value = pickle.loads(data)
    if kind == "error":
        pytest.fail(f"the child failed:\n{value}")
    return value
