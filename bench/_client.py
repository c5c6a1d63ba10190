"""A tiny benchmark-only driver for ``python -m testserver --serve`` over real pipes.

It is deliberately minimal: spawn the server, wait for ``testserver.hello``, send one
command frame at a time and read packets until that command's ``testserver.complete``.
Reads are plain ``os.read`` calls on the stdout pipe, decoded with the project's own
:class:`~testserver.wire.packets.PacketDecoder`; frames come from
:func:`~testserver.wire.framing.encode_command`. No threads, no testtools, no subunit.

It is not the project's client library; it only exists so that ``bench_server.py`` measures
the round trip a thin client would see (write frame -> complete packet received).
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testserver.wire.commands import Command, Quit
from testserver.wire.control import COMPLETE, HELLO, decode_control
from testserver.wire.events import Packet
from testserver.wire.framing import encode_command
from testserver.wire.packets import SIGNATURE, PacketDecoder, decode_packets
from testserver.wire.sentinels import END_OF_INPUT

COMPLETE_MARK = COMPLETE.encode("ascii")
"""A packet whose bytes contain this may be a complete event, so skimming decodes it."""

READ_SIZE = 1 << 16
"""Bytes per os.read: large enough that a 10k-test run needs a few hundred reads at most."""

DEFAULT_TIMEOUT = 300.0
"""Seconds to wait for hello or for one command to complete before declaring the server hung."""

QUIT_TIMEOUT = 10.0
"""Seconds the server gets to exit after ``quit`` before it is killed."""


class ServerError(RuntimeError):
    """The server died, hung, or broke the protocol; the message ends with its stderr tail."""


@dataclass
class Reply:
    """What one command produced, as seen by the client."""

    complete: dict[str, Any]
    seconds: float
    """Wall time from writing the frame to decoding the command's complete packet."""
    nbytes: int
    statuses: Counter[str] = field(default_factory=Counter)
    """Count of each test status seen (``exists``, ``success``, ...); empty when skimming."""
    raw: bytes = b""
    """Every byte read for this command."""


