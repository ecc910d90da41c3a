"""A burst of host connections to one node, as a node's restart, a failover or a load balancer's
restart makes: every host becomes reachable from the other nodes, and channels already crossing
nodes go on. (bench/cluster.py found both broken: each host's presence write took its own pooled
Redis connection, redis-py refused past 100, and the node took that for Redis trouble and closed
every cross-node channel.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.support.cluster_nodes import Node, metrics, running_nodes, wait_until
from tests.support.redis_server import RedisServer
from tether.crypto.keys import Identity
from tether.errors import TetherError
from tether.relay.link import Channel, RelayLink

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(180)]

BURST = 1000  # hosts connecting to one node at once
IN_FLIGHT = 250  # handshakes at once from this process (the node's listen backlog is 100 per pass)


@pytest.fixture
def nodes(redis_server: RedisServer) -> Iterator[list[Node]]:
    # every test connection comes from 127.0.0.1: the per-address limits would admit 20 a second
    with running_nodes([redis_server.url], extra=("--exempt-loopback",)) as started:
        yield started


async def open_when_present(device: RelayLink, host_id: str) -> Channel:
    """The device opens a channel to ``host_id`` once the host's node has written its presence."""
    async with asyncio.timeout(15):
        while True:
            try:
                return await device.open(host_id)
            except TetherError:
                await asyncio.sleep(0.1)


async def test_a_burst_of_host_connections_reaches_redis_whole_and_leaves_cross_node_channels_alone(
    nodes: list[Node], redis_server: RedisServer
) -> None:
    one, two = nodes
    host, device = Identity.generate(), Identity.generate()
    allow = [device.identity_public]
    links: list[RelayLink] = []
    try:
        links.append(host_link := await RelayLink.connect(one.url, host, "host"))
        await host_link.publish_allowlist(allow)
        links.append(device_link := await RelayLink.connect(two.url, device, "device"))
        channel = await open_when_present(device_link, host_link.id)
        accepted = await host_link.accept()
        await channel.send(b"before")
        assert await accepted.recv() == b"before"

        gate = asyncio.Semaphore(IN_FLIGHT)

        async def one_host() -> RelayLink:
            async with gate:
                link = await RelayLink.connect(one.url, Identity.generate(), "host")
                await link.publish_allowlist(allow)
                return link

        async with asyncio.timeout(120):
            burst = await asyncio.gather(*(one_host() for _ in range(BURST)))
        links += burst

        def present() -> bool:
            with redis_server.client() as r:
                values = r.mget([f"tether:host:{link.id}" for link in burst])
            return all(v is not None and v.startswith(b"node-1 ") for v in values)

        wait_until("every host of the burst in Redis, on node 1", present, timeout=30)
        # the channel that crossed nodes before the burst still carries frames both ways
        await channel.send(b"after")
        assert await accepted.recv() == b"after"
        await accepted.send(b"back")
        assert await channel.recv() == b"back"
        assert "cluster trouble" not in one.proc.log, one.proc.log[-2000:]
        assert metrics(one)["tether_relay_cluster_trouble"] == 0
        assert metrics(one)["tether_relay_cluster_hosts_held"] == BURST + 1
        # each host's wait for its entry counted once (when the node has read Redis's answer,
        # a moment after the entries are there), in buckets that only grow (Prometheus's form)
        waits = "tether_relay_cluster_presence_write_seconds"
        wait_until("every host's wait counted", lambda: metrics(one)[f"{waits}_count"] >= BURST + 1, timeout=10)
        figures = metrics(one)
        assert figures[f"{waits}_count"] == figures[f'{waits}_bucket{{le="+Inf"}}'] == BURST + 1
        counts = [n for name, n in figures.items() if name.startswith(f"{waits}_bucket")]
        assert len(counts) == 9 and counts == sorted(counts) and 0 < figures[f"{waits}_sum"] < 30 * (BURST + 1)
        # and a device on the other node reaches hosts of the burst
        for link in (burst[0], burst[-1]):
            opened = await open_when_present(device_link, link.id)
            got = await link.accept()
            await opened.send(b"hello")
            assert await got.recv() == b"hello"
    finally:
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)
