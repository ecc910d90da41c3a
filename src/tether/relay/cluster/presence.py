"""Which node holds which host, in Redis: one key per host and one per node, each with a TTL the
node holding it refreshes, so that a dead node's entries are gone within ``TTL_MS``.

    tether:node:<node id>  → the node's advertise URL
    tether:host:<host id>  → "<node id> <token>"   (token: this connection's, so that a node
                                                     only ever refreshes or deletes its own)

A host that connects writes its key unconditionally and reads what was there (SET … GET): the
newest connection wins, and a node that held the host before is told to close its connection.
Refreshing puts back a key Redis lost (a restart without persistence) but never overwrites a
newer connection's.

Hosts connecting, leaving and publishing allowlists only queue their writes here; the node sends
what queued meanwhile as one pipeline (:meth:`Presence.write`), in order. A node taking the hosts
of a dead one gets thousands within a second: one round trip each would need as many pooled
connections (redis-py refuses past 100) and most of the node's CPU.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from tether.relay.cluster.redis_client import Client
from tether.relay.cluster.scripts import CHUNK, Args, Script
from tether.relay.histogram import Histogram

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
_REFRESH = Script("""
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return false
""")
# the same for many hosts at once (one server only: the keys live in many slots). KEYS: the hosts'
# keys, then their allowlists' keys; ARGV: the TTL, then the entries. The (1-based) hosts whose
# allowlist key was gone.
_REFRESH_MANY = Script("""
local n = #KEYS / 2
local lost = {}
for i = 1, n do
  local v = redis.call('GET', KEYS[i])
  if v == false or v == ARGV[i + 1] then
    redis.call('SET', KEYS[i], ARGV[i + 1], 'PX', ARGV[1])
  end
  if redis.call('PEXPIRE', KEYS[n + i], ARGV[1]) == 0 then
    lost[#lost + 1] = i
  end
end
return lost
""")
_DELETE = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
""")
# ARGV: the TTL, the device keys joined (32 bytes each): the allowlist replaced at once (a reader
# never sees it empty). One argument, not one per key: redis-py packs each argument in Python;
# with 25 keys per host a node admitting hosts took 4 % more CPU (docs/benchmarks.md). SADD takes
# them a thousand at a time: Lua's stack is bounded.
_ALLOW_SET = Script("""
redis.call('DEL', KEYS[1])
local blob, members = ARGV[2], {}
for i = 1, #blob, 32 do
  members[#members + 1] = string.sub(blob, i, i + 31)
  if #members == 1000 or i + 32 > #blob then
    redis.call('SADD', KEYS[1], unpack(members))
    members = {}
  end
end
if #blob > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
""")
# what a queued write does
_CONNECTED, _GONE, _ALLOWS = range(3)


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


# a queued write: what it does, the host, its entry or allowlist, when it was queued (monotonic)
_Op = tuple[int, str, Holder | frozenset[bytes], float]


@dataclass(slots=True)
class Written:
    """What one :meth:`Presence.write` did."""

    #: the hosts whose entries or allowlists it wrote, each once, in order
    changed: list[str] = field(default_factory=list)
    #: (host, the entry another node had, ours): that node is to close its connection
    taken: list[tuple[str, Holder, Holder]] = field(default_factory=list)
    #: why some or all of it may not have reached Redis (the refresh writes the entries later)
    error: Exception | None = None


