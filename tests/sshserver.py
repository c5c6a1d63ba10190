"""A real SSH server on the loopback interface for the remote-worker tests (asyncssh).

Run as ``python sshserver.py DIR``: it generates a host key and a client key pair in
``DIR`` (``host_key``, ``client_key``, ``client_key.pub``), listens on ``127.0.0.1`` on a
free port, prints the port on a line of its own, and serves until its stdin closes. A client
that proves it holds ``client_key`` may log in with any user name; each session's command
runs in ``/bin/sh`` on this machine with the session's stdin, stdout and stderr, and its exit
status (128 + N for signal N, as a shell reports it) is the session's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import warnings
from pathlib import Path

warnings.simplefilter("ignore")  # asyncssh's imports warn about DSA on new cryptography

import asyncssh  # noqa: E402


def make_keys(directory: Path) -> None:
    """Write the host key and the client key pair into ``directory``."""
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(directory / "host_key")
    client = asyncssh.generate_private_key("ssh-ed25519")
    client.write_private_key(directory / "client_key")
    client.write_public_key(directory / "client_key.pub")
    os.chmod(directory / "client_key", 0o600)


RUNNING: set[int] = set()
"""Process groups of the commands running now: ended when the server stops."""


async def run_command(process: asyncssh.SSHServerProcess) -> None:
    """Run the session's command in a local shell, wired to the session's streams."""
    local = await asyncio.create_subprocess_shell(
        process.command or "exec /bin/sh",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    RUNNING.add(local.pid)
    feeding = asyncio.ensure_future(_copy_in(process.stdin, local.stdin))
    await asyncio.gather(
        _copy_out(local.stdout, process.stdout), _copy_out(local.stderr, process.stderr)
    )
    code = await local.wait()
    RUNNING.discard(local.pid)
    feeding.cancel()
    if code < 0:  # killed: what it started goes with it, as sshd's hangup does
        _kill_group(local.pid)
    process.exit(code if code >= 0 else 128 - code)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def _copy_in(source: asyncssh.SSHReader, target: asyncio.StreamWriter) -> None:
    """The session's stdin to the command's, then end of input."""
    try:
        while data := await source.read(65536):
            target.write(data)
            await target.drain()
        target.close()
    except (ConnectionError, asyncssh.Error):
        target.close()


async def _copy_out(source: asyncio.StreamReader, target: asyncssh.SSHWriter) -> None:
    """The command's stdout or stderr to the session's, until it ends."""
    while data := await source.read(65536):
        try:
            target.write(data)
            await target.drain()
        except (ConnectionError, asyncssh.Error):
            return


async def serve(directory: Path) -> None:
    server = await asyncssh.create_server(
        asyncssh.SSHServer,
        "127.0.0.1",
        0,
        server_host_keys=[str(directory / "host_key")],
        authorized_client_keys=str(directory / "client_key.pub"),
        process_factory=run_command,
        encoding=None,
    )
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
    server.close()
    for pgid in RUNNING:  # what a session still runs goes, as with sshd stopping
        _kill_group(pgid)


def main() -> None:
    directory = Path(sys.argv[1])
    make_keys(directory)
    asyncio.run(serve(directory))


if __name__ == "__main__":
    main()
