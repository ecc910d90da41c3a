"""The bus's listener (cluster/bus.py) against a real 3-master Redis Cluster, when redis-py raises
what is not a ``RedisError``: ``RedisClusterException`` and its kin come out of a topology refresh
that cannot map the cluster (a master restarting, say). The listener must count the subscription
lost, subscribe again and hear records again — it once ended instead, and the node refused every
cross-node channel from then on ("cannot reach its cluster's Redis") until it was restarted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.exceptions import RedisClusterUnreachableError, SlotNotCoveredError

from tests.support.redis_server import RedisCluster
from tether.relay.cluster.bus import Bus, channel_of
from tether.relay.cluster.records import Kind, Record
from tether.relay.cluster.redis_client import Client, connect

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]


class Ends:
    """Two buses on one Redis Cluster: ``node-a`` sends, ``node-b`` listens."""

    def __init__(self, redis: Client) -> None:
        self.heard: list[Record] = []
        self.troubles: list[str] = []
        self.healed = asyncio.Event()

        def nothing(*_: Any) -> None:
            pass

        self.a = Bus(redis, "node-a", nothing, nothing, nothing, nothing, nothing)
        self.b = Bus(redis, "node-b", lambda _, records: self.heard.extend(records), self.troubles.append,
                     self.healed.set, nothing, nothing)

    async def heard_again(self, n: int) -> None:
        """node-a's record ``n`` reaches node-b (sent again until it does: one sent while node-b
        is not subscribed is lost, which the bus tells the sender's node)."""
        record = Record(Kind.HOST_CHANGED, 0, f"host-{n}".encode())
        async with asyncio.timeout(15):
            while record not in self.heard:
                self.a.send("node-b", record)
                await asyncio.sleep(0.1)


@pytest.fixture
async def ends(redis_cluster: RedisCluster) -> AsyncIterator[Ends]:
    redis = await connect(redis_cluster.seeds)
    made = Ends(redis)
    await made.a.start()
    await made.b.start()
    try:
        yield made
    finally:
        await made.a.close()
        await made.b.close()
        await redis.aclose()


def fails_once(real: Callable[..., Any], exc: Exception) -> Callable[..., Any]:
    """``real``, but its first call raises ``exc``."""
    calls = 0

    async def call(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise exc
        return await real(*args)

    return call


async def test_a_read_that_raises_a_cluster_exception_is_a_lost_subscription(
    ends: Ends, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ends.heard_again(1)
    unreachable = RedisClusterUnreachableError("Redis Cluster cannot be connected. Please provide at least one node")
    monkeypatch.setattr(ends.b, "_next", fails_once(ends.b._next, unreachable))
    await asyncio.wait_for(ends.healed.wait(), 15)
    assert ends.troubles and "cannot be connected" in ends.troubles[0]
    assert ends.b.subscribed and ends.b.dropped_subscriptions == 1
    await ends.heard_again(2)


async def test_a_resubscription_that_raises_a_cluster_exception_is_tried_again(
    ends: Ends, redis_cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ends.heard_again(1)
    monkeypatch.setattr(ends.b, "_subscribe", fails_once(ends.b._subscribe, SlotNotCoveredError("Slot 1 not covered")))
    # Redis drops node-b's subscription; its first attempt to subscribe again fails as redis-py
    # does while a master is away
    redis_cluster.owner(channel_of("node-b")).execute("CLIENT", "KILL", "TYPE", "pubsub")
    await asyncio.wait_for(ends.healed.wait(), 15)
    assert ends.b.subscribed and ends.b.dropped_subscriptions == 1
    await ends.heard_again(2)
