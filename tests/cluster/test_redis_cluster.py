"""Cluster mode on a Redis Cluster of 3 masters (``cluster-enabled yes``, started by the test)
instead of one redis-server: the relay nodes get the masters as ``--cluster`` seeds, and pairing
across nodes, a session driven across nodes, steering and a cross-node stream work as they do on
one server; the presence keys and the nodes' bus channels land on the cluster's shards."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest
from redis.cluster import key_slot

from tests.procs import tether, tether_json
from tests.support.cluster_nodes import (
    Deployment,
    Node,
    RetryLog,
    events_until,
    host_and_device,
    hosts_file,
    metrics,
    record_retries,
    running_nodes,
    ticking,
    unreachable_url,
    wait_until,
)
from tests.support.redis_server import RedisCluster, RedisServer
from tether.protocol.frames import CloseCode

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(150)]

SENT = 'tether_relay_cluster_records_total{direction="sent"}'
DROPS = "tether_relay_cluster_subscription_drops_total"
TO_OTHER = 'tether_relay_channels{path="to_other_node"}'
FROM_OTHER = 'tether_relay_channels{path="from_other_node"}'


@pytest.fixture
def retry_log(monkeypatch: pytest.MonkeyPatch) -> RetryLog:
    return record_retries(monkeypatch)


def get(node: RedisServer, key: str) -> bytes | None:
    with node.client() as r:
        value = r.execute_command("GET", key)
    assert value is None or isinstance(value, bytes)
    return value


def shard_subscribers(node: RedisServer, channel: str) -> int:
    with node.client() as r:
        reply = r.execute_command("PUBSUB", "SHARDNUMSUB", channel)
    counts = dict(zip(reply[::2], reply[1::2], strict=True)) if isinstance(reply, list) else dict(reply)
    return int(counts[channel.encode()])


def test_pairing_a_session_and_steering_across_nodes_on_a_redis_cluster(redis_cluster: RedisCluster) -> None:
    """As tests/cluster/test_cross_node.py on one server: the device pairs through node 2, its
    first command crosses nodes and it is steered to node 1, where the host is."""
    with running_nodes(redis_cluster.seeds) as (one, two), host_and_device(one, two) as deployment:
        client_home = deployment.client_home
        [entry] = hosts_file(client_home)
        assert entry["relay_url"] == two.origin and not entry.get("node_url")
        assert metrics(two)[SENT] > 0, "the pairing went through the bus"

        session_id = tether_json(client_home, "sessions", "start", "--agent", "pty", "--json", "--", "bash")["id"]
        [entry] = hosts_file(client_home)
        assert entry["node_url"] == one.origin, "steered to the host's node"
        n = random.randrange(10**9)
        tether(client_home, "sessions", "send", session_id, f"echo cluster-$(({n}+1))")
        events = events_until(client_home, session_id, f"cluster-{n + 1}")
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

        # Presence is in the cluster: each key on the master that holds its slot.
        host_key = f"tether:host:{deployment.host_id}"
        holder = get(redis_cluster.owner(host_key), host_key)
        assert holder is not None and holder.startswith(b"node-1 ")
        masters = set()
        for node, url in ((one, one.origin), (two, two.origin)):
            key = f"tether:node:{node.node_id}"
            master = redis_cluster.owner(key)
            masters.add(master.port)
            assert get(master, key) == url.encode()
            # and each node listens on its own shard channel, on the master of that channel
            channel = f"tether:bus:{node.node_id}"
            assert shard_subscribers(redis_cluster.owner(channel), channel) == 1
        assert len(masters) == 2, "node-1's and node-2's keys hash to different masters"
        assert all(metrics(node)["tether_relay_cluster_trouble"] == 0 for node in (one, two))


@pytest.fixture
def cross_node(redis_cluster: RedisCluster) -> Iterator[tuple[list[Node], Deployment]]:
    """Node 1 advertises an address nothing listens on: steering fails, and the device's channel
    stays across nodes, over the cluster's sharded pub/sub."""
    with (running_nodes(redis_cluster.seeds, {"node-1": unreachable_url()}) as nodes,
          host_and_device(nodes[0], nodes[1]) as deployment):
        yield nodes, deployment


