"""The mailbox of a relay cluster, in Redis: what hosts that are away left for devices, and what
devices queued for them, reachable from every node (ARCHITECTURE §8b, §9).

The same requests, answers and bounds as one relay's SQLite mailbox (``relay/mailbox.py``); only
the store differs. Each host's keys share a hash tag, ``tether:mb:{HOST}:…``, so that on Redis
Cluster they sit in one slot and every request is one Lua script, atomic as the SQLite
transaction is:

- ``allow``: the host's last published allowlist, the 32-byte device keys joined;
- ``snap`` / ``snapat``: per device key, the sealed snapshot and when it was deposited (ms);
- ``items``: per queued item, the sealed blob under the field ``ID|MS|DEVICEKEY`` (its id, when it
  was queued, whose it is: what the scripts need without reading the blobs); ``next`` its ids.

Every key lives ``host_ttl`` after the host's last publish or deposit (a device's item keeps
the items alive, not the allowlist): a host long gone is forgotten by Redis. An item older than
``item_ttl`` is dropped when the host's items are next read or added to. The whole mailbox's
bound (``total_bytes``) is not counted here: on Redis it is the server's ``maxmemory``
(docs/cluster.md), past which writes fail and are answered MAILBOX_OFF.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import NoScriptError

from tether.lograte import LogLimiter
from tether.protocol.frames import CloseCode
from tether.relay.cluster.redis_client import TROUBLE, Client
from tether.relay.cluster.scripts import Args, Script
from tether.relay.mailbox import Item, MailboxLimits, MailboxRefused

log = logging.getLogger("tether.relay.cluster")

# Mailbox scripts in flight at once per node. redis-py's asyncio pool raises past 100
# connections, and a burst of hosts (a failover) publishes an allowlist each: unbounded, the
# mailbox would take the connections the node's presence and bus need (node.REDIS_TASKS is 64).
IN_FLIGHT = 16
# Allowlists wait this long (s) for others to join their pipeline: a pipeline costs redis-py
# CPU whatever it holds. Hosts arriving as in a failover (one per 1.5 ms) cost the node 270-310 us
# each with a pipeline per loop pass, 80-110 us gathered for 50 ms (docs/benchmarks.md).
PUBLISH_GATHER = 0.05

_PREFIX = "tether:mb:{"

# Redis 7 script flags. A request that may grow the mailbox is refused whole, before it runs, when
# Redis is past its maxmemory (without flags a script would stop at its first write that needs
# memory, keeping the deletes it made before). One that reads or shrinks it always runs: an
# allowlist published while Redis is full must still cut the devices it dropped.
_GROWS = "#!lua\n"
_SHRINKS = "#!lua flags=allow-oom\n"

# Lua helpers every script starts with: the allowlist as a set; a host's bytes held; the fields
# of its items, parsed.
_COMMON = """
local function listed(blob)
  local set = {}
  if blob then
    for i = 1, #blob, 32 do set[string.sub(blob, i, i + 31)] = true end
  end
  return set
end
local function parse(field)
  local bar1 = string.find(field, '|', 1, true)
  local bar2 = string.find(field, '|', bar1 + 1, true)
  return tonumber(string.sub(field, 1, bar1 - 1)), tonumber(string.sub(field, bar1 + 1, bar2 - 1)),
    string.sub(field, bar2 + 1)
end
local function host_bytes(snap, items)
  local used = 0
  for _, f in ipairs(redis.call('HKEYS', snap)) do used = used + redis.call('HSTRLEN', snap, f) end
  for _, f in ipairs(redis.call('HKEYS', items)) do used = used + redis.call('HSTRLEN', items, f) end
  return used