class Server:
    """A ``python -m testserver --serve`` child process with pipes on stdin and stdout."""

    def __init__(
        self, argv: list[str], cwd: Path, stderr_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.argv = argv
        self.stderr_path = stderr_path
        stderr_path.parent.mkdir(parents=True, exist_ok=True)
        self._stderr = stderr_path.open("wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            bufsize=0,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        self._decoder = PacketDecoder()
        self._eof = False
        self.hello: dict[str, Any] | None = None
        self.hello_seconds: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_hello(self, timeout: float = DEFAULT_TIMEOUT) -> float:
        """Read until ``testserver.hello``; return seconds from spawn to hello."""
        deadline = time.perf_counter() + timeout
        while True:
            control = decode_control(self._next_packet(deadline))
            if control is not None and control[0] == HELLO:
                self.hello = control[1]
                self.hello_seconds = time.perf_counter() - self.started
                return self.hello_seconds

    def request(
        self, command: Command, timeout: float = DEFAULT_TIMEOUT, *, decode: bool = True
    ) -> Reply:
        """Send ``command`` and read until its complete packet; time the round trip.

        ``decode=True`` decodes every packet with :class:`PacketDecoder` (what a Python
        client that looks at each event pays). ``decode=False`` only walks the packet
        length headers and decodes the one packet that names ``testserver.complete`` (what
        a client pays that stores or forwards the stream). :attr:`Reply.raw` has every byte
        read for the command either way (commands are sent one at a time).
        """
        frame = encode_command(command)
        self._raw = []
        start = time.perf_counter()
        self._write(frame)
        deadline = start + timeout
        statuses: Counter[str] = Counter()
        if decode:
            complete = self._decode_until_complete(command.id, deadline, statuses)
        else:
            complete = self._skim_until_complete(command.id, deadline)
        seconds = time.perf_counter() - start
        raw, self._raw = b"".join(self._raw), None
        return Reply(complete, seconds, len(raw), statuses, raw)

    def rss_kib(self) -> int:
        """The server's resident set size (``VmRSS`` in ``/proc/PID/status``), in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise ServerError(f"no VmRSS for pid {self.pid}")

    def close(self) -> int | None:
        """Send ``quit``, close stdin and reap the process; kill it if it does not exit."""
        if self.proc.poll() is None:
            try:
                self._write(encode_command(Quit("bench-quit")))
                self.proc.stdin.close()  # type: ignore[union-attr]
                self._drain(time.perf_counter() + QUIT_TIMEOUT)
                self.proc.wait(QUIT_TIMEOUT)
            except (OSError, ServerError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()  # type: ignore[union-attr]
        self._stderr.close()
        return self.proc.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------

    _raw: list[bytes] | None = None

    def _decode_until_complete(
        self, command_id: str, deadline: float, statuses: Counter[str]
    ) -> dict[str, Any]:
        while True:
            packet = self._next_packet(deadline)
            if packet.test_id is not None:
                if packet.status is not None:
                    statuses[packet.status] += 1
                continue
            control = decode_control(packet)
            if (
                control is not None
                and control[0] == COMPLETE
                and control[1].get("id") == command_id
            ):
                return control[1]

    def _skim_until_complete(self, command_id: str, deadline: float) -> dict[str, Any]:
        if self._decoder.buffered:
            raise ServerError("skimming needs an empty decoder buffer (unsolicited output?)")
        buffer, pos = bytearray(), 0
        while True:
            length = _packet_length(buffer, pos)
            if length is None:
                del buffer[:pos]
                pos = 0
                buffer += self._read(deadline)
                continue
            end = pos + length
            if COMPLETE_MARK in buffer[pos:end]:
                control = decode_control(decode_packets(bytes(buffer[pos:end]))[0])
                if control and control[0] == COMPLETE and control[1].get("id") == command_id:
                    if end < len(buffer):
                        self._decoder.receive_data(bytes(buffer[end:]))
                    return control[1]
            pos = end

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._in, view) :]

    def _read(self, deadline: float) -> bytes:
        if self._eof:
            raise ServerError(self._failure("stdout closed"))
        remaining = deadline - time.perf_counter()
        if remaining <= 0 or not select.select([self._out], [], [], remaining)[0]:
            raise ServerError(self._failure("timed out waiting for output"))
        data = os.read(self._out, READ_SIZE)
        if self._raw is not None:
            self._raw.append(data)
        self._eof = not data
        return data

    def _next_packet(self, deadline: float) -> Packet:
        while True:
            event = self._decoder.next_event()
            if isinstance(event, Packet):
                return event
            if event is END_OF_INPUT or self._eof:
                raise ServerError(self._failure("stdout closed"))
            self._decoder.receive_data(self._read(deadline))

    def _drain(self, deadline: float) -> None:
        while not self._eof and time.perf_counter() < deadline:
            self._read(deadline)

    def _failure(self, what: str) -> str:
        self._stderr.flush()
        tail = self.stderr_path.read_bytes()[-2000:].decode("utf-8", "replace")
        status = self.proc.poll()
        return (
            f"testserver {what} (exit status {status}); command: {' '.join(self.argv)}\n"
            f"stderr tail ({self.stderr_path}):\n{tail}"
        )


def _packet_length(buffer: bytearray, pos: int) -> int | None:
    """Length of the subunit v2 packet at ``pos``, or None if its header is incomplete.

    Only the signature and the 1-3 byte length after the flags are read (no CRC check):
    enough to find packet boundaries. Raises :class:`ServerError` on a bad header.
    """
    available = len(buffer) - pos
    if available < 4:
        return None
    if buffer[pos] != SIGNATURE:
        raise ServerError(f"byte 0x{buffer[pos]:02x} where a packet should start")
    first = buffer[pos + 3]
    extra = first >> 6
    if extra == 3 or available < 4 + extra:
        if extra == 3:
            raise ServerError("packet length field longer than 3 bytes")
        return None
    length = first & 0x3F
    for index in range(extra):
        length = length << 8 | buffer[pos + 4 + index]
    return length if available >= length else None
