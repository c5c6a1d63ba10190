"""Turn unittest outcomes into subunit 2.1 packets: :class:`PacketResult`.

:class:`PacketResult` is a :class:`unittest.TestResult` that writes bytes. Per test:

- ``startTest``: any output captured *between* tests is written as global ``stdout`` /
  ``stderr`` file packets (no test id), then an ``inprogress`` packet with a timestamp.
- ``add*`` calls only record the outcome.
- ``stopTest``: one ``write()`` with the finished subtests, the test's captured output
  (``stdout``, ``stderr``), the outcome's attachments (``traceback``, ``reason`` or
  testtools details) and last the final status. Attachments come before the status
  because subunit readers close a test on its final status.

unittest's *error* and *failure* are both ``fail`` on the wire (subunit has no error
status); every ``fail`` carries at least one non-empty attachment. Subtests (2.1) are
tests of their own: id ``"<parent id> (i=3)"``, ``parent_test_id`` = the parent's id,
``runnable=False``. The parent always gets a final status: ``fail`` when a subtest failed,
otherwise what unittest reported, or ``success`` when it reported nothing (a skipped
subtest). Errors reported outside a test (``setUpClass (pkg.mod.Class)``: unittest's
``_ErrorHolder``) are written at once as a complete non-runnable test.

The outcome lists of :class:`unittest.TestResult` (``failures``, ``errors``, ``skipped``,
...) and ``testsRun`` are kept as unittest keeps them, so counts can be compared with
``python -m unittest``. testtools' ``details`` are duck-typed (:mod:`.details`).
"""

from __future__ import annotations

import sys
import time
import unittest
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from testserver.engine.capture import OutputCapture
from testserver.engine.details import (
    Attachment,
    detail_text,
    details_attachments,
    details_text,
)
from testserver.wire.errors import LocalProtocolError
from testserver.wire.packets import SUBUNIT_VERSIONS, TEXT_MIME, encode_status, file_packets

__all__ = ["TEXT_MIME", "TRACEBACK_MIME", "PacketResult"]

TRACEBACK_MIME = "text/x-traceback; charset=utf8"
"""MIME type of tracebacks, as python-subunit writes them."""

NO_DETAILS = b"the test failed without giving a traceback or details"
"""Attached to a fail that has nothing else: subunit2csv and others crash on a bare fail."""

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]

_SubTest = unittest.case._SubTest  # type: ignore[attr-defined]
_ErrorHolder = unittest.suite._ErrorHolder  # type: ignore[attr-defined]


class _OpenTest:
    """What :class:`PacketResult` knows about a test between startTest and stopTest."""

    __slots__ = ("attachments", "failed_subtests", "mark", "status", "subtests", "test", "test_id")

    def __init__(self, test: unittest.TestCase, test_id: str, now: int) -> None:
        self.test = test
        self.test_id = test_id
        self.status: str | None = None  # the outcome so far; "fail" sticks
        self.attachments: list[Attachment] | None = None
        self.subtests: list[bytes] | None = None  # packets of finished subtests
        self.failed_subtests: list[str] | None = None
        self.mark = now  # end of the last subtest: where the next one starts


