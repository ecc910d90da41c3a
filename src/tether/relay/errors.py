"""Errors of the relay layer, as the dialing side (hosts, devices, tokens) sees them."""

from __future__ import annotations

from tether.errors import TetherError
from tether.protocol.frames import CloseCode, close_message


class RelayError(TetherError):
    """The relay cannot be reached, refused this connection, or the connection was lost."""

    code = "relay"


class ChannelClosed(TetherError):
    """A channel ended: refused by the relay, closed by the peer, or the link died.

    ``close_code`` is the relay protocol's :class:`~tether.protocol.frames.CloseCode` (an int,
    kept as is when it is a code this version does not know).
    """

    code = "channel_closed"

    def __init__(self, close_code: int, reason: str = "", *, hint: str | None = None) -> None:
        self.close_code = close_code
        self.reason = reason
        super().__init__(reason or close_message(close_code), hint=hint)

    @property
    def close_name(self) -> str:
        try:
            return CloseCode(self.close_code).name
        except ValueError:
            return str(self.close_code)
