"""Drive a real ``python -m testserver`` subprocess over real pipes, for end-to-end tests.

Packets are split with our decoder (to know when a command completed) and every transcript
can also be decoded with python-subunit's ``ByteStreamToStreamResult``. The end-to-end tests
of the client commands find here a harness for a command whose output lines they read as it
runs (:class:`CommandProcess`); ``processes`` finds what a command left behind.
"""

from __future__ import annotations

import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from subunit_reader import read_with_subunit

from testserver.wire.commands import Command
from testserver.wire.control import COMPLETE, HELLO, decode_control
from testserver.wire.events import Packet
from testserver.wire.framing import encode_command
from testserver.wire.packets import PacketDecoder
from testserver.wire.sentinels import END_OF_INPUT, NEED_DATA

PROJECTS = Path(__file__).parent / "projects"
DEFAULT_TIMEOUT = 60.0


def subunit_events(data: bytes) -> list[dict]:
    """Decode ``data`` with python-subunit's own v2 parser (strictly: no stray bytes)."""
    return read_with_subunit(data)


def copy_project(project: str | Path, into: Path, as_name: str | None = None) -> Path:
    """A private copy of ``project`` (a name under ``tests/projects``, or a path) at
    ``into/AS_NAME`` (default: the project's own name), without ``__pycache__``."""
    source = PROJECTS / project if isinstance(project, str) else project
    target = into / (as_name or source.name)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def save_as_editors_do(path: Path, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` in ``path`` the way editors save: a temporary file renamed
    over the original."""
    text = path.read_text()
    assert old in text
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text.replace(old, new))
    os.replace(temporary, path)


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
        """Make sure the process is gone and its pipes closed.

        SIGTERM first, so the server ends what its tests started (a SIGKILL leaves a test's
        escaped children, which only the server knows about, to init); SIGKILL after 10 s.
        """
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


class CommandProcess:
    """A client command (``testserver watch``, ``testserver bridge``) as a subprocess.

    It runs in ``root`` in a session of its own (so :func:`session_processes` finds what it
    leaves behind); a reader thread turns each line it writes on stdout into an item with
    ``parse`` and queues it in :attr:`items` (``None`` when stdout ends). ``name`` and
    ``what`` name the command and its items in failure messages.
    """

    name = "the command"
    what = "output"

    def __init__(
        self,
        argv: list[str],
        root: Path,
        parse: Callable[[bytes], Any],
        *,
        stdin: int = subprocess.DEVNULL,
        env: dict | None = None,
    ) -> None:
        self.root = root
        self.parse = parse
        self.process = subprocess.Popen(
            argv,
            cwd=root,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self.items: queue.Queue[Any] = queue.Queue()
        self.seen: list[Any] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.items.put(self.parse(line))
        self.items.put(None)

    def ended(self) -> str:
        """The failure message when stdout ended before an expected item."""
        return f"{self.name} ended; {self.what}: {self.seen}"

    def expect(self, predicate: Callable[[Any], bool]) -> Any:
        """The next item for which ``predicate`` is true (every item is kept in ``seen``)."""
        while True:
            try:
                item = self.items.get(timeout=DEFAULT_TIMEOUT)
            except queue.Empty:
                raise AssertionError(f"timed out; {self.what} so far: {self.seen}") from None
            if item is None:
                raise AssertionError(self.ended())
            self.seen.append(item)
            if predicate(item):
                return item

    def finish(self) -> tuple[int, bytes]:
        """Wait for the exit and the end of stdout; return the exit status and stderr, after
        checking that stderr holds no traceback."""
        code = self.process.wait(DEFAULT_TIMEOUT)
        self.reader.join(DEFAULT_TIMEOUT)
        assert self.process.stderr is not None
        stderr = self.process.stderr.read()
        self.process.stderr.close()
        assert b"Traceback" not in stderr, stderr.decode("utf-8", "replace")
        return code, stderr

    def kill(self) -> None:
        """Kill the command's whole session if it still runs, and close its pipes."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None and not stream.closed:
                stream.close()


def _is(packet: Packet, name: str) -> bool:
    control = decode_control(packet)
    return control is not None and control[0] == name


def run_oneshot(
    project: str | Path, *args: str, stdin=subprocess.DEVNULL, module: str = "testserver"
) -> subprocess.CompletedProcess:
    """Run ``python -m MODULE ARGS`` once in ``project`` (``subunit.run`` for the reference)."""
    cwd = PROJECTS / project if isinstance(project, str) else project
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        stdin=stdin,
        capture_output=True,
        timeout=120,
    )
