"""The CLI's memory of the last run, per project: which tests failed, for ``--lf``/``--ff``.

Kept in ``<project>/.testserver/lastfailed.json`` (:mod:`testserver.clients.project`): a JSON object
``{"version": 1, "failed": [ids]}``. After a run, the tests that passed, were skipped or
were expected to fail leave the set and the tests that failed (or were requested and not
run) join it, as pytest's cache does; tests that did not run keep their state. Writes go
through a temporary file and a rename, so a concurrent reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

from testserver.clients import project

FILE_NAME = "lastfailed.json"
VERSION = 1
"""Version of the file's layout; a file of another version is ignored."""


class LastRun:
    """The failed ids of a project's last runs."""

    def __init__(self, root: str) -> None:
        self.directory = project.state_dir(root)
        self.path = os.path.join(self.directory, FILE_NAME)

    def failed(self) -> list[str]:
        """The ids that failed last time they ran (empty when nothing is recorded)."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return []
        if not isinstance(data, dict) or data.get("version") != VERSION:
            return []
        return [i for i in data.get("failed", []) if isinstance(i, str)]

    def record(self, passed: Iterable[str], failed: Iterable[str]) -> None:
        """Update the set with one run's results (best effort: a read-only tree is fine)."""
        passed_set = set(passed)
        before = self.failed()
        current = [i for i in before if i not in passed_set]
        seen = set(current)
        current += [i for i in dict.fromkeys(failed) if i not in seen]
        if current == before and os.path.exists(self.path):
            return  # unchanged: a warm re-run should not pay for a write
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            project.ensure_gitignore(self.directory)
            temporary = f"{self.path}.{os.getpid()}.tmp"
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump({"version": VERSION, "failed": current}, handle)
            os.replace(temporary, self.path)
        except OSError:
            pass


def failed_first(ids: Sequence[str], failed: Iterable[str]) -> list[str]:
    """``ids`` with the previously failed ones first, each group in load order."""
    failed_set = set(failed)
    return [i for i in ids if i in failed_set] + [i for i in ids if i not in failed_set]
