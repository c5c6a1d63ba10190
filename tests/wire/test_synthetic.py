"""The client side's synthetic failing test, read back with python-subunit's own parser."""

from __future__ import annotations

from subunit_reader import read_with_subunit

from testserver.wire.synthetic import TEXT_MIME, failing_test, not_run_test


def test_a_synthetic_failure_starts_carries_its_reason_and_fails():
    events = read_with_subunit(b"".join(failing_test("testserver.backends.daemon", "gone: é")))
    assert [e["test_status"] for e in events] == ["inprogress", None, "fail"]
    assert {e["test_id"] for e in events} == {"testserver.backends.daemon"}
    attachment = events[1]
    assert attachment["file_name"] == "traceback" and attachment["mime_type"] == TEXT_MIME
    assert attachment["file_bytes"] == "gone: é".encode() and attachment["eof"]


def test_a_test_that_did_not_run_fails_with_a_reason_naming_it_and_the_batch_status():
    cancelled = read_with_subunit(b"".join(not_run_test("pkg.T.test_x", "cancelled")))
    assert [e["test_status"] for e in cancelled] == ["inprogress", None, "fail"]
    reason = cancelled[1]
    assert reason["file_name"] == "reason" and reason["mime_type"] == TEXT_MIME
    assert reason["file_bytes"].startswith(b"testserver: pkg.T.test_x was requested but did not")
    assert b"the run was cancelled" in reason["file_bytes"]
    ended = read_with_subunit(b"".join(not_run_test("pkg.T.test_x", "incomplete")))
    assert b"the batch ended (incomplete)" in ended[1]["file_bytes"]
