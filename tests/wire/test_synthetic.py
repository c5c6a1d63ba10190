"""The client side's synthetic failing test, read back with python-subunit's own parser."""

from __future__ import annotations

from subunit_reader import read_with_subunit

from testserver.wire.synthetic import TEXT_MIME, failing_test


def test_a_synthetic_failure_starts_carries_its_reason_and_fails():
    events = read_with_subunit(b"".join(failing_test("testserver.backends.daemon", "gone: é")))
    assert [e["test_status"] for e in events] == ["inprogress", None, "fail"]
    assert {e["test_id"] for e in events} == {"testserver.backends.daemon"}
    attachment = events[1]
    assert attachment["file_name"] == "traceback" and attachment["mime_type"] == TEXT_MIME
    assert attachment["file_bytes"] == "gone: é".encode() and attachment["eof"]
