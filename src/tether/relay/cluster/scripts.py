"""Lua scripts run in Redis by many keys at once: one pipeline of EVALSHA (routed by key on
Redis Cluster), loading the script once more when Redis forgot it (a restart)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from redis.exceptions import NoScriptError

from tether.relay.cluster.redis_client import Client

Args = Sequence[bytes | str | int | float]
# calls per pipeline: a node holding many hosts refreshes them in a few round trips, not one
CHUNK = 1000


class Script:
    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()

    async def run(self, redis: Client, keys: Sequence[str], args: Args) -> object:
        """The script's result for one call on ``keys`` (all in one slot on Redis Cluster)."""
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await redis.script_load(self.text)
            return await redis.evalsha(self.sha, len(keys), *keys, *args)

    async def run_many(self, redis: Client, calls: Sequence[tuple[str, Args]]) -> list[object]:
        """The script's result for each (key, args), in order."""
        results: list[object] = []
        for start in range(0, len(calls), CHUNK):
            chunk = calls[start:start + CHUNK]
            try:
                results += await self._pipeline(redis, chunk)
            except NoScriptError:
                await redis.script_load(self.text)
                results += await self._pipeline(redis, chunk)
        return results

    async def _pipeline(self, redis: Client, calls: Sequence[tuple[str, Args]]) -> list[object]:
        async with redis.pipeline(transaction=False) as pipe:
            for key, args in calls:
                pipe.evalsha(self.sha, 1, key, *args)
            return list(await pipe.execute())
