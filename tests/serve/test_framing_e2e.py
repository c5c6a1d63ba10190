"""End-to-end: a real ``--serve`` process recovers from over-limit frame lengths (§3.5)."""

from __future__ import annotations

import pytest
from serverproc import subunit_events

from testserver.wire.commands import ListTests, RunTests
from testserver.wire.control import COMPLETE

PASSING = "ebasic.test_outcomes.Outcomes.test_pass"
LIMIT = 1024


@pytest.fixture
def server(start_server):
    return start_server("e2e_basic", "-t", ".", "-s", "ebasic", "--max-payload", str(LIMIT))


def completions(transcript) -> list[dict]:
    return transcript.controls(COMPLETE)


def test_a_huge_length_does_not_swallow_the_session(server):
    """Issue 10.5: the next well-formed frame after a wrong LENGTH is served."""
    assert server.hello["max_payload"] == LIMIT
    server.send_raw(b"run-tests big 99999999999999999999\n")
    bad = server.wait_complete("big")
    assert bad.complete["status"] == "error"
    assert bad.complete["code"] == "payload-too-large"
    assert bad.complete["command"] == "run-tests"
    assert f"limit of {LIMIT} bytes" in bad.complete["message"]
    transcript = server.request(RunTests("after", (PASSING,)))
    assert transcript.complete["status"] == "ok"
    assert transcript.statuses() == {PASSING: "success"}
    assert subunit_events(bad.raw + transcript.raw)


def test_a_too_large_payload_costs_one_error_and_runs_nothing(server):
    """A client that ignores max_payload: its payload lines are dropped, one error in all."""
    payload = b"".join(b"line %d of a big paste\n" % number for number in range(2000))
    assert len(payload) > LIMIT
    server.send_raw(b"stdin paste %d\n" % len(payload) + payload)
    server.send_raw(b"list-tests 2 0\n")
    transcript = server.wait_complete("2")
    assert [(c["id"], c["status"], c.get("code")) for c in completions(transcript)] == [
        ("paste", "error", "payload-too-large"),
        ("2", "ok", None),
    ]
    assert PASSING in {p.test_id for p in transcript.packets if p.status == "exists"}
    assert server.request(ListTests("3")).complete["status"] == "ok"
