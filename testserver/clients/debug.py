"""``testserver debug [LOADING OPTIONS] TEST_ID``: debug one test with pdb through the protocol.

The loading options are those of ``testserver run`` (``-t``, ``-s``, ``-p``,
``--isolation``, ``--timeout``), in the same place; other arguments still go to the server.

Starts a server, runs the test, and joins it to this terminal: the test's output appears as
it is flushed, and whenever the test waits for input (``testserver.stdin-wanted``, e.g. at a
``(Pdb)`` prompt) a line typed here is sent as a ``stdin`` frame. Ctrl-C cancels the test.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import BinaryIO, TextIO

from testserver.clients.client import Client, ClientError
from testserver.clients.console import add_server_arguments, server_arguments
from testserver.wire.clientsession import ControlReceived, StreamPacket
from testserver.wire.control import STDIN_WANTED
from testserver.wire.events import Packet

PASSING = frozenset({"success", "skip", "xfail"})
"""Final statuses after which ``debug`` exits 0."""


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``testserver debug``."""
    parser = argparse.ArgumentParser(
        prog="testserver debug",
        description="Run one test in a testserver with this terminal joined to its stdin and "
        "output, so that pdb (breakpoint()) works through the protocol. It takes the loading "
        "options of `testserver run`, e.g. testserver debug -t . -s tests pkg.T.test_x.",
    )
    add_server_arguments(parser)
    parser.add_argument("test_id", help="the id of the test to run")
    return parser


class DebugRelay:
    """Relays one test's packets to a terminal and the terminal's lines to the test."""

    def __init__(self, client: Client, terminal_in: TextIO, out: BinaryIO, err: BinaryIO) -> None:
        self.client = client
        self.terminal_in = terminal_in
        self.out = out
        self.err = err
        self.status: str | None = None
        self.details: list[tuple[str, bytes]] = []

    def run(self, test_id: str) -> dict:
        """Run ``test_id`` to completion; return the completion event."""
        run = self.client.run([test_id])
        while True:
            try:
                item = run.step()
            except KeyboardInterrupt:
                self.client.cancel()
                continue
            if item is None:
                return run.complete or {}
            received = item[1]
            if isinstance(received, ControlReceived) and received.name == STDIN_WANTED:
                self.answer()
            elif isinstance(received, StreamPacket):
                self.handle(received.packet, test_id)

    def handle(self, packet: Packet, test_id: str) -> None:
        """Show one test event or output packet."""
        if packet.file_name in ("stdout", "stderr") and packet.file_bytes:
            stream = self.out if packet.file_name == "stdout" else self.err
            stream.write(packet.file_bytes)
            stream.flush()
        elif packet.file_name and packet.file_bytes:
            self.details.append((f"{packet.test_id}: {packet.file_name}", packet.file_bytes))
        if packet.test_id == test_id and packet.is_final:
            self.status = packet.status

    def answer(self) -> None:
        """Read one line from the terminal and send it (end of input at EOF)."""
        try:
            line = self.terminal_in.readline()
        except KeyboardInterrupt:
            self.client.cancel()
            return
        self.client.send_stdin(line.encode("utf-8"))


def main(argv: Sequence[str]) -> int:
    """Entry point of ``testserver debug``."""
    args, extra = build_parser().parse_known_args(list(argv))
    server_args = [*server_arguments(args), *extra]
    try:
        import readline  # noqa: F401  (line editing for the pdb prompt, where available)
    except ImportError:
        pass
    try:
        client = Client.spawn(server_args, stderr=None)
    except (OSError, ClientError) as error:
        print(f"testserver debug: cannot start the server: {error}", file=sys.stderr)
        return 2
    with client:
        session = DebugRelay(client, sys.stdin, sys.stdout.buffer, sys.stderr.buffer)
        try:
            complete = session.run(args.test_id)
        except ClientError as error:
            print(f"testserver debug: {error}", file=sys.stderr)
            return 2
    for name, data in session.details:
        sys.stderr.write(f"--- {name} ---\n{data.decode('utf-8', 'replace')}\n")
    status = session.status or complete.get("status")
    print(f"\n{args.test_id}: {status}", file=sys.stderr)
    return 0 if session.status in PASSING else 1
