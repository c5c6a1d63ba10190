"""A private warm-server daemon for a test, driven through its real commands.

:class:`DaemonHandle` gives a test its own ``TESTSERVER_DAEMON_DIR``, hence its own daemon, runs
the client (``python -m testserver.backends.testr``) and ``testserver daemon`` commands there, and
on
:meth:`~DaemonHandle.close` stops the daemon and checks that the daemon, its servers and their
workers are all gone. Used by ``tests/test_daemon.py`` and ``tests/test_testr_warm.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from processes import descendants, describe, gone

from testserver.backends import testr
from testserver.clients import project


class DaemonHandle:
    """One private daemon directory, hence one daemon, driven through real commands."""

    def __init__(self) -> None:
        self.runtime = Path(tempfile.mkdtemp(prefix="tsd-"))  # short: sun_path is 108 bytes
        self.env = {k: v for k, v in os.environ.items() if k != testr.NO_DAEMON_ENV}
        self.env[project.DAEMON_DIR_ENV] = str(self.runtime / "testserver")
        self.pids: set[int] = set()
        self.elsewhere = Path(tempfile.gettempdir())
        """A working directory for daemon commands (not the runtime directory: its
        ``testserver/`` subdirectory would shadow the package for ``python -m``)."""

    @property
    def directory(self) -> Path:
        return self.runtime / "testserver"

    def client(self, project: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
        """Run ``python -m testserver.backends.testr ARGS`` in ``project``."""
        return self.command(project, ["-m", "testserver.backends.testr", *args], **kwargs)

    def oneshot(self, project: Path, *args: str) -> subprocess.CompletedProcess:
        return self.command(project, ["-m", "testserver", *args])

    def command(self, cwd: Path, args: list[str], **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("env", self.env)
        kwargs.setdefault("timeout", 120)
        return subprocess.run(
            [sys.executable, *args], cwd=cwd, capture_output=True, check=False, **kwargs
        )

    def status(self) -> dict:
        result = self.command(self.elsewhere, ["-m", "testserver.backends.daemon", "status"])
        status = json.loads(result.stdout)
        if status["running"]:
            self.pids.add(status["pid"])
            self.pids.update(s["pid"] for s in status["servers"])
            self.pids.update(descendants(status["pid"]))
        return status

    def server_pids(self) -> list[int]:
        return sorted(server["pid"] for server in self.status()["servers"])

    def stop(self) -> None:
        result = self.command(self.elsewhere, ["-m", "testserver.backends.daemon", "stop"])
        assert result.returncode == 0, result.stderr

    def close(self) -> None:
        try:
            self.status()
            self.stop()
            left = {pid: describe(pid) for pid in self.pids if not gone(pid)}
            assert not left, f"processes left after stop: {left}"
            assert not (self.directory / testr.SOCKET_NAME).exists()
        finally:
            shutil.rmtree(self.runtime, ignore_errors=True)
