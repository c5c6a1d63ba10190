"""Drive a real ``python -m testserver --serve`` over pipes and print what it says.

Run it with ``make demo`` (or ``python examples/demo.py`` with testserver installed). It starts
the server on the example project in ``examples/calc`` and then, as a client would:

1. waits for the ``testserver.hello`` control event and prints its summary;
2. sends ``list-tests`` and prints the test ids;
3. sends ``run-tests`` with a few ids, then ``run-tests`` with none (every test), printing one
   line per result: status, test id, the parent id of a subtest, and attachment names;
   the captured stdout of the test that prints is shown in full;
4. sends ``quit`` and waits for the server to exit.

It exits 0 only if everything behaved: the hello arrived, every command completed with status
``ok``, the server listed the same tests as plain ``unittest`` discovery, every test ran once
per batch, nothing failed, the skip, expected failure and subtests showed up, and the server
exited 0.

The client side is the sans-I/O pattern of ``testserver.wire``: commands are frozen dataclasses
turned into bytes by ``encode_command``; output bytes go into a ``PacketDecoder`` that hands
back ``Packet`` events; this file owns the I/O loop (``selectors`` on pipes, so POSIX only,
like the server's forked workers).
"""

from __future__ import annotations

import argparse
import os
import selectors
import subprocess
import sys
import tempfile
import time
import unittest
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from testserver.wire.commands import Command, ListTests, Quit, RunTests
from testserver.wire.control import COMPLETE, HELLO, decode_control
from testserver.wire.errors import PacketError
from testserver.wire.events import Packet
from testserver.wire.framing import encode_command
from testserver.wire.packets import PacketDecoder
from testserver.wire.sentinels import END_OF_INPUT, NEED_DATA

PROJECT = Path(__file__).resolve().parent / "calc"
"""The example project the server runs; its tests live in calc/tests."""

START_DIR = "calc/tests"
TOP_DIR = "."

REPLY_TIMEOUT = 60.0
"""Seconds to wait for any one reply: generous for a 2-core CI machine, finite so CI never hangs."""

READ_SIZE = 65_536
"""Bytes per read from the server's stdout."""

CAPTURED_OUTPUT = ("stdout", "stderr")
"""Attachment names whose content the transcript prints in full (the captured output)."""

PRINTING_TEST = "calc.tests.test_parsing.TestEvaluate.test_explain_prints_each_step"
"""The example test that prints to stdout; its captured output must come back as a detail."""


class DemoError(Exception):
    """The server did not behave: no reply in time, exited early, or sent bad bytes."""


@dataclass
class Batch:
    """What the server sent for one command, up to and including its completion."""

    completion: dict
    finals: list[Packet] = field(default_factory=list)
    """Packets with a final status (success, skip, fail, ...), in arrival order."""
    exists: list[str] = field(default_factory=list)
    """Test ids of ``exists`` packets (the answer to ``list-tests``)."""
    attachments: dict[str, dict[str, bytearray]] = field(default_factory=dict)
    """test id -> attachment name -> content (chunks joined)."""


