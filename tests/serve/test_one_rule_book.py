"""Each protocol rule in one place: the serve layer carries out the session, it has no rules.

``spec/architecture.md`` §4 sends a reader to ``wire/serversession.py`` for the queue,
completions, cancel and ``quitting``, and to ``wire/batchtracking.py`` for a batch's
accounting. This test reads the source of every module of ``testserver/serve`` and fails
when one of them builds a completion body, follows a batch itself, or spells a rule's
message, naming the module and what it uses.
"""

from __future__ import annotations

import ast
from pathlib import Path

import testserver

SERVE = Path(testserver.__file__).parent / "serve"

RULE_NAMES = {
    "completion_body": "completion bodies are built by ServerSession",
    "frame_error_body": "frame-error completions are built by ServerSession",
    "BatchTracker": "a batch is followed by the session's tracker",
    "BatchResult": "a batch's completion fields come from the session",
    "incomplete_message": "the status rule is BatchTracker.result's",
    "CANCEL_GRACE_SECONDS": "the cancel grace period is the session's deadline",
}
"""Names only the session core may use -> why."""

RULE_WORDS = ("quitting", "not-running", "nothing was running", "not-supported")
"""Error codes and messages of session rules, which no serve module should spell."""


def uses(path: Path) -> list[str]:
    """What ``path`` uses of :data:`RULE_NAMES` and :data:`RULE_WORDS`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Name | ast.alias | ast.Attribute):
            name = getattr(node, "id", None) or getattr(node, "attr", None) or node.name
            if name in RULE_NAMES:
                found.append(f"{name} ({RULE_NAMES[name]})")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [f"{word!r}" for word in RULE_WORDS if word in node.value]
    return found


def test_the_serve_layer_keeps_no_copy_of_the_session_rules() -> None:
    wrong = [f"serve/{p.name}: {use}" for p in sorted(SERVE.glob("*.py")) for use in uses(p)]
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_a_rule_where_there_is_one(tmp_path: Path) -> None:
    copy = tmp_path / "copy.py"
    copy.write_text(
        "from testserver.wire.control import completion_body\nrefusal = {'code': 'quitting'}\n"
    )
    assert uses(copy) == [
        "completion_body (completion bodies are built by ServerSession)",
        "'quitting'",
    ]