class PacketResult(unittest.TestResult):
    """A :class:`unittest.TestResult` that reports as subunit 2.1 packets through ``write``.

    ``write`` receives bytes, mostly once per event group (``inprogress`` at startTest,
    everything else at stopTest). ``capture`` (optional) supplies the test's stdout and
    stderr. ``clock`` gives timestamps in nanoseconds since the epoch. ``route_code`` is put
    on every packet. ``subunit_version="2.0"`` drops the parent id field, nothing else.
    ``stop_check``, when set (by :func:`testserver.engine.running.run_tests`), is polled after
    each reported test; when it returns true ``shouldStop`` is set.
    """

    def __init__(
        self,
        write: Callable[[bytes], object],
        *,
        capture: OutputCapture | None = None,
        subunit_version: str = "2.1",
        clock: Callable[[], int] = time.time_ns,
        route_code: str | None = None,
    ) -> None:
        super().__init__()
        if subunit_version not in SUBUNIT_VERSIONS:
            raise ValueError(
                f"unknown subunit_version {subunit_version!r}; expected one of {SUBUNIT_VERSIONS}"
            )
        self._write = write
        self.capture = capture
        self.subunit_version = subunit_version
        self.route_code = route_code
        self._clock = clock
        self._open: _OpenTest | None = None
        self._stack: list[_OpenTest] = []  # outer tests when a test runs tests itself
        self.stop_check: Callable[[], bool] | None = None
        self._pieces: set[str] = set()  # streams flushed without eof (see flush_output)
        self.reported_failures = 0
        """Synthetic failures written by :meth:`report_failure` (which unittest's lists miss)."""

    @property  # type: ignore[override]
    def buffer(self) -> bool:
        """Always False: unittest's ``-b`` buffering swaps sys.stdout for a StringIO, which
        fd-level capture makes pointless (and the swap would hide output from it)."""
        return False

    @buffer.setter
    def buffer(self, value: bool) -> None:
        pass  # TestResult.__init__ and runners set it; output is captured by OutputCapture

    @property
    def current_test_id(self) -> str | None:
        """Id of the test between startTest and stopTest, else None."""
        return None if self._open is None else self._open.test_id

    @property
    def current_test(self) -> unittest.TestCase | None:
        """The test between startTest and stopTest, else None."""
        return None if self._open is None else self._open.test

    # ------------------------------------------------------------------ encoding helpers

    def _status(
        self,
        test_id: str,
        status: str,
        now: int | None,
        parent: str | None = None,
        runnable: bool = True,
    ) -> bytes:
        try:
            return encode_status(
                test_id,
                status,
                now,
                route_code=self.route_code,
                parent_test_id=parent,
                runnable=runnable,
                subunit_version=self.subunit_version,
            )
        except LocalProtocolError:  # an id the wire cannot carry (NUL, lone surrogate)
            return encode_status(
                _wire_safe(test_id),
                status,
                now,
                route_code=self.route_code,
                parent_test_id=None if parent is None else _wire_safe(parent),
                runnable=runnable,
                subunit_version=self.subunit_version,
            )

    def _files(
        self,
        parts: list[bytes],
        test_id: str | None,
        attachments: Iterable[Attachment],
        parent: str | None = None,
    ) -> None:
        for name, mime, data in attachments:
            try:
                packets = file_packets(
                    name,
                    data,
                    test_id=test_id,
                    mime_type=mime,
                    route_code=self.route_code,
                    parent_test_id=parent,
                    subunit_version=self.subunit_version,
                )
            except LocalProtocolError:  # see _status
                packets = file_packets(
                    _wire_safe(name),
                    data,
                    test_id=None if test_id is None else _wire_safe(test_id),
                    mime_type=_wire_safe(mime),
                    route_code=self.route_code,
                    parent_test_id=None if parent is None else _wire_safe(parent),
                    subunit_version=self.subunit_version,
                )
            parts += packets

    def _finish(
        self,
        parts: list[bytes],
        test_id: str,
        status: str,
        attachments: Iterable[Attachment],
        parent: str | None = None,
        runnable: bool = True,
        now: int | None = None,
    ) -> bytes:
        """Append attachments and the final status to ``parts``; return them joined."""
        attachments = _unique_names(attachments)
        if status == "fail" and not any(data for _, _, data in attachments):
            attachments.append(("traceback", TRACEBACK_MIME, NO_DETAILS))
        self._files(parts, test_id, attachments, parent)
        if now is None:
            now = self._clock()
        parts.append(self._status(test_id, status, now, parent, runnable))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def take_output(self) -> tuple[bytes, bytes]:
        """``(stdout, stderr)`` captured since the last take; empty without a capture."""
        if self.capture is None:
            return b"", b""
        return self.capture.take()

    # ------------------------------------------------------------------ test lifecycle

    def startTest(self, test: unittest.TestCase) -> None:
        self.testsRun += 1
        pending = b""
        if self._open is not None:
            self._stack.append(self._open)
        elif self.capture is not None:
            self.capture.repair()
            pending = self._global_output()
        test_id = test.id()
        now = self._clock()
        self._open = _OpenTest(test, test_id, now)
        packet = self._status(test_id, "inprogress", now)
        self._write(pending + packet if pending else packet)

    def stopTest(self, test: unittest.TestCase) -> None:
        current = self._open
        if current is None or test is not current.test:
            return
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, Exception):
            # KeyboardInterrupt & co. are unwinding through TestCase.run: no outcome yet.
            # The test stays open; run_tests() reports it with report_failure().
            return
        self._close_open()
        status = current.status
        if current.subtests is None and current.attachments is None:
            out, err = self.take_output()
            if not out and not err and not self._pieces and status != "fail":  # the common case
                self._write(self._status(current.test_id, status or "success", self._clock()))
                self._check_stop()
                return
            self._write(self._close_bytes(current, out, err))
        else:
            self._write(self._close_bytes(current, *self.take_output()))
        self._check_stop()

    def _close_open(self) -> None:
        self._open = self._stack.pop() if self._stack else None

    def _close_bytes(self, current: _OpenTest, out: bytes, err: bytes) -> bytes:
        parts = current.subtests or []
        attachments = self._output(out, err)
        if current.attachments:
            attachments += current.attachments
        status = current.status
        if current.failed_subtests:
            status = "fail"
            attachments.append(("traceback", TRACEBACK_MIME, _subtest_summary(current)))
        elif status is None:
            status = "success"
        return self._finish(parts, current.test_id, status, attachments)

    def _check_stop(self) -> None:
        check = self.stop_check
        if check is not None and not self.shouldStop and check():
            self.shouldStop = True

    def _global_output(self) -> bytes:
        """Packets for output captured outside any test (fixtures, imports): no test id."""
        out, err = self.take_output()
        if not out and not err and not self._pieces:
            return b""
        parts: list[bytes] = []
        self._files(parts, None, self._output(out, err))
        return b"".join(parts)

    def flush_output(self) -> bytes:
        """Packets for the output captured so far, as pieces without ``eof``.

        For a test about to wait for input: what it wrote (a prompt) must reach the client
        now. The rest of the output, and the ``eof``, follow when the test ends.
        """
        out, err = self.take_output()
        test_id = self.current_test_id
        parts: list[bytes] = []
        for name, data in (("stdout", out), ("stderr", err)):
            if data:
                self._pieces.add(name)
                parts += file_packets(
                    name,
                    data,
                    test_id=test_id,
                    mime_type=TEXT_MIME,
                    eof=False,
                    route_code=self.route_code,
                    subunit_version=self.subunit_version,
                )
        return b"".join(parts)

    def _output(self, out: bytes, err: bytes) -> list[Attachment]:
        """Output attachments, ending (with an empty last piece) any flushed stream."""
        attachments = _output_attachments(out, err)
        for name in sorted(self._pieces - {name for name, _, _ in attachments}):
            attachments.append((name, TEXT_MIME, b""))
        self._pieces.clear()
        return attachments

    def report_output(self) -> None:
        """Write output captured since the last test as global ``stdout``/``stderr`` packets.

        Called by :meth:`stopTestRun` and at the end of ``run_tests``; output of
        ``tearDownClass`` / ``tearDownModule`` ends up here.
        """
        if self.capture is not None and self._open is None:
            data = self._global_output()
            if data:
                self._write(data)

    def stopTestRun(self) -> None:
        self.report_output()

    # ------------------------------------------------------------------ outcomes

    def _record(self, test: Any, status: str, attachments: list[Attachment] | None) -> None:
        """Attach an outcome to the open test, a subtest, or report a stray test at once."""
        current = self._open
        if current is not None and test is current.test:
            if current.status != "fail":
                current.status = status
            if attachments:
                if current.attachments is None:
                    current.attachments = list(attachments)
                else:
                    current.attachments += attachments
        elif isinstance(test, _SubTest):
            self._subtest(test.test_case, test, status, attachments)
        else:
            self._report_alone(test, status, attachments or [])

    def _report_alone(self, test: Any, status: str, attachments: list[Attachment]) -> None:
        """A complete test for an outcome without startTest (``setUpClass (pkg.mod.C)``)."""
        test_id = test.id()
        runnable = not isinstance(test, _ErrorHolder)
        now = self._clock()
        parts = [self._status(test_id, "inprogress", now, runnable=runnable)]
        output: list[Attachment] = []
        if self._open is None:  # fixture output belongs to the fixture's error
            output = self._output(*self.take_output())
        self._write(self._finish(parts, test_id, status, output + attachments, None, runnable))
        self._check_stop()

    def _subtest(
        self,
        parent: Any,
        subtest: Any,
        status: str,
        attachments: list[Attachment] | None,
    ) -> None:
        """Report a finished subtest as its own non-runnable test with a parent id.

        Subtests of the open test are kept and written just before the parent's own
        packets at stopTest; a subtest starts where the previous one (or the parent) ended.
        """
        sub_id = subtest.id()
        now = self._clock()
        current = self._open
        if current is None or parent is not current.test:
            parent_id = parent.id()
            parts = [self._status(sub_id, "inprogress", now, parent_id, runnable=False)]
            self._write(self._finish(parts, sub_id, status, attachments or (), parent_id, False))
            return
        parent_id = current.test_id
        parts = [self._status(sub_id, "inprogress", current.mark, parent_id, runnable=False)]
        data = self._finish(parts, sub_id, status, attachments or (), parent_id, False, now)
        current.mark = now
        if current.subtests is None:
            current.subtests = []
        current.subtests.append(data)
        if status == "fail":
            if current.failed_subtests is None:
                current.failed_subtests = []
            current.failed_subtests.append(sub_id)

    def addSuccess(self, test: unittest.TestCase, details: Mapping[str, Any] | None = None) -> None:
        current = self._open
        if not details and current is not None and test is current.test:
            if current.status is None:
                current.status = "success"
            return
        self._record(test, "success", details_attachments(details))

    def addError(
        self,
        test: unittest.TestCase,
        err: ExcInfo | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self._add_fail(test, err, details, self.errors)

    def addFailure(
        self,
        test: unittest.TestCase,
        err: ExcInfo | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self._add_fail(test, err, details, self.failures)

    def _add_fail(
        self,
        test: Any,
        err: ExcInfo | None,
        details: Mapping[str, Any] | None,
        bucket: list[tuple[unittest.TestCase, str]],
    ) -> None:
        text, attachments = self._traceback(test, err, details)
        bucket.append((test, text))
        self._record(test, "fail", attachments)
        if self.failfast:
            self.stop()

    def _traceback(
        self, test: Any, err: ExcInfo | None, details: Mapping[str, Any] | None
    ) -> tuple[str, list[Attachment]]:
        """The text unittest would keep and the attachments for an exception or details."""
        if details:
            attachments = details_attachments(details)
            return details_text(attachments), attachments
        if err is None:
            return NO_DETAILS.decode(), [("traceback", TRACEBACK_MIME, NO_DETAILS)]
        text = self._exc_info_to_string(err, test)
        return text, [("traceback", TRACEBACK_MIME, _encode(text))]

    def addSkip(
        self,
        test: unittest.TestCase,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        if details:
            attachments = details_attachments(details)
            if reason is None:
                reason = detail_text(attachments, "reason")
        else:
            attachments = [("reason", TEXT_MIME, _encode(reason))] if reason else []
        self.skipped.append((test, reason or ""))
        self._record(test, "skip", attachments)

    def addExpectedFailure(
        self,
        test: unittest.TestCase,
        err: ExcInfo | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        text, attachments = self._traceback(test, err, details)
        self.expectedFailures.append((test, text))
        self._record(test, "xfail", attachments)

    def addUnexpectedSuccess(
        self, test: unittest.TestCase, details: Mapping[str, Any] | None = None
    ) -> None:
        self.unexpectedSuccesses.append(test)
        self._record(test, "uxsuccess", details_attachments(details))
        if self.failfast:
            self.stop()

    def addSubTest(
        self, test: unittest.TestCase, subtest: unittest.TestCase, err: ExcInfo | None
    ) -> None:
        if err is None:
            self._subtest(test, subtest, "success", None)
            return
        text = self._exc_info_to_string(err, test)
        failure = getattr(test, "failureException", None)
        is_failure = isinstance(failure, type) and issubclass(err[0], failure)
        (self.failures if is_failure else self.errors).append((subtest, text))
        self._subtest(test, subtest, "fail", [("traceback", TRACEBACK_MIME, _encode(text))])
        if self.failfast:
            self.stop()

    def addDuration(self, test: unittest.TestCase, elapsed: float) -> None:
        """Python 3.12+: durations are in the timestamps already."""

    def tags(self, new_tags: object, gone_tags: object) -> None:
        """testtools: tags have no place in our stream; accepted and ignored."""

    def time(self, a_datetime: object) -> None:
        """testtools: we take timestamps from our own clock; accepted and ignored."""

    # ------------------------------------------------------------------ process layer

    def report_missing(self, test_id: str, message: str | None = None) -> None:
        """Report an id that is not in the index: inprogress, a ``reason``, then fail."""
        if message is None:
            message = (
                f"testserver: no test with id {test_id!r} was found. List the tests "
                "(list-tests, or --list) to see the available ids."
            )
        self.report_failure(test_id, message or "unknown test id", attachment="reason")

    def report_failure(
        self,
        test_id: str,
        message: str,
        *,
        stdout: bytes = b"",
        stderr: bytes = b"",
        attachment: str = "traceback",
        inprogress: bool = True,
    ) -> None:
        """The one builder of a synthetic failed test: "this test failed because ...".

        For a test that crashed its worker, was cancelled, was not run, or names no test.
        Writes ``stdout`` / ``stderr`` attachments (when non-empty), ``message`` as a
        ``traceback`` (or, with ``attachment="reason"``, a plain-text ``reason``), then
        ``fail``. If ``test_id`` is the open test (its ``inprogress`` is out), it is closed
        with its finished subtests and recorded attachments; otherwise an ``inprogress``
        comes first, unless ``inprogress`` is false (the worker that started it wrote it).
        """
        self.reported_failures += 1
        current = self._open
        attachments = self._output(stdout, stderr)
        parts: list[bytes] = []
        if current is not None and current.test_id == test_id:
            self._close_open()
            parts = current.subtests or []
            attachments += current.attachments or ()
        elif inprogress:
            parts = [self._status(test_id, "inprogress", self._clock())]
        mime = TEXT_MIME if attachment == "reason" else TRACEBACK_MIME
        attachments.append((attachment, mime, _encode(message) or NO_DETAILS))
        self._write(self._finish(parts, test_id, "fail", attachments))


# ---------------------------------------------------------------------- helpers


def _encode(text: str | None) -> bytes:
    """UTF-8 that never fails (lone surrogates from odd file names are escaped)."""
    return text.encode("utf-8", "backslashreplace") if text else b""


def _wire_safe(text: str) -> str:
    """``text`` with what subunit strings cannot hold escaped: NUL and lone surrogates."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\0", "\\x00")


def output_packets(
    stdout: bytes, stderr: bytes, *, test_id: str | None = None, subunit_version: str = "2.1"
) -> list[bytes]:
    """Packets carrying captured output as ``stdout``/``stderr`` attachments (if non-empty).

    With no ``test_id`` they are global: output written outside any test.
    """
    parts: list[bytes] = []
    for name, mime, data in _output_attachments(stdout, stderr):
        parts += file_packets(
            name, data, test_id=test_id, mime_type=mime, subunit_version=subunit_version
        )
    return parts


def _output_attachments(out: bytes, err: bytes) -> list[Attachment]:
    attachments = []
    if out:
        attachments.append(("stdout", TEXT_MIME, out))
    if err:
        attachments.append(("stderr", TEXT_MIME, err))
    return attachments


def _unique_names(attachments: Iterable[Attachment]) -> list[Attachment]:
    """Rename repeated file names ``name-1``, ``name-2``: readers join same-named files."""
    result: list[Attachment] = []
    seen: set[str] = set()
    for name, mime, data in attachments:
        if name in seen:
            number = 1
            while f"{name}-{number}" in seen:
                number += 1
            name = f"{name}-{number}"
        seen.add(name)
        result.append((name, mime, data))
    return result


def _subtest_summary(current: _OpenTest) -> bytes:
    failed = current.failed_subtests or []
    lines = [f"{len(failed)} subtest(s) of {current.test_id} failed:"]
    lines += [f"  {sub_id}" for sub_id in failed]
    lines.append("Each failed subtest is reported with its own traceback.")
    return _encode("\n".join(lines) + "\n")