class Presence:
    """This node's view of and entries in the cluster's presence keys."""

    def __init__(self, redis: Client, node_id: str, advertise_url: str) -> None:
        self.redis = redis
        self.node_id = node_id
        self.advertise_url = advertise_url
        self.held: dict[str, Holder] = {}  # host id → the entry of our connection
        self.allowlists: dict[str, frozenset[bytes]] = {}  # host id → as last published here
        self._queue: list[_Op] = []
        # how long a host that connected waited for its entry to be in Redis: other nodes reach
        # it only then (a node admitting a storm of hosts falls behind; docs/cluster.md)
        self.write_seconds = Histogram(
            "tether_relay_cluster_presence_write_seconds",
            "Seconds from a host's admission on this node until its presence entry was in Redis "
            "(hosts whose first write failed are not counted: the refresh writes them).",
            (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        # where(): the hosts asked for while a lookup is out, and who waits for each
        self._wanted: dict[str, list[asyncio.Future[Holder | None]]] = {}
        self._looking: asyncio.Task[None] | None = None

    @property
    def pending(self) -> bool:
        """Writes wait for :meth:`write`."""
        return bool(self._queue)

    def host_connected(self, host_id: str) -> None:
        """This node holds ``host_id`` now (written by the next :meth:`write`)."""
        mine = self.held[host_id] = Holder(self.node_id, secrets.token_hex(8))
        self._queue.append((_CONNECTED, host_id, mine, time.monotonic()))

    def host_gone(self, host_id: str) -> None:
        self.allowlists.pop(host_id, None)
        mine = self.held.pop(host_id, None)
        if mine is not None:
            self._queue.append((_GONE, host_id, mine, time.monotonic()))

    def publish_allowlist(self, host_id: str, keys: frozenset[bytes]) -> None:
        """The device keys ``host_id`` (held here) allows now, for watchers on other nodes."""
        self.allowlists[host_id] = keys
        self._queue.append((_ALLOWS, host_id, keys, time.monotonic()))

    async def write(self) -> Written:
        """Everything queued so far, as one pipeline, in order."""
        queue, self._queue = self._queue, []
        written = Written()
        if not queue:
            return written
        written.changed = list(dict.fromkeys(host_id for _, host_id, _, _ in queue))
        try:
            results = await self._pipeline(queue)
            missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if missing:  # Redis restarted and forgot the scripts: the script calls once more
                for script in (_DELETE, _ALLOW_SET):
                    await self.redis.script_load(script.text)
                for i, again in zip(missing, await self._pipeline([queue[i] for i in missing]), strict=True):
                    results[i] = again
        except Exception as exc:  # redis-py raises RedisError, OSError and asyncio's TimeoutError
            written.error = exc
            return written
        now = time.monotonic()
        for (op, host_id, arg, at), result in zip(queue, results, strict=True):
            if isinstance(result, Exception):
                written.error = result
            elif op == _CONNECTED and isinstance(arg, Holder):
                self.write_seconds.observe(now - at)
                old = Holder.decode(result) if isinstance(result, str | bytes) else None
                if old is not None and old.node != self.node_id:
                    written.taken.append((host_id, old, arg))
        return written

    async def _pipeline(self, ops: list[_Op]) -> list[object]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for op, host_id, arg, _ in ops:
                if isinstance(arg, Holder):
                    if op == _CONNECTED:
                        pipe.set(_HOST + host_id, arg.encode(), px=TTL_MS, get=True)
                    else:
                        pipe.evalsha(_DELETE.sha, 1, _HOST + host_id, arg.encode())
                else:
                    pipe.evalsha(_ALLOW_SET.sha, 1, _ALLOW + host_id, TTL_MS, b"".join(arg))
            return list(await pipe.execute(raise_on_error=False))

    async def still_holds(self, host_id: str, holder: Holder) -> bool:
        """Whether ``holder`` is still the host's entry (a takeover may be stale)."""
        return Holder.decode(await self.redis.get(_HOST + host_id)) == holder

    async def where(self, host_id: str) -> Holder | None:
        """Who holds ``host_id`` now. Asked while a lookup is out, it joins the next one: after
        a node dies its devices reopen their channels all at once, and a round trip each cost
        the node more CPU than the rest of the open; alone it goes at once."""
        waiter: asyncio.Future[Holder | None] = asyncio.get_running_loop().create_future()
        self._wanted.setdefault(host_id, []).append(waiter)
        if self._looking is None:
            self._looking = asyncio.get_running_loop().create_task(self._look_up())
        return await waiter

    async def _look_up(self) -> None:
        try:
            while self._wanted:
                wanted, self._wanted = self._wanted, {}
                ids = list(wanted)
                try:
                    if len(ids) == 1:
                        holders = [Holder.decode(await self.redis.get(_HOST + ids[0]))]
                    else:
                        holders = await self.where_many(ids)
                except Exception as exc:  # each asker gets it: Redis trouble, or worse
                    for waiters in wanted.values():
                        for waiter in waiters:
                            if not waiter.done():
                                waiter.set_exception(exc)
                    continue
                for host_id, holder in zip(ids, holders, strict=True):
                    for waiter in wanted[host_id]:
                        if not waiter.done():
                            waiter.set_result(holder)
        finally:
            self._looking = None

    async def url_of(self, node: str) -> str | None:
        value = await self.redis.get(_NODE + node)
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else value

    async def node_alive(self, node: str) -> bool:
        return bool(await self.redis.exists(_NODE + node))

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
        """Refresh this node's key and every host entry it holds (put back if Redis lost them).
        A chunk that fails does not stop the others; the first error is raised at the end."""
        await self.redis.set(_NODE + self.node_id, self.advertise_url, px=TTL_MS)
        now_ms = int(time.time() * 1000)
        await self.redis.zadd(_NODES, {self.node_id: now_ms + TTL_MS})
        await self.redis.zremrangebyscore(_NODES, "-inf", now_ms)
        held = list(self.held.items())
        failed: Exception | None = None
        for start in range(0, len(held), CHUNK):
            chunk = held[start:start + CHUNK]
            try:
                try:
                    await self._refresh_hosts(chunk)
                except NoScriptError:  # Redis restarted and forgot the scripts: load them, once more
                    for script in (_REFRESH, _REFRESH_MANY):
                        await self.redis.script_load(script.text)
                    await self._refresh_hosts(chunk)
            except Exception as exc:  # RedisError, OSError, TimeoutError: the next chunk may pass
                failed = failed or exc
        if failed is not None:
            raise failed

    async def _refresh_hosts(self, held: list[tuple[str, Holder]]) -> None:
        if isinstance(self.redis, RedisCluster):
            kept = await self._refresh_each(held)
        else:
            kept = await self._refresh_together(held)
        # an allowlist Redis lost (a restart) is written again
        again: list[tuple[str, Args]] = [
            (_ALLOW + host_id, (TTL_MS, b"".join(keys)))
            for (host_id, _), there in zip(held, kept, strict=True)
            if not there and (keys := self.allowlists.get(host_id))
        ]
        if again:
            await _ALLOW_SET.run_many(self.redis, again)

    async def _refresh_each(self, held: list[tuple[str, Holder]]) -> list[bool]:
        """Redis Cluster: a script call and a PEXPIRE per host (each routed to the host's shard).
        Whether each host's allowlist key was still there."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for host_id, mine in held:
                pipe.evalsha(_REFRESH.sha, 1, _HOST + host_id, mine.encode(), TTL_MS)
                pipe.pexpire(_ALLOW + host_id, TTL_MS)
            results = await pipe.execute()
        return [bool(there) for there in results[1::2]]

    async def _refresh_together(self, held: list[tuple[str, Holder]]) -> list[bool]:
        """One server: the whole chunk in one script call (a command per host cost the node a
        quarter of a core for 16,000 idle hosts). Whether each host's allowlist key was still there."""
        keys = [_HOST + host_id for host_id, _ in held] + [_ALLOW + host_id for host_id, _ in held]
        lost = await self.redis.evalsha(_REFRESH_MANY.sha, len(keys), *keys, TTL_MS, *(m.encode() for _, m in held))
        kept = [True] * len(held)
        for index in lost if isinstance(lost, list) else ():
            kept[int(index) - 1] = False
        return kept

    async def leave(self) -> None:
        """This node stops: its entries go now rather than when they expire."""
        for host_id in list(self.held):
            self.host_gone(host_id)
        await self.write()
        await self.redis.delete(_NODE + self.node_id)
        await self.redis.zrem(_NODES, self.node_id)
