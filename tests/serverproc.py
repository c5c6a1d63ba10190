"""Drive a real ``python -m testserver`` subprocess over real pipes, for end-to-end tests.

Packets are split with our decoder (to know when a command completed) and every transcript
can also be decoded with python-subunit's ``ByteStreamToStreamResult``.
"""

from __future__ import annotations

import io
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import subunit
import testtools

from testserver.wire.commands import Command
from testserver.wire.control import COMPLETE, HELLO, decode_control
from testserver.wire.events import Packet
from testserver.wire.framing import encode_command
from testserver.wire.packets import PacketDecoder
from testserver.wire.sentinels import END_OF_INPUT, NEED_DATA

PROJECTS = Path(__file__).parent / "projects"
DEFAULT_TIMEOUT = 60.0


class Recorder(testtools.StreamResult):
    """Records every ``status()`` call python-subunit's parser makes."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict] = []

    def status(self, **kwargs) -> None:  # type: ignore[override]
        self.events.append(kwargs)


def subunit_events(data: bytes) -> list[dict]:
    """Decode ``data`` with python-subunit's own v2 parser."""
    recorder = Recorder()
    subunit.ByteStreamToStreamResult(io.BytesIO(data), non_subunit_name=None).run(recorder)
    return recorder.events


@dataclass
class Transcript:
    """Everything the server wrote for one command, up to and including its completion."""

    raw: bytes
    packets: list[Packet]
    complete: dict = field(default_factory=dict)

    def statuses(self) -> dict[str, str]:
        """Final (or last) status per test id."""
        result: dict[str, str] = {}
        for packet in self.packets:
            if packet.test_id is not None and packet.status is not None:
                result[packet.test_id] = packet.status
        return result

    def files(self, test_id: str | None, name: str) -> bytes:
        """The attachment ``name`` of ``test_id``, chunks joined."""
        return b"".join(
            p.file_bytes for p in self.packets if p.test_id == test_id and p.file_name == name
        )

    def controls(self, name: str) -> list[dict]:
        """Bodies of the control events called ``name``."""
        found = []
        for packet in self.packets:
            control = decode_control(packet)
            if control is not None and control[0] == name:
                found.append(control[1])
        return found


class ServerProcess:
    """A running ``python -m testserver --serve`` with helpers to talk to it."""

    def __init__(self, project: str | Path, *args: str, env: dict | None = None) -> None:
        cwd = PROJECTS / project if isinstance(project, str) else project
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "testserver", "--serve", *args],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
        )
        self.decoder = PacketDecoder()
        self.pending: list[Packet] = []
        self.raw = bytearray()
        self.hello_transcript = self.read_until(lambda p: _is(p, HELLO))
        self.hello = self.hello_transcript.controls(HELLO)[0]

    def send(self, command: Command) -> None:
        """Write one command frame."""
        self.send_raw(encode_command(command))

    def send_raw(self, data: bytes) -> None:
        """Write raw bytes to the server's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def request(self, command: Command, timeout: float = DEFAULT_TIMEOUT) -> Transcript:
        """Send ``command`` and read until its completion."""
        self.send(command)
        return self.wait_complete(command.id, timeout=timeout)

    def wait_complete(self, command_id: str | None, timeout: float = DEFAULT_TIMEOUT) -> Transcript:
        """Read until the completion of ``command_id``."""

        def done(packet: Packet) -> bool:
            control = decode_control(packet)
            return (
                control is not None
                and control[0] == COMPLETE
                and control[1].get("id") == command_id
            )

        transcript = self.read_until(done, timeout=timeout)
        transcript.complete = [
            body for body in transcript.controls(COMPLETE) if body.get("id") == command_id
        ][-1]
        return transcript

    def read_until(self, predicate, timeout: float = DEFAULT_TIMEOUT) -> Transcript:
        """Read packets until one satisfies ``predicate``; fail after ``timeout`` seconds."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        packets: list[Packet] = []
        start = len(self.raw)
        while True:
            event = self.decoder.next_event()
            if isinstance(event, Packet):
                packets.append(event)
                if predicate(event):
                    raw = bytes(self.raw[start:])
                    consumed = len(raw) - self.decoder.buffered
                    transcript = Transcript(raw[:consumed], packets)
                    del self.raw[: start + consumed]
                    return transcript
                continue
            if event is END_OF_INPUT:
                raise AssertionError(
                    f"server closed stdout; exit={self.proc.poll()} stderr={self.stderr_text()!r}"
                )
            assert event is NEED_DATA
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out; packets so far: {packets!r}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                data = os.read(fd, 65536)
                self.raw += data
                self.decoder.receive_data(data)

    def stderr_text(self) -> str:
        """Whatever the server wrote on stderr so far (only after it exited)."""
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode("utf-8", "replace")

    def close_stdin(self) -> None:
        """Give the server end of input."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Wait for the server to exit; return its exit code."""
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """Make sure the process is gone and its pipes closed."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


def _is(packet: Packet, name: str) -> bool:
    control = decode_control(packet)
    return control is not None and control[0] == name


def run_oneshot(
    project: str | Path, *args: str, stdin=subprocess.DEVNULL
) -> subprocess.CompletedProcess:
    """Run ``python -m testserver ARGS`` once in ``project``."""
    cwd = PROJECTS / project if isinstance(project, str) else project
    return subprocess.run(
        [sys.executable, "-m", "testserver", *args],
        cwd=cwd,
        stdin=stdin,
        capture_output=True,
        timeout=120,
    )
