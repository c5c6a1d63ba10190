"""The daemon's side of ``testserver run`` at a terminal: the command, run on a warm server.

A ``console`` request (:mod:`testserver.backends.warmcli`) carries a command line, its working
directory, environment and terminal. The daemon runs :func:`testserver.clients.runcommand.run_main`
in the connection's thread with streams that send framed bytes back (``o`` stdout, ``e``
stderr, then ``x`` with the exit status) and a ``connect`` that takes a warm server from the
pool for the command's loading options (key: the resolved working directory, the client's
Python, the ``--serve`` arguments with their directories resolved, the ``PYTHON*``
variables), starting one with reloading on if there is none. The server applies changed
sources before the listing and the run, as it does for every batch.

The client's ``c`` byte cancels the batch (Ctrl-C); a closed connection cancels it too and
the rest of the output is dropped, so the batch still completes and the server goes back to
the pool in a clean state. A server that fails during the command is discarded.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from testserver import __version__
from testserver.backends.pool import ServerKey, StartFailed, WarmServer
from testserver.clients.client import Client, ClientError
from testserver.clients.runcommand import StartError, TargetServer, run_main

if TYPE_CHECKING:
    from testserver.backends.daemon import Daemon

READ_SIZE = 4096


class Channel:
    """Framed writes to the client; after the client has gone, writes are dropped."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.gone = threading.Event()
        self._lock = threading.Lock()

    def send(self, tag: bytes, data: bytes) -> None:
        if self.gone.is_set():
            return
        frame = tag + len(data).to_bytes(4, "big") + data
        with self._lock:
            try:
                self.conn.sendall(frame)
            except OSError:
                self.gone.set()


class ChannelWriter(io.RawIOBase):
    """A binary stream whose bytes become ``tag`` frames; ``isatty`` is the client's."""

    def __init__(self, channel: Channel, tag: bytes, tty: bool) -> None:
        super().__init__()
        self.channel = channel
        self.tag = tag
        self.tty = tty

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.tty

    def write(self, data) -> int:  # noqa: ANN001 - any bytes-like object
        data = bytes(data)
        self.channel.send(self.tag, data)
        return len(data)


def text_stream(channel: Channel, tag: bytes, tty: bool, encoding: str) -> io.TextIOWrapper:
    """A text stream over a :class:`ChannelWriter`, flushed on every write."""
    raw = ChannelWriter(channel, tag, tty)
    return io.TextIOWrapper(
        io.BufferedWriter(raw), encoding=encoding, errors="replace", write_through=True
    )


class WarmSession(TargetServer):
    """A pooled warm server; remembers its last listing to skip the next one for exact ids."""

    def __init__(self, server: WarmServer) -> None:
        assert server.client is not None
        super().__init__(server.client)
        self.server = server

    def list(self) -> list[str]:
        ids = self.client.list()
        self.server.known_ids = frozenset(ids)
        return ids

    def known(self) -> frozenset[str] | None:
        return self.server.known_ids


class Canceller(threading.Thread):
    """Reads the client's side of the connection: ``c`` or end of input cancel the run."""

    def __init__(self, conn: socket.socket, channel: Channel) -> None:
        super().__init__(name="console-cancel", daemon=True)
        self.conn = conn
        self.channel = channel
        self.client: Client | None = None

    def run(self) -> None:
        while True:
            try:
                data = self.conn.recv(READ_SIZE)
            except OSError:
                data = b""
            if not data:
                self.channel.gone.set()
            if self.client is not None:
                with contextlib.suppress(ClientError, OSError):
                    self.client.cancel()
            if not data:
                return


def serve(daemon: Daemon, conn: socket.socket, request: dict[str, Any]) -> None:
    """Run one console request to the end and send its exit status."""
    channel = Channel(conn)
    if request.get("version") != __version__:
        reason = (
            f"the daemon runs testserver {__version__} but this is "
            f"{request.get('version')}; run `testserver daemon stop` to restart it"
        )
        channel.send(b"f", reason.encode())
        return
    canceller = Canceller(conn, channel)
    canceller.start()
    encoding = str(request.get("encoding") or "utf-8")
    stdout = text_stream(channel, b"o", bool(request.get("stdout_tty")), encoding)
    stderr = text_stream(channel, b"e", False, encoding)

    @contextlib.contextmanager
    def connect(server_args: list[str]) -> Iterator[TargetServer]:
        key = ServerKey.from_request({**request, "server_args": server_args})
        try:
            server, _ = daemon.pool.acquire(key, request["env"])
        except StartFailed as error:
            raise StartError(error.message) from None
        canceller.client = server.client
        try:
            yield WarmSession(server)
        except BaseException:
            daemon.pool.discard(server)
            raise
        finally:
            canceller.client = None
        daemon.pool.release(server)

    code = run_main(
        [str(arg) for arg in request["argv"]],
        stdout=stdout,
        stderr=stderr,
        env=request["env"],
        cwd=request["cwd"],
        columns=request.get("columns"),
        connect=connect,
    )
    stdout.flush()
    stderr.flush()
    channel.send(b"x", str(code).encode())
