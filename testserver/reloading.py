"""Hot reload between batches (placeholder: the API the server calls; being implemented)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from testserver.loading import LoadSpec, TestIndex


@dataclass
class ReloadReport:
    """What one reload did, for the ``testserver.reload`` event."""

    index: TestIndex
    changed: list[str] = field(default_factory=list)
    reloaded: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    restart: str | None = None


class Reloader:
    """Watches the project and reloads changed modules at batch boundaries."""

    def __init__(self, spec: LoadSpec, roots: Sequence[str], *, poll: bool = False) -> None:
        self.spec = spec
        self.roots = list(roots)
        self.poll = poll

    def start(self, index: TestIndex) -> None:
        """Start watching; ``index`` is what was loaded at startup."""

    def apply(self, index: TestIndex, *, force: bool = False) -> ReloadReport | None:
        """Apply pending changes; ``None`` when nothing changed."""
        return None

    def close(self) -> None:
        """Stop watching."""
