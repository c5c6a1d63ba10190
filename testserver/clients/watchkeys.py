"""Keys for ``testserver watch`` on a terminal, and the one wait for a save or a key.

On a terminal (stdin is a tty), watch puts it in *cbreak* mode: each key arrives as it is
pressed, unechoed, while Ctrl-C still interrupts. The mode is restored when watch exits,
however it exits. :class:`Keys` reads single keys and edits a line for the ``p`` prompt;
:class:`Input` waits for whichever comes first, a batch of saved files or a key press.
Anywhere else (a pipe, a file, ``/dev/null``) there are no keys and watch only watches.
"""

from __future__ import annotations

import os
import select
import termios
import time
import tty
from collections.abc import Callable
from typing import TextIO

__all__ = ["ENTER", "ESCAPE", "Input", "Keys"]

ENTER = "\n"
"""What Enter gives in cbreak mode (the terminal still maps CR to LF)."""

ESCAPE = "\x1b"
"""The first byte of Esc and of every arrow and function key sequence."""

ERASE = ("\x7f", "\b")
"""Backspace, as terminals send it (DEL) and as some still do (BS)."""

END_OF_TRANSMISSION = "\x04"
"""Ctrl-D: in cbreak mode a key like any other; it quits, as end of input would."""

READ_SIZE = 64
"""Bytes read from the terminal at a time: a paste or an escape sequence arrives whole."""


class Keys:
    """Single key presses from the terminal ``fd``, which is in cbreak mode until closed."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._saved = termios.tcgetattr(fd)
        self._pending = ""
        tty.setcbreak(fd, termios.TCSANOW)

    @classmethod
    def open(cls, stream: TextIO) -> Keys | None:
        """Keys from ``stream`` if it is a terminal, else ``None``."""
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            return None
        if not os.isatty(fd):
            return None
        try:
            return cls(fd)
        except termios.error:
            return None

    def close(self) -> None:
        """Give the terminal back its modes (echo, line editing) as they were."""
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def read(self, timeout: float | None) -> str | None:
        """The next key, waiting at most ``timeout`` seconds (``None``: forever).

        Escape sequences (arrows, function keys) are read whole and dropped; ``ESCAPE``
        is returned only for Esc itself. End of input and Ctrl-D read as ``"q"``.
        """
        while not self._pending:
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if not ready:
                return None
            data = os.read(self.fd, READ_SIZE)
            if not data:
                return "q"  # the terminal went away: nothing more will come
            text = data.decode("utf-8", "replace")
            if text.startswith(ESCAPE) and len(text) > 1:
                continue  # a key we do not use
            self._pending += text
        key, self._pending = self._pending[0], self._pending[1:]
        return "q" if key == END_OF_TRANSMISSION else key

    def read_line(self, prompt: str, write: Callable[[str], object]) -> str | None:
        """A line typed after ``prompt``, echoed as typed; ``None`` when Esc cancels it."""
        write(prompt)
        text = ""
        while True:
            key = self.read(None)
            if key in (ENTER, "\r"):
                write("\n")
                return text
            if key == ESCAPE:
                write("\n")
                return None
            if key in ERASE:
                if text:
                    text = text[:-1]
                    write("\b \b")
            elif key is not None and key.isprintable():
                text += key
                write(key)


class _KeyPressed(Exception):
    """A key came while no change was pending: stop waiting."""


class Input:
    """Saved files (``take()`` returns changed paths) and, on a terminal, key presses."""

    def __init__(self, take: Callable[[], set[str]], keys: Keys | None) -> None:
        self.take = take
        self.keys = keys
        self.pending: list[str] = []

    def next(self, wait: Callable[..., set[str]]) -> set[str] | str:
        """Changed paths, gathered by ``wait`` (:func:`testserver.clients.watch.wait_for_changes`),
        or a key. A key pressed while changes are being gathered waits its turn."""
        if self.pending:
            return self.pending.pop(0)
        taken: set[str] = set()

        def take() -> set[str]:
            more = self.take()
            taken.update(more)
            return more

        def sleep(seconds: float) -> None:
            if self.keys is None:
                time.sleep(seconds)
                return
            key = self.keys.read(seconds)
            if key is not None:
                self.pending.append(key)
                if not taken:
                    raise _KeyPressed

        try:
            return wait(take, sleep=sleep)
        except _KeyPressed:
            return self.pending.pop(0)