async def test_a_cross_node_stream_over_a_redis_cluster_arrives_whole(
    cross_node: tuple[list[Node], Deployment], retry_log: RetryLog
) -> None:
    """A device on node 2 follows a session of the host on node 1 for 2,000 lines and more: every
    line once, in order, and the channel never closed."""
    (one, two), deployment = cross_node
    async with ticking(deployment) as follower:
        await follower.lines(2000, timeout=60)
        assert metrics(two)[TO_OTHER] == 1 and metrics(one)[FROM_OTHER] == 1
    follower.assert_whole()
    assert not retry_log.errors, "the channel never closed"
    # 2,000 lines or more came in 100 or more events, each one record or more through the bus
    assert metrics(one)[SENT] > 50 and metrics(two)['tether_relay_cluster_records_total{direction="received"}'] > 50
    wait_until("no channel left", lambda: metrics(one)[FROM_OTHER] == 0 and metrics(two)[TO_OTHER] == 0)


async def test_a_master_restarted_during_a_cross_node_stream(
    redis_cluster: RedisCluster, cross_node: tuple[list[Node], Deployment], retry_log: RetryLog
) -> None:
    """The master that holds node 2's bus channel (and node 2's presence key) stops and comes back
    empty 2 s later, with its slots (its nodes.conf): node 2 loses its subscription, the cross-node
    channel closes retryably, and the device resumes once the cluster is whole again."""
    (one, two), deployment = cross_node
    master = redis_cluster.owner("tether:bus:node-2")
    assert master is redis_cluster.owner("tether:node:node-2")
    async with ticking(deployment) as follower:
        await follower.lines(200, timeout=30)
        await master.restart_async(down_for=2.0)
        await asyncio.to_thread(redis_cluster.wait_ok)
        await follower.lines(len(follower.numbers()) + 400, timeout=60)
    follower.assert_whole()
    retry_log.assert_resumed_after(CloseCode.NODE_UNREACHABLE)
    assert metrics(two)[DROPS] >= 1
    wait_until("node 2's presence key back", lambda: get(master, "tether:node:node-2") == two.origin.encode())
    wait_until("no channel left", lambda: metrics(one)[FROM_OTHER] == 0 and metrics(two)[TO_OTHER] == 0)
    assert all(metrics(node)["tether_relay_cluster_trouble"] == 0 for node in (one, two))


async def test_a_resharding_that_moves_a_nodes_channel_during_a_cross_node_stream(
    redis_cluster: RedisCluster, cross_node: tuple[list[Node], Deployment], retry_log: RetryLog
) -> None:
    """The slot of node 2's bus channel moves to another master (resharding): Redis unsubscribes
    node 2 and says nothing more, so node 2 counts its subscription lost, subscribes again on the
    slot's new master, and the device resumes; every line once, in order."""
    (one, two), deployment = cross_node
    channel = "tether:bus:node-2"
    old = redis_cluster.owner(channel)
    new = next(node for node in redis_cluster if node is not old)
    async with ticking(deployment) as follower:
        await follower.lines(200, timeout=30)
        redis_cluster.move_slot(key_slot(channel.encode()), new)
        await follower.lines(len(follower.numbers()) + 400, timeout=60)
    follower.assert_whole()
    retry_log.assert_resumed_after(CloseCode.NODE_UNREACHABLE)
    assert metrics(two)[DROPS] >= 1
    assert redis_cluster.owner(channel) is new and shard_subscribers(new, channel) == 1
    wait_until("no channel left", lambda: metrics(one)[FROM_OTHER] == 0 and metrics(two)[TO_OTHER] == 0)
