"""The error a session raises when its driver reports a step its state does not allow."""

from __future__ import annotations

from enum import Enum

from testserver.wire.errors import LocalProtocolError


class SessionError(LocalProtocolError):
    """An event the session's transition table does not allow in its state: a driver bug.

    The message names the event, the role (``server`` or ``client``) and the state, as
    h11 does, so the offending call can be found from the message alone.
    """

    code = "illegal-step"

    def __init__(self, event: Enum, state: Enum, role: str, detail: str = "") -> None:
        message = f"can't handle event {event.value!r} when role={role} and state={state.name}"
        super().__init__(f"{message}: {detail}" if detail else message)
        self.event, self.state, self.role = event, state, role
