"""The server's packet writer: held bytes keep their order and leave before anything else."""

from __future__ import annotations

import fcntl
import os

import pytest

from testserver.serve.driver import HOLD_LIMIT, ClientGone, PacketWriter


@pytest.fixture
def pipe():
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, 4 * HOLD_LIMIT)  # room for every test's bytes
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        try:
            os.close(fd)
        except OSError:
            pass


def pending(read_fd: int) -> bytes:
    try:
        return os.read(read_fd, 1 << 20)
    except BlockingIOError:
        return b""


def test_held_writes_wait_for_a_flush(pipe):
    read_fd, write_fd = pipe
    writer = PacketWriter(write_fd)
    writer.holding = True
    writer(b"a")
    writer(b"b")
    assert pending(read_fd) == b""
    writer.flush()
    assert pending(read_fd) == b"ab"


def test_a_write_made_while_not_holding_goes_after_the_held_ones(pipe):
    read_fd, write_fd = pipe
    writer = PacketWriter(write_fd)
    writer.holding = True
    writer(b"packets")
    writer.holding = False
    writer(b"completion")
    assert pending(read_fd) == b"packetscompletion"


def test_holding_is_bounded(pipe):
    read_fd, write_fd = pipe
    writer = PacketWriter(write_fd)
    writer.holding = True
    writer(b"x" * (HOLD_LIMIT - 1))
    writer(b"yy")  # over the limit: what is held, then this, go out at once
    assert pending(read_fd) == b"x" * (HOLD_LIMIT - 1) + b"yy"


def test_a_closed_pipe_is_client_gone_at_the_flush(pipe):
    read_fd, write_fd = pipe
    writer = PacketWriter(write_fd)
    writer.holding = True
    writer(b"a")
    os.close(read_fd)
    with pytest.raises(ClientGone):
        writer.flush()
