"""What the protocol layers need from the transport under them, declared here so that
``e2e`` and ``rpc`` depend on this module and not on each other or on the relay's link.

:class:`Channel` is one channel through the relay as the end-to-end layer uses it
(``tether.relay.link.Channel`` is one); :class:`ChannelClosed` is how it ends;
:class:`TransportClosed` is how a message transport ends under an RPC peer.
"""

from __future__ import annotations

from typing import Protocol

from tether.errors import TetherError
from tether.protocol.frames import CloseCode, close_message


class TransportClosed(TetherError):
    """The transport under an RPC peer is gone."""

    code = "closed"


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


class Channel(Protocol):
    """One channel through the relay: payloads in order; :class:`ChannelClosed` once it ended."""

    @property
    def peer_identity(self) -> bytes | None:
        """The identity key the relay vouches for on the other side, when it names one."""
        ...

    async def send(self, payload: bytes | bytearray | memoryview) -> None: ...

    async def recv(self) -> bytes: ...

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None: ...