class Client:
    """A testserver client over a subprocess's pipes: send commands, collect replies."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.decoder = PacketDecoder()
        self.selector = selectors.DefaultSelector()
        self.selector.register(process.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        self.next_id = 0

    def send(self, command: Command) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(encode_command(command))
            self.process.stdin.flush()
        except BrokenPipeError:
            raise DemoError(f"the server stopped reading commands before {command.name}") from None

    def packets(self) -> Iterator[Packet]:
        """Yield packets as they arrive; raise :class:`DemoError` on silence or bad bytes."""
        while True:
            try:
                event = self.decoder.next_event()
            except PacketError as error:
                raise DemoError(f"the server wrote bytes that are not subunit: {error}") from None
            if event is END_OF_INPUT:
                raise DemoError("the server closed its stdout before replying")
            if event is NEED_DATA:
                self.decoder.receive_data(self._read())
                continue
            yield event  # type: ignore[misc]

    def _read(self) -> bytes:
        if not self.selector.select(REPLY_TIMEOUT):
            raise DemoError(f"no output from the server for {REPLY_TIMEOUT:.0f} s")
        return os.read(self.process.stdout.fileno(), READ_SIZE)  # type: ignore[union-attr]

    def wait_for_hello(self) -> dict:
        for packet in self.packets():
            control = decode_control(packet)
            if control and control[0] == HELLO:
                return control[1]
            print(f"  (before hello: {describe(packet)})")
        raise AssertionError("unreachable")

    def command(self, make: type[Command], *args: object, show: bool = False) -> Batch:
        """Send one command; collect everything up to its ``testserver.complete``."""
        self.next_id += 1
        command_id = str(self.next_id)
        command = make(command_id, *args)  # type: ignore[call-arg]
        header = encode_command(command).split(b"\n", 1)[0].decode("ascii")
        print(f"\n>>> {header}")
        for test_id in getattr(command, "test_ids", ()):
            print(f"... {test_id}")
        self.send(command)
        batch = Batch(completion={})
        for packet in self.packets():
            control = decode_control(packet)
            if control is not None:
                name, body = control
                if name == COMPLETE and body.get("id") == command_id:
                    batch.completion = body
                    print(f"<<< complete {command_id}: {summarize(body)}")
                    return batch
                print(f"  (control event {name}: {summarize(body)})")
            else:
                collect(batch, packet, show=show)
        raise AssertionError("unreachable")


def collect(batch: Batch, packet: Packet, *, show: bool) -> None:
    """Record ``packet`` in ``batch``; with ``show``, print each ``exists`` and final status."""
    if packet.test_id is None:
        print(f"  (global {describe(packet)})")
        return
    if packet.file_name is not None:
        files = batch.attachments.setdefault(packet.test_id, {})
        files.setdefault(packet.file_name, bytearray()).extend(packet.file_bytes)
    if packet.status == "exists":
        batch.exists.append(packet.test_id)
        if show:
            print(f"  {packet.status:<9} {packet.test_id}")
    elif packet.is_final:
        batch.finals.append(packet)
        if show:
            print(result_line(packet, batch.attachments.get(packet.test_id, {})))


def result_line(packet: Packet, files: dict[str, bytearray]) -> str:
    """One transcript line: status, test id, parent id (subtests), attachment names."""
    line = f"  {packet.status:<9} {packet.test_id}"
    if packet.parent_test_id:
        line += f"  (subtest of {packet.parent_test_id})"
    if files:
        line += f"  [attachments: {', '.join(files)}]"
    return line


def describe(packet: Packet) -> str:
    """A packet the demo does not expect, in a few words."""
    parts = [f"{k}={v!r}" for k, v in (("status", packet.status), ("file", packet.file_name)) if v]
    return "packet " + " ".join(parts)


def tally(packets: Iterable[Packet]) -> str:
    """``"19 (success 17, skip 1, xfail 1)"``: how many, and how many of each status."""
    statuses = [str(packet.status) for packet in packets]
    counts = ", ".join(f"{status} {statuses.count(status)}" for status in sorted(set(statuses)))
    return f"{len(statuses)} ({counts})"


def summarize(body: dict) -> str:
    """A control event's JSON body on one line: lists become counts, zero counts are left out."""

    def short(value: object) -> str:
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k}: {v}" for k, v in value.items() if v != 0) + "}"
        if isinstance(value, (list, tuple)):
            return f"<{len(value)} items>" if value else "[]"
        return str(value)

    return ", ".join(f"{key}={short(value)}" for key, value in body.items())


def expected_test_ids() -> list[str]:
    """The oracle: what plain ``unittest`` discovery finds in the example project."""
    sys.path.insert(0, str(PROJECT))
    try:
        suite = unittest.defaultTestLoader.discover(
            str(PROJECT / START_DIR), top_level_dir=str(PROJECT / TOP_DIR)
        )
    finally:
        sys.path.remove(str(PROJECT))
    ids: list[str] = []
    stack: list[unittest.TestSuite | unittest.TestCase] = [suite]
    while stack:
        item = stack.pop()
        if isinstance(item, unittest.TestSuite):
            stack.extend(reversed(list(item)))
        else:
            ids.append(item.id())
    return ids


