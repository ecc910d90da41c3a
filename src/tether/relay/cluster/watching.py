"""Presence of hosts connected to other nodes, for devices watching them here.

A node's router answers WATCH for the hosts connected to it; for the others it hands the question
here (``router.WatchElsewhere``). A host is online for a device when some node holds it (its
presence key) and its allowlist, which its node keeps in Redis, holds the device's key — the same
rule as for a local host, so a stranger learns nothing either way. Answers change when a host
connects, leaves or publishes an allowlist (its node tells every node: HOST_CHANGED), and when a
node dies (its keys expire; each node looks again at what its devices watch every refresh).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from tether.protocol.frames import Presence
from tether.relay.cluster.presence import Holder
from tether.relay.cluster.presence import Presence as PresenceKeys
from tether.relay.cluster.redis_client import TROUBLE
from tether.relay.connection import Link
from tether.relay.router import Peer, Router

log = logging.getLogger("tether.relay.cluster")


class Watching:
    """See the module's docstring."""

    def __init__(self, router: Router[Link], keys: PresenceKeys, act: Callable[[], None]) -> None:
        self.router = router
        self.keys = keys
        self.act = act
        # hosts watched here and held elsewhere: the node last seen holding each (None: nowhere)
        self._seen: dict[str, str | None] = {}

    async def watch(self, device: Peer[Link], host_ids: Iterable[str]) -> None:
        """A device here watches these hosts, not connected here: tell it of each."""
        for host_id in host_ids:
            await self._tell(host_id, [device])

    def wants(self, host_id: str) -> bool:
        """Whether a device here watches ``host_id``, held elsewhere (held here, the router tells
        its watchers itself)."""
        return host_id not in self.router.hosts and bool(self.router.watchers.get(host_id))

    async def changed(self, host_id: str) -> None:
        """A host connected, left or published an allowlist somewhere: tell its watchers here."""
        if self.wants(host_id):
            await self._tell(host_id, list(self.router.watchers[host_id]))

    async def check(self) -> None:
        """Look again at every host watched here and held elsewhere (a node may have died)."""
        watched = [h for h in self.router.watchers if h not in self.router.hosts]
        for gone in set(self._seen) - set(watched):
            del self._seen[gone]
        if not watched:
            return
        holders = await self.keys.where_many(watched)
        for host_id, holder in zip(watched, holders, strict=True):
            node = holder.node if holder is not None else None
            if host_id not in self._seen or self._seen[host_id] != node:
                await self._tell(host_id, list(self.router.watchers.get(host_id, ())))

    async def _tell(self, host_id: str, devices: list[Peer[Link]]) -> None:
        holder: Holder | None
        try:
            holder = await self.keys.where(host_id)
            live = holder is not None and holder.node != self.keys.node_id
            allowed = await self.keys.allowed(host_id, [d.key for d in devices]) if live else [False] * len(devices)
        except TROUBLE as exc:
            # not known to be online for anyone: said offline, looked at again when Redis is back
            log.debug("presence of %s unknown: %s", host_id, exc)
            holder, allowed = None, [False] * len(devices)
            self._seen.pop(host_id, None)
        else:
            self._seen[host_id] = holder.node if holder is not None else None
        if host_id in self.router.hosts:
            return  # it connected here meanwhile: the router told its watchers
        for device, online in zip(devices, allowed, strict=True):
            if not device.gone and host_id in device.watching:
                device.link.enqueue(Presence(host_id, online=online).encode())
        self.act()
