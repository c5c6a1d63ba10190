"""The client side's synthetic failing test: "this test failed because ...".

When a client must report a problem inside a subunit stream (the warm daemon cannot serve a
request, the daemon went away mid-run), it writes a test that starts, carries ``reason`` as
its ``traceback`` attachment and fails, so every subunit consumer shows it. The server's
engine has its own (``PacketResult.report_failure``). No I/O here.
"""

from __future__ import annotations

from testserver.wire.packets import encode_status, file_packets

TEXT_MIME = "text/plain;charset=utf8"
"""The MIME type of a synthetic failure's reason."""


def failing_test(test_id: str, reason: str, *, subunit_version: str = "2.1") -> list[bytes]:
    """The packets of test ``test_id`` failing with ``reason`` (inprogress, traceback, fail)."""
    return [
        encode_status(test_id, "inprogress", subunit_version=subunit_version),
        *file_packets(
            "traceback",
            reason.encode("utf-8", "backslashreplace"),
            test_id=test_id,
            mime_type=TEXT_MIME,
            subunit_version=subunit_version,
        ),
        encode_status(test_id, "fail", subunit_version=subunit_version),
    ]