end
-- the oldest snapshots (other than keep's) that must go for size more bytes to fit in limit;
-- nil when they do not fit even with every snapshot gone
local function room(snap, snapat, items, size, limit, keep)
  local used = host_bytes(snap, items)
  if keep and redis.call('HEXISTS', snap, keep) == 1 then used = used - redis.call('HSTRLEN', snap, keep) end
  local olds = {}
  local at = redis.call('HGETALL', snapat)
  for i = 1, #at, 2 do
    if at[i] ~= keep then table.insert(olds, {tonumber(at[i + 1]), at[i]}) end
  end
  table.sort(olds, function(a, b) return a[1] < b[1] end)
  local drop, n = {}, 1
  while used + size > limit do
    local oldest = olds[n]
    if not oldest then return nil end
    used = used - redis.call('HSTRLEN', snap, oldest[2])
    table.insert(drop, oldest[2])
    n = n + 1
  end
  return drop
end
local function expire_all(ttl, from)
  for i = from, #KEYS do redis.call('PEXPIRE', KEYS[i], ttl) end
end
"""

# KEYS allow snap snapat items next; ARGV allowlist ttl_ms
_PUBLISH = Script(_SHRINKS + _COMMON + """
redis.call('SET', KEYS[1], ARGV[1])
local set = listed(ARGV[1])
for _, d in ipairs(redis.call('HKEYS', KEYS[2])) do
  if not set[d] then redis.call('HDEL', KEYS[2], d); redis.call('HDEL', KEYS[3], d) end
end
for _, f in ipairs(redis.call('HKEYS', KEYS[4])) do
  local _, _, d = parse(f)
  if not set[d] then redis.call('HDEL', KEYS[4], f) end
end
expire_all(ARGV[2], 1)
return 1
""")

# KEYS allow snap snapat items next; ARGV device sealed now_ms host_bytes ttl_ms
_DEPOSIT = Script(_GROWS + _COMMON + """
if not listed(redis.call('GET', KEYS[1]))[ARGV[1]] then return 'not allowed' end
local size = #ARGV[2]
if size == 0 then
  redis.call('HDEL', KEYS[2], ARGV[1]); redis.call('HDEL', KEYS[3], ARGV[1])
  return 'ok'
end
local drop = room(KEYS[2], KEYS[3], KEYS[4], size, tonumber(ARGV[4]), ARGV[1])
if not drop then return 'full' end
for _, d in ipairs(drop) do redis.call('HDEL', KEYS[2], d); redis.call('HDEL', KEYS[3], d) end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
expire_all(ARGV[5], 1)
return 'ok'
""")

# KEYS allow snap snapat; ARGV device → {deposited ms, sealed} or {}
_SNAPSHOT = Script(_SHRINKS + _COMMON + """
if not listed(redis.call('GET', KEYS[1]))[ARGV[1]] then return {} end
local sealed = redis.call('HGET', KEYS[2], ARGV[1])
if not sealed then return {} end
return {redis.call('HGET', KEYS[3], ARGV[1]), sealed}
""")

# KEYS allow snap snapat items next; ARGV device sealed now_ms device_items device_bytes
# host_bytes ttl_ms item_ttl_ms → {id} or {why, count}
_QUEUE = Script(_GROWS + _COMMON + """
if not listed(redis.call('GET', KEYS[1]))[ARGV[1]] then return {'not allowed', 0} end
local now, size = tonumber(ARGV[3]), #ARGV[2]
local count, bytes = 0, 0
for _, f in ipairs(redis.call('HKEYS', KEYS[4])) do
  local _, at, d = parse(f)
  if at < now - tonumber(ARGV[8]) then
    redis.call('HDEL', KEYS[4], f)
  elseif d == ARGV[1] then
    count = count + 1
    bytes = bytes + redis.call('HSTRLEN', KEYS[4], f)
  end
end
if count >= tonumber(ARGV[4]) or bytes + size > tonumber(ARGV[5]) then return {'device full', count} end
local drop = room(KEYS[2], KEYS[3], KEYS[4], size, tonumber(ARGV[6]), false)
if not drop then return {'host full', count} end
for _, d in ipairs(drop) do redis.call('HDEL', KEYS[2], d); redis.call('HDEL', KEYS[3], d) end
local id = redis.call('INCR', KEYS[5])
redis.call('HSET', KEYS[4], id .. '|' .. ARGV[3] .. '|' .. ARGV[1], ARGV[2])
expire_all(ARGV[7], 2)  -- a device's item does not keep the host's allowlist
return {id}
""")

# KEYS items; ARGV now_ms item_ttl_ms → field, sealed, … (those not past their age; the others dropped)
_ITEMS = Script(_SHRINKS + _COMMON + """
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local _, at, _ = parse(all[i])
  if at < tonumber(ARGV[1]) - tonumber(ARGV[2]) then
    redis.call('HDEL', KEYS[1], all[i])
  else
    table.insert(out, all[i]); table.insert(out, all[i + 1])
  end
end
return out
""")

# KEYS items; ARGV ids…
_ACK = Script(_SHRINKS + _COMMON + """
local acked = {}
for _, id in ipairs(ARGV) do acked[tonumber(id)] = true end
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  local id = parse(f)
  if acked[id] then redis.call('HDEL', KEYS[1], f) end
end
return 1
""")


_FAILED = "the relay's mailbox cannot take this now (its store failed); try again later"


def _keys(host_id: str, *names: str) -> list[str]:
    return [f"{_PREFIX}{host_id}}}:{name}" for name in names]


_ALL = ("allow", "snap", "snapat", "items", "next")


class SharedMailbox:
    """The cluster's mailbox (see the module's docstring); the relay's ``Mailbox`` methods."""

    def __init__(self, redis: Client, limits: MailboxLimits) -> None:
        self.redis = redis
        self.limits = limits
        self._ttl_ms = int(limits.host_ttl * 1000)
        self._quiet = LogLimiter(log, 60.0)
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._publishing: list[tuple[str, frozenset[bytes], asyncio.Future[None]]] = []
        self._publisher: asyncio.Task[None] | None = None

    async def close(self) -> None:
        """Stop publishing (the Redis client is the cluster node's)."""
        if self._publisher is not None:
            self._publisher.cancel()

    async def sweep(self) -> None:
        """Nothing to sweep: Redis forgets a host's keys ``host_ttl`` after its last write, and
        items past their age go when the host's items are next read or added to."""

    async def _run(self, script: Script, keys: list[str], args: Args) -> object:
        """The script's answer; Redis failing (unreachable, or full past its ``maxmemory``) is
        the request refused with MAILBOX_OFF, said to the operator once a minute."""
        try:
            async with self._slots:
                return await script.run(self.redis, keys, args)
        except TROUBLE as exc:
            self._quiet.log(logging.WARNING, "mailbox", "the cluster's mailbox in Redis failed: %s", exc)
            raise MailboxRefused(CloseCode.MAILBOX_OFF, _FAILED) from None

    async def publish(self, host_id: str, keys: frozenset[bytes]) -> None:
        """The host's allowlist now: devices that left it lose their slot and their queued items.

        Sent within ``PUBLISH_GATHER``, with the other hosts' published meanwhile, as one
        pipeline; what comes while it is out goes in the next. A host publishes one as it
        connects, so a failover brings thousands at once, and a round trip each cost the node
        more CPU than the scripts themselves."""
        done = asyncio.get_running_loop().create_future()
        self._publishing.append((host_id, keys, done))
        if self._publisher is None:
            self._publisher = asyncio.get_running_loop().create_task(self._publish_queued())
        await done

    async def _publish_queued(self) -> None:
        try:
            while self._publishing:
                await asyncio.sleep(PUBLISH_GATHER)  # the hosts admitted meanwhile join
                batch, self._publishing = self._publishing, []
                try:
                    async with self._slots:
                        results = await self._publish_many(batch)
                except TROUBLE as exc:
                    results = [exc] * len(batch)
                for (_, _, done), result in zip(batch, results, strict=True):
                    if done.done():
                        continue
                    if isinstance(result, Exception):
                        self._quiet.log(logging.WARNING, "mailbox", "the cluster's mailbox in Redis failed: %s", result)
                        done.set_exception(MailboxRefused(CloseCode.MAILBOX_OFF, _FAILED))
                    else:
                        done.set_result(None)
        finally:
            self._publisher = None

    async def _publish_many(self, batch: list[tuple[str, frozenset[bytes], asyncio.Future[None]]]) -> list[object]:
        async def pipeline() -> list[object]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for host_id, keys, _ in batch:
                    pipe.evalsha(_PUBLISH.sha, len(_ALL), *_keys(host_id, *_ALL), b"".join(sorted(keys)),
                                 self._ttl_ms)
                return list(await pipe.execute(raise_on_error=False))

        results = await pipeline()
        if any(isinstance(r, NoScriptError) for r in results):  # Redis restarted and forgot it
            await self.redis.script_load(_PUBLISH.text)
            results = await pipeline()
        return results

    async def deposit(self, host_id: str, device_key: bytes, sealed: bytes) -> None:
        """The host's snapshot for one device (empty: none any more)."""
        lim = self.limits
        if len(sealed) > lim.host_bytes:
            raise MailboxRefused.snapshot_too_large(len(sealed), lim.host_bytes)
        why = await self._run(_DEPOSIT, _keys(host_id, *_ALL),
                              (device_key, sealed, _now_ms(), lim.host_bytes, self._ttl_ms))
        if why == b"not allowed":
            raise MailboxRefused.not_allowed()
        if why == b"full":
            raise MailboxRefused.host_full()

    async def snapshot(self, host_id: str, device_key: bytes) -> tuple[float, bytes] | None:
        """(when it was deposited, the sealed snapshot) the host left for this device, if any; None
        as well for a device not on the host's allowlist (it learns nothing)."""
        held = await self._run(_SNAPSHOT, _keys(host_id, "allow", "snap", "snapat"), (device_key,))
        if not isinstance(held, list) or len(held) != 2:
            return None
        at, sealed = held
        return int(at) / 1000, bytes(sealed)

    async def queue(self, host_id: str, device_key: bytes, sealed: bytes) -> Item:
        """Hold a device's sealed item for the host; its id and time."""
        lim = self.limits
        if len(sealed) > lim.device_bytes:
            raise MailboxRefused.item_too_large(len(sealed), lim.device_bytes)
        now = _now_ms()
        answer = await self._run(_QUEUE, _keys(host_id, *_ALL), (
            device_key, sealed, now, lim.device_items, lim.device_bytes, lim.host_bytes, self._ttl_ms,
            int(lim.item_ttl * 1000)))
        assert isinstance(answer, list)
        if len(answer) == 1:
            return Item(int(answer[0]), device_key, now / 1000, sealed)
        why, count = answer
        if why == b"not allowed":
            raise MailboxRefused.no_mailbox_for()
        if why == b"device full":
            raise MailboxRefused.device_full(count)
        raise MailboxRefused.queue_full()

    async def items(self, host_id: str) -> list[Item]:
        """What devices queued for the host, oldest first."""
        flat = await self._run(_ITEMS, _keys(host_id, "items"), (_now_ms(), int(self.limits.item_ttl * 1000)))
        assert isinstance(flat, list)
        items = []
        for field, sealed in zip(flat[::2], flat[1::2], strict=True):
            id, at, device = bytes(field).split(b"|", 2)
            items.append(Item(int(id), device, int(at) / 1000, bytes(sealed)))
        return sorted(items, key=lambda item: item.id)

    async def ack(self, host_id: str, ids: tuple[int, ...]) -> None:
        """The host is done with these items (its own only)."""
        if ids:
            await self._run(_ACK, _keys(host_id, "items"), ids)


def _now_ms() -> int:
    return int(time.time() * 1000)
