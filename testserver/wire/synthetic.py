"""The client side's synthetic failing test: "this test failed because ...".

When a client must report a problem inside a subunit stream (the warm daemon cannot serve a
request, the daemon went away mid-run, a requested test got no result), it writes a test that
starts, carries ``reason`` as an attachment and fails, so every subunit consumer shows it.
The server's engine has its own (``PacketResult.report_failure``). No I/O here.
"""

from __future__ import annotations

from testserver.wire.packets import TEXT_MIME, encode_status, file_packets


def failing_test(
    test_id: str, reason: str, *, attachment: str = "traceback", subunit_version: str = "2.1"
) -> list[bytes]:
    """The packets of test ``test_id`` failing with ``reason`` (inprogress, the ``attachment``
    named ``traceback`` or ``reason``, fail)."""
    return [
        encode_status(test_id, "inprogress", subunit_version=subunit_version),
        *file_packets(
            attachment,
            reason.encode("utf-8", "backslashreplace"),
            test_id=test_id,
            mime_type=TEXT_MIME,
            subunit_version=subunit_version,
        ),
        encode_status(test_id, "fail", subunit_version=subunit_version),
    ]


def not_run_test(test_id: str, status: object, *, subunit_version: str = "2.1") -> list[bytes]:
    """The packets of ``test_id``, requested but given no result by a batch that completed
    with ``status``, failing with a ``reason`` that says so (``--format subunit`` and the
    library's StreamResult feed write one per ``not_run`` id)."""
    why = "the run was cancelled" if status == "cancelled" else f"the batch ended ({status})"
    reason = (
        f"testserver: {test_id} was requested but did not run: {why} before it reported a "
        "result (a test may have replaced unittest's runner, or a fixture failed)."
    )
    return failing_test(test_id, reason, attachment="reason", subunit_version=subunit_version)
