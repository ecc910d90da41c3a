"""A takeover (another node holds a newer connection of a host held here) that cannot ask Redis
whether it still stands is asked again, rather than leaving the older connection up: after a Redis
restart the older node's refresh could take the host's key back."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tether.crypto.keys import Identity
from tether.protocol.frames import CloseCode, Role
from tether.relay.cluster import node as node_module
from tether.relay.cluster.node import ClusterNode
from tether.relay.cluster.presence import Holder
from tether.relay.cluster.redis_client import Client
from tether.relay.limits import RelayLimits
from tether.relay.router import Fail, Router

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(30)]


class Shell:
    """The relay a node is part of, reduced to its router (what it decides is kept)."""

    def __init__(self) -> None:
        self.limits = RelayLimits()
        self.router: Router[object] = Router(self.limits, elsewhere=True)
        self.actions: list[object] = []

    def act(self) -> None:
        self.actions += self.router.take()


async def test_a_takeover_redis_cannot_confirm_is_asked_again_and_then_closes_the_older_connection(
    redis: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_module, "REFRESH_SECONDS", 0.05)
    shell = Shell()
    node = ClusterNode(shell, redis, "node-a", "http://a")  # type: ignore[arg-type]
    host = Identity.generate()
    peer = shell.router.connect(object(), Role.HOST, host.identity_public, host.id)
    newer = Holder("node-b", "0123456789abcdef")
    await redis.set(f"tether:host:{host.id}", newer.encode())
    answers = iter([RedisConnectionError("Connection reset by peer"), RedisConnectionError("timed out")])
    real = node.presence.still_holds

    async def flaky(host_id: str, holder: Holder) -> bool:
        failure = next(answers, None)
        if failure is not None:
            raise failure
        return await real(host_id, holder)

    monkeypatch.setattr(node.presence, "still_holds", flaky)
    node._spawn(node._takeover(host.id, newer))
    async with asyncio.timeout(5):
        while not any(isinstance(a, Fail) for a in shell.actions):
            await asyncio.sleep(0.02)
    [fail] = [a for a in shell.actions if isinstance(a, Fail)]
    assert fail.peer is peer and fail.code is CloseCode.REPLACED
    assert next(answers, None) is None  # both failures were met first
    await node.close()


async def test_a_takeover_that_no_longer_stands_leaves_the_connection(redis: Client) -> None:
    shell = Shell()
    node = ClusterNode(shell, redis, "node-a", "http://a")  # type: ignore[arg-type]
    host = Identity.generate()
    shell.router.connect(object(), Role.HOST, host.identity_public, host.id)
    await redis.set(f"tether:host:{host.id}", Holder("node-a", "fedcba9876543210").encode())  # ours again
    await node._takeover(host.id, Holder("node-b", "0123456789abcdef"))
    shell.act()
    assert host.id in shell.router.hosts and not any(isinstance(a, Fail) for a in shell.actions)
    await node.close()
