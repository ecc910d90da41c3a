"""Errors of the relay layer, as the dialing side (hosts, devices, tokens) sees them."""

from __future__ import annotations

from tether.errors import TetherError


class RelayError(TetherError):
    """The relay cannot be reached, refused this connection, or the connection was lost."""

    code = "relay"
