"""Shared set-up: tests live in one folder per layer; the helpers stay in ``tests/``.

``serverproc`` (a real server over pipes, ``PROJECTS`` and ``copy_project`` for the sample
projects), ``processes`` (what a test left running, and a wait for its exit),
``subunit_reader`` (python-subunit as the reference reader), ``conformance``, ``daemonproc``,
``terminal`` and ``inprocess`` are imported by name from every folder.

``start_server`` is the fixture for real ``--serve`` processes (killed after the test).
Tests marked ``heavy`` (many seconds each) are collected first, so that under
``pytest -n auto --dist loadfile --no-loadscope-reorder`` (``make test``) their files are
handed out first and no worker is left with one long test at the end.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from serverproc import ServerProcess  # noqa: E402  (found through the path set above)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Heavy tests first (a stable sort: the rest keep their order)."""
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    """``start_server(project, *args, env=None)``: a ``ServerProcess`` killed after the test."""
    started: list[ServerProcess] = []

    def start(project: str | Path, *args: str, env: dict | None = None) -> ServerProcess:
        started.append(ServerProcess(project, *args, env=env))
        return started[-1]

    yield start
    for server in started:
        server.kill()
