"""hosts.* and remotes.*: the hosts this one links, owner only."""

from __future__ import annotations

from typing import Any

import msgspec

from tether.crypto.encoding import b64u_decode
from tether.errors import TetherError
from tether.host import projection
from tether.host.api.core import Caller, handles
from tether.protocol import schemas
from tether.protocol.events import EventType


class LinkMethods(Caller):
    """hosts.* and remotes.*: the hosts this one links, owner only."""

    @handles("hosts.link")
    async def _hosts_link(self, params: schemas.HostLink) -> dict[str, Any]:
        self._owner_only("link a host")
        try:
            if len(b64u_decode(params.static_public)) != 32:
                raise ValueError
        except ValueError:
            raise TetherError("static_public must be a 32-byte key in base64url", code="invalid_params") from None
        event = await self.host.log.append(None, EventType.HOST_LINKED, msgspec.to_builtins(params))
        return {"seq": event.seq}

    @handles("hosts.unlink")
    async def _hosts_unlink(self, params: schemas.HostRef) -> dict[str, Any]:
        self._owner_only("unlink a host")
        linked = await self.host.db.run(projection.linked_hosts, write=False)
        if not any(h["host_id"] == params.host_id for h in linked):
            raise TetherError(f"no linked host {params.host_id!r}", code="not_found")
        event = await self.host.log.append(None, EventType.HOST_UNLINKED, {"host_id": params.host_id})
        return {"seq": event.seq}

    @handles("hosts.linked")
    async def _hosts_linked(self, _: schemas.Empty) -> list[dict[str, Any]]:
        return await self.host.db.run(projection.linked_hosts, write=False)

    @handles("remotes.tunnel")
    async def _remotes_tunnel(self, params: schemas.RemoteRef) -> dict[str, Any]:
        # SSH connections are made with the owner's keys: only the owner asks for them.
        self._owner_only("open a tunnel")
        return {"port": await self.host.tunnels.hold(params.name)}

    @handles("remotes.tunnels")
    async def _remotes_tunnels(self, _: schemas.Empty) -> list[dict[str, object]]:
        self._owner_only("see its tunnels")
        return self.host.tunnels.tunnels()
