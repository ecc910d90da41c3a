"""Which node holds which host, in Redis: one key per host and one per node, each with a TTL the
node holding it refreshes, so that a dead node's entries are gone within ``TTL_MS``.

    tether:node:<node id>  → the node's advertise URL
    tether:host:<host id>  → "<node id> <token>"   (token: this connection's, so that a node
                                                     only ever refreshes or deletes its own)

A host that connects writes its key unconditionally and reads what was there (SET … GET): the
newest connection wins, and a node that held the host before is told to close its connection.
Refreshing puts back a key Redis lost (a restart without persistence) but never overwrites a
newer connection's.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from redis.exceptions import NoScriptError

from tether.relay.cluster.redis_client import Client

TTL_MS = 10_000
# a refresh goes out this often: three chances before a key expires
REFRESH_SECONDS = 3.0
_HOST = "tether:host:"
_NODE = "tether:node:"

# put the key back if it is missing or still ours; never touch another connection's
_REFRESH = """
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return false
"""
_REFRESH_SHA = hashlib.sha1(_REFRESH.encode()).hexdigest()
_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a host: a node and its connection's token."""

    node: str
    token: str

    def encode(self) -> str:
        return f"{self.node} {self.token}"

    @classmethod
    def decode(cls, value: bytes | str | None) -> Holder | None:
        if value is None:
            return None
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        node, _, token = text.partition(" ")
        return cls(node, token) if node and token else None


class Presence:
    """This node's view of and entries in the cluster's presence keys."""

    def __init__(self, redis: Client, node_id: str, advertise_url: str) -> None:
        self.redis = redis
        self.node_id = node_id
        self.advertise_url = advertise_url
        self.held: dict[str, Holder] = {}  # host id → the entry of our connection
        self._delete = redis.register_script(_DELETE)

    async def host_connected(self, host_id: str) -> Holder | None:
        """Write that this node holds ``host_id`` now; who held it before, if another node."""
        mine = Holder(self.node_id, secrets.token_hex(8))
        self.held[host_id] = mine
        before = await self.redis.set(_HOST + host_id, mine.encode(), px=TTL_MS, get=True)
        old = Holder.decode(before) if isinstance(before, str | bytes) else None
        return old if old is not None and old.node != self.node_id else None

    async def host_gone(self, host_id: str) -> None:
        mine = self.held.pop(host_id, None)
        if mine is not None:
            await self._delete(keys=[_HOST + host_id], args=[mine.encode()])

    async def still_holds(self, host_id: str, holder: Holder) -> bool:
        """Whether ``holder`` is still the host's entry (a takeover may be stale)."""
        return Holder.decode(await self.redis.get(_HOST + host_id)) == holder

    async def where(self, host_id: str) -> Holder | None:
        return Holder.decode(await self.redis.get(_HOST + host_id))

    async def url_of(self, node: str) -> str | None:
        value = await self.redis.get(_NODE + node)
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else value

    async def node_alive(self, node: str) -> bool:
        return bool(await self.redis.exists(_NODE + node))

    async def refresh(self) -> None:
        """Refresh this node's key and every host entry it holds (put back if Redis lost them)."""
        await self.redis.set(_NODE + self.node_id, self.advertise_url, px=TTL_MS)
        held = list(self.held.items())
        for start in range(0, len(held), 1000):
            chunk = held[start:start + 1000]
            try:
                await self._refresh_hosts(chunk)
            except NoScriptError:  # Redis restarted and forgot the script: load it, once more
                await self.redis.script_load(_REFRESH)
                await self._refresh_hosts(chunk)

    async def _refresh_hosts(self, held: list[tuple[str, Holder]]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for host_id, mine in held:
                pipe.evalsha(_REFRESH_SHA, 1, _HOST + host_id, mine.encode(), TTL_MS)
            await pipe.execute()

    async def leave(self) -> None:
        """This node stops: its entries go now rather than when they expire."""
        for host_id in list(self.held):
            await self.host_gone(host_id)
        await self.redis.delete(_NODE + self.node_id)