class Checks:
    """Collects the expectations the demo verifies; the exit status is whether all held."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.count = 0

    def expect(self, ok: bool, what: str) -> None:
        self.count += 1
        if not ok:
            self.failures.append(what)
            print(f"  !! expected: {what}")

    def completed_ok(self, batch: Batch, what: str) -> None:
        self.expect(batch.completion.get("status") == "ok", f"{what} completes with status ok")

    def ran_each_once(self, batch: Batch, test_ids: list[str], what: str) -> None:
        top_level = [p.test_id for p in batch.finals if not p.parent_test_id]
        self.expect(
            sorted(top_level) == sorted(test_ids),
            f"{what} reports one final status for each of the {len(test_ids)} tests "
            f"(got {len(top_level)})",
        )


def show_attachments(batch: Batch, *, output: bool) -> None:
    """Print every attachment of a test that failed, and with ``output`` captured output."""
    failed = {p.test_id for p in batch.finals if p.status in ("fail", "uxsuccess")}
    for test_id, files in batch.attachments.items():
        for name, content in files.items():
            if content and ((output and name in CAPTURED_OUTPUT) or test_id in failed):
                print(f"\n  {name} of {test_id}:")
                for line in content.decode("utf-8", "replace").splitlines():
                    print(f"  | {line}")


def run_demo(client: Client, checks: Checks) -> None:
    print("waiting for the server's hello ...")
    hello = client.wait_for_hello()
    print(f"<<< hello: {summarize(hello)}")

    listing = client.command(ListTests, show=True)
    checks.completed_ok(listing, "list-tests")
    expected = expected_test_ids()
    checks.expect(
        sorted(listing.exists) == sorted(expected),
        f"list-tests lists the {len(expected)} tests unittest discovers "
        f"(got {len(listing.exists)})",
    )

    few = [t for t in listing.exists if t.endswith(("test_add", "test_examples"))]
    few.append(PRINTING_TEST)
    some = client.command(RunTests, tuple(few), show=True)
    checks.completed_ok(some, "run-tests with a few ids")
    checks.ran_each_once(some, few, "run-tests with a few ids")
    show_attachments(some, output=True)
    printed = some.attachments.get(PRINTING_TEST, {})
    checks.expect(
        any(b"result: 14" in printed.get(name, b"") for name in CAPTURED_OUTPUT),
        "the printing test's stdout comes back as an attachment",
    )

    everything = client.command(RunTests, (), show=True)
    checks.completed_ok(everything, "run-tests with no ids (all tests)")
    checks.ran_each_once(everything, expected, "run-tests with no ids")
    show_attachments(everything, output=False)
    statuses = [p.status for p in everything.finals]
    print(f"\n  tests:    {tally(p for p in everything.finals if not p.parent_test_id)}")
    print(f"  subtests: {tally(p for p in everything.finals if p.parent_test_id)}")
    checks.expect(not {"fail", "uxsuccess"} & set(statuses), "no test fails (the suite is green)")
    checks.expect("skip" in statuses, "the skipped test is reported as skip")
    checks.expect("xfail" in statuses, "the expected failure is reported as xfail")
    checks.expect(
        any(p.parent_test_id for p in everything.finals),
        "subtests are reported with a parent test id (subunit 2.1)",
    )

    done = client.command(Quit)
    checks.completed_ok(done, "quit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter for the server")
    args = parser.parse_args(argv)
    command = [args.python, "-m", "testserver", "--serve", "-t", TOP_DIR, "-s", START_DIR]
    print(f"$ cd {PROJECT}\n$ {' '.join(command)}")
    checks = Checks()
    with tempfile.TemporaryFile() as stderr:
        started = time.monotonic()
        process = subprocess.Popen(
            command, cwd=PROJECT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
        )
        try:
            run_demo(Client(process), checks)
            returncode = process.wait(timeout=REPLY_TIMEOUT)
            checks.expect(returncode == 0, f"the server exits 0 after quit (got {returncode})")
        except subprocess.TimeoutExpired:
            checks.expect(False, f"the server exits within {REPLY_TIMEOUT:.0f} s of quit")
        except DemoError as error:
            checks.expect(False, str(error))
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stdin.close()  # type: ignore[union-attr]
            process.stdout.close()  # type: ignore[union-attr]
        stderr.seek(0)
        server_stderr = stderr.read().decode("utf-8", "replace")
    elapsed = time.monotonic() - started
    if checks.failures:
        if server_stderr:
            print(f"\nserver stderr:\n{server_stderr}", end="")
        print(f"\ndemo FAILED: {len(checks.failures)} of {checks.count} checks did not hold:")
        for failure in checks.failures:
            print(f"  - {failure}")
        return 1
    print(f"\ndemo OK: {checks.count} checks held; the session took {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
