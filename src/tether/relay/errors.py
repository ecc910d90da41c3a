"""Errors of the relay layer, as the dialing side (hosts, devices, tokens) sees them."""

from __future__ import annotations

from tether.errors import TetherError


class RelayError(TetherError):
    """The relay cannot be reached, refused this connection, or the connection was lost."""

    code = "relay"


class MailboxRefusal(RelayError):
    """The relay said no to a mailbox request (the connection stays open)."""

    code = "mailbox"

    def __init__(self, close_code: int, message: str) -> None:
        super().__init__(message)
        #: The relay's reason (frames.CloseCode: MAILBOX_FULL, TOO_LARGE, RATE_LIMITED…).
        self.close_code = close_code
