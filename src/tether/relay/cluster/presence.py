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
import time
from dataclasses import dataclass

from redis.exceptions import NoScriptError

from tether.relay.cluster.redis_client import Client

TTL_MS = 10_000
# a refresh goes out this often: three chances before a key expires
REFRESH_SECONDS = 3.0
_HOST = "tether:host:"
_NODE = "tether:node:"
# the device keys a host allows (its node writes them as published; they live as long as the
# host's entry), for nodes with devices watching it
_ALLOW = "tether:allow:"
# the live nodes, scored by when their entry expires (ms), to tell them all of a change
_NODES = "tether:nodes"

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
        self.allowlists: dict[str, frozenset[bytes]] = {}  # host id → as last published here
        self._delete = redis.register_script(_DELETE)

    async def host_connected(self, host_id: str) -> Holder | None:
        """Write that this node holds ``host_id`` now; who held it before, if another node."""
        mine = Holder(self.node_id, secrets.token_hex(8))
        self.held[host_id] = mine
        before = await self.redis.set(_HOST + host_id, mine.encode(), px=TTL_MS, get=True)
        old = Holder.decode(before) if isinstance(before, str | bytes) else None
        return old if old is not None and old.node != self.node_id else None

    async def host_gone(self, host_id: str) -> None:
        self.allowlists.pop(host_id, None)
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

    async def publish_allowlist(self, host_id: str, keys: frozenset[bytes]) -> None:
        """The device keys ``host_id`` (held here) allows now, for watchers on other nodes."""
        self.allowlists[host_id] = keys
        await self._write_allowlist(host_id, keys)

    async def _write_allowlist(self, host_id: str, keys: frozenset[bytes]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(_ALLOW + host_id)
            if keys:
                pipe.sadd(_ALLOW + host_id, *keys)
                pipe.pexpire(_ALLOW + host_id, TTL_MS)
            await pipe.execute()

    async def allowed(self, host_id: str, keys: list[bytes]) -> list[bool]:
        """Which of ``keys`` the host's last published allowlist holds."""
        if not keys:
            return []
        return [bool(member) for member in await self.redis.smismember(_ALLOW + host_id, keys)]

    async def where_many(self, host_ids: list[str]) -> list[Holder | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for host_id in host_ids:
                pipe.get(_HOST + host_id)
            return [Holder.decode(value) for value in await pipe.execute()]

    async def nodes(self) -> list[str]:
        """The nodes alive now (this one included)."""
        now_ms = int(time.time() * 1000)
        return [n.decode() if isinstance(n, bytes) else str(n)
                for n in await self.redis.zrangebyscore(_NODES, now_ms, "+inf")]

    async def refresh(self) -> None:
        """Refresh this node's key and every host entry it holds (put back if Redis lost them)."""
        await self.redis.set(_NODE + self.node_id, self.advertise_url, px=TTL_MS)
        now_ms = int(time.time() * 1000)
        await self.redis.zadd(_NODES, {self.node_id: now_ms + TTL_MS})
        await self.redis.zremrangebyscore(_NODES, "-inf", now_ms)
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
                pipe.pexpire(_ALLOW + host_id, TTL_MS)
            results = await pipe.execute()
        # an allowlist Redis lost (a restart) is written again
        for (host_id, _), kept in zip(held, results[1::2], strict=True):
            keys = self.allowlists.get(host_id)
            if not kept and keys:
                await self._write_allowlist(host_id, keys)

    async def leave(self) -> None:
        """This node stops: its entries go now rather than when they expire."""
        for host_id in list(self.held):
            await self.host_gone(host_id)
        await self.redis.delete(_NODE + self.node_id)
        await self.redis.zrem(_NODES, self.node_id)
