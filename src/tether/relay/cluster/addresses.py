"""New connections per source address, limited over every node of a cluster as on one relay.

Each node keeps its own per-address limits (``limits.AddressTable``, checked at accept); a
connection they let in then takes a token from one bucket per address kept in Redis, with one
relay's rate and burst, before its upgrade is answered (``http.Front``). The takes of one event
loop pass go to Redis as one pipeline. A flood spread over the nodes thus gets one relay's
allowance; the local limits still bound what reaches Redis. When Redis does not answer within
``TIMEOUT`` the connection is let in (the local limits hold alone), and so are the next ones for
``REST_SECONDS``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from tether.lograte import LogLimiter
from tether.relay.cluster.redis_client import TROUBLE, Client
from tether.relay.cluster.scripts import Script
from tether.relay.limits import RelayLimits

log = logging.getLogger("tether.relay.cluster")

TIMEOUT = 1.0
# after Redis failed to answer, upgrades are let in without asking it for this long (a frozen Redis
# would otherwise make every upgrade wait TIMEOUT)
REST_SECONDS = 5.0
_KEY = "tether:addr:"

# KEYS[1] the address's bucket; ARGV: tokens wanted, rate, burst → tokens granted. Redis's
# clock, so that the nodes' clocks do not matter.
_TAKE = Script("""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local rate, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local granted = math.max(0, math.min(tonumber(ARGV[1]), math.floor(tokens)))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return granted
""")


class SharedAddresses:
    """See the module's docstring."""

    def __init__(self, redis: Client, limits: RelayLimits) -> None:
        self.redis = redis
        self.rate = limits.connections_per_ip_per_second
        self.burst = limits.connections_per_ip_burst
        self._waiting: list[tuple[str, asyncio.Future[bool]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._resting_until = 0.0
        self._quiet = LogLimiter(log)

    async def take(self, key: str) -> str | None:
        """One new connection from ``key``: why the cluster's shared limit refuses it, or None."""
        loop = asyncio.get_running_loop()
        if self.rate <= 0 or loop.time() < self._resting_until:
            return None
        future: asyncio.Future[bool] = loop.create_future()
        if not self._waiting:
            asyncio.get_running_loop().call_soon(self._flush)
        self._waiting.append((key, future))
        try:
            async with asyncio.timeout(TIMEOUT):
                granted = await asyncio.shield(future)
        except TimeoutError:
            self._resting_until = loop.time() + REST_SECONDS
            return None
        return None if granted else f"too many new connections from {key}; retry in a few seconds"

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._take_all(waiting))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _take_all(self, waiting: Sequence[tuple[str, asyncio.Future[bool]]]) -> None:
        wanted: dict[str, int] = {}
        for key, _ in waiting:
            wanted[key] = wanted.get(key, 0) + 1
        keys = list(wanted)
        try:
            granted = await _TAKE.run_many(self.redis, [(_KEY + k, (wanted[k], self.rate, self.burst)) for k in keys])
        except TROUBLE as exc:
            self._quiet.log(logging.WARNING, "addresses", "cannot share address limits through Redis: %s", exc)
            self._resting_until = asyncio.get_running_loop().time() + REST_SECONDS
            granted = list(wanted.values())  # let them in: the local limits still hold
        left = {key: int(n) if isinstance(n, int | str | bytes) else 0 for key, n in zip(keys, granted, strict=True)}
        for key, future in waiting:
            if not future.done():
                future.set_result(left[key] > 0)
            left[key] -= 1
