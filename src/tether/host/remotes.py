"""The one interface between the host daemon and the remote hosts ``tether ssh`` starts.

``tether.sshremote`` sits above the host: it gives the daemon a :class:`RemoteHosts` (the
tunnels it holds, the devices it pushes) when the daemon is made, and takes from the host only
:func:`desktop_bundle`, so neither reaches into the other's modules or files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from tether.crypto.keys import Identity
from tether.home import HostPaths
from tether.host.config import load_config
from tether.host.db import Database
from tether.host.inheritance import make_bundle
from tether.host.store import Store


class RemoteHosts(Protocol):
    """What the daemon asks of its home's remote hosts (``tether.sshremote.hooks.DesktopRemotes``)."""

    async def run(self) -> None:
        """Hold the ``--mode tunnel`` remotes' tunnels until cancelled; then end them."""
        ...

    async def hold(self, name: str) -> int:
        """The tunnel of remote ``name`` is up: its port on the remote's loopback."""
        ...

    def tunnels(self) -> list[dict[str, object]]:
        """Each tunnel held now (its remote's name, state, detail, port)."""
        ...

    def host_ids(self) -> set[str]:
        """The host ids of the remotes this home still has."""
        ...

    async def refresh(self, identity: Identity, name: str) -> list[str]:
        """Push the desktop's current devices to every remote; never raises. The names not reached."""
        ...


async def desktop_bundle(home: Path, identity: Identity, parent_name: str, host_id: str) -> bytes:
    """The signed bundle for remote host ``host_id``: this home's live devices and agent policy."""
    db = await Database.open(HostPaths(home).db)
    try:
        devices = await Store(db).list_devices()
    finally:
        await db.close()
    policy = {name: agent.policy for name, agent in load_config(home).agents.items()}
    return make_bundle(identity, parent_name=parent_name, host_id=host_id, devices=devices, policy=policy)
