"""A device's link to a relay. ``tether.relay.link`` (and with it websockets, a tenth of a CLI
command's start) is imported on the first dial only: commands that talk to the local daemon never
load it (docs/benchmarks.md, "CLI start-up")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tether.crypto.keys import Identity

if TYPE_CHECKING:
    from tether.relay.link import RelayLink


async def dial_relay(url: str, identity: Identity, **options: Any) -> RelayLink:
    """``RelayLink.connect(url, identity, "device", **options)``."""
    from tether.relay.link import RelayLink

    return await RelayLink.connect(url, identity, "device", **options)
