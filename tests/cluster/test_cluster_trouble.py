"""Cluster mode when its Redis is in trouble (issue [10]), with a real redis-server, relay node
processes, host daemon and SDK client. A device on node 2 follows a session of a host on node 1
across nodes while Redis is restarted, or frozen for 15 s, or drops node 2's subscription (node 2
too slow, or at any time).

What must hold each time: the cross-node channel closes with a retryable code (NODE_UNREACHABLE)
and the SDK resumes from its cursor, so every line arrives exactly once, in order, and never
through a frame lost on the way (the end-to-end channel would fail on the gap, which the tests
count as a failure); presence is rebuilt; no node process restarts; /healthz says "degraded"
meanwhile and "ok" after; and no channel is left behind on either node.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from tests.support.cluster_nodes import (
    Deployment,
    Follower,
    HealthWatch,
    Node,
    RetryLog,
    healthz,
    host_and_device,
    hosts_file,
    metrics,
    record_retries,
    redis_subscribers_of,
    running_nodes,
    ticking,
    unreachable_url,
    wait_until,
)
from tests.support.redis_server import RedisServer
from tether import Client
from tether.protocol.frames import CloseCode
from tether.relay.cluster.records import batch_head, decode_batch

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(150)]

TO_OTHER = 'tether_relay_channels{path="to_other_node"}'
FROM_OTHER = 'tether_relay_channels{path="from_other_node"}'
DROPS = "tether_relay_cluster_subscription_drops_total"


@pytest.fixture
def retry_log(monkeypatch: pytest.MonkeyPatch) -> RetryLog:
    return record_retries(monkeypatch)


@pytest.fixture
def nodes(redis_server: RedisServer) -> Iterator[list[Node]]:
    """Two nodes; node 1 advertises an address nothing listens on, so that a device steered there
    cannot follow and keeps its channel across nodes (through node 2 and the bus)."""
    with running_nodes([redis_server.url], {"node-1": unreachable_url()}) as started:
        yield started


@pytest.fixture
def deployment(nodes: list[Node]) -> Iterator[Deployment]:
    with host_and_device(nodes[0], nodes[1]) as made:
        yield made


def presence(redis: RedisServer, host_id: str) -> dict[str, bytes | None]:
    with redis.client() as r:
        keys = [f"tether:host:{host_id}", "tether:node:node-1", "tether:node:node-2"]
        return dict(zip(keys, r.mget(keys), strict=True))


def channels_left(one: Node, two: Node) -> dict[str, float]:
    """Cross-node channels and device connections still held by the nodes (none once the
    device's client is closed)."""
    first, second = metrics(one), metrics(two)
    held = {f"node-1 {FROM_OTHER}": first[FROM_OTHER], f"node-1 {TO_OTHER}": first[TO_OTHER],
            f"node-2 {TO_OTHER}": second[TO_OTHER], f"node-2 {FROM_OTHER}": second[FROM_OTHER],
            "node-2 devices": second['tether_relay_connections{role="device"}']}
    return {name: value for name, value in held.items() if value}


def assert_channels(node: Node, expected: dict[str, float], timeout: float = 10) -> None:
    """``node``'s gauges come to ``expected`` within ``timeout`` s (and are still so 1 s later:
    a channel left behind does not go by itself)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        figures = metrics(node)
        if all(figures[name] == value for name, value in expected.items()):
            time.sleep(1)
            break
        time.sleep(0.25)
    figures = metrics(node)
    assert {name: figures[name] for name in expected} == expected, f"{node.node_id}: {figures}"


def assert_no_channels_left(one: Node, two: Node, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (left := channels_left(one, two)) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not left, f"channels left behind: {left}"


async def stream_across(nodes: list[Node], deployment: Deployment, retry_log: RetryLog, redis: RedisServer,
                        fault: Callable[[], Awaitable[None]]) -> None:
    """A session ticking numbered lines, followed by a device on node 2 while ``fault`` happens;
    checks that everything arrived once, /healthz, presence, and that nothing was left behind."""
    one, two = nodes
    pids = (one.pid, two.pid)
    [entry] = hosts_file(deployment.client_home)
    assert not entry.get("node_url"), "node 1 cannot be reached at its advertised URL"
    async with ticking(deployment) as follower:
        await follower.lines(200, timeout=30)
        assert metrics(two)[TO_OTHER] == 1 and metrics(one)[FROM_OTHER] == 1, "the stream crosses nodes"
        with HealthWatch([one, two]) as health:
            await fault()
            # The stream goes on: the SDK reopened its channel and resumed from its cursor.
            await follower.lines(len(follower.numbers()) + 400, timeout=60)
            for node in (one, two):
                await asyncio.to_thread(wait_until, f"{node.node_id} healthy", lambda n=node: healthz(n) == "ok")
    follower.assert_whole()
    retry_log.assert_resumed_after(CloseCode.NODE_UNREACHABLE)
    for node in (one, two):
        said = health.seen[node.node_id]
        assert said[0] == "ok" and "degraded" in said and said[-1] == "ok", f"/healthz of {node.node_id}: {said}"
        assert "unanswered" not in said, f"/healthz of {node.node_id}: {said}"
    wait_until("presence rebuilt", lambda: all(presence(redis, deployment.host_id).values()), timeout=10)
    keys = presence(redis, deployment.host_id)
    assert keys[f"tether:host:{deployment.host_id}"].startswith(b"node-1 ")  # type: ignore[union-attr]
    assert keys["tether:node:node-1"] == one.proc.args[one.proc.args.index("--advertise-url") + 1].encode()
    assert keys["tether:node:node-2"] == two.origin.encode()
    assert (one.pid, two.pid) == pids and one.proc.alive and two.proc.alive, "no node restarted"
    for node in (one, two):
        assert node.proc.log.count(f"cluster node {node.node_id} (") == 1, f"{node.node_id} joined twice"
    await asyncio.to_thread(assert_no_channels_left, one, two)


async def test_redis_restarted_during_a_cross_node_stream(
    redis_server: RedisServer, nodes: list[Node], deployment: Deployment, retry_log: RetryLog
) -> None:
    """Redis stops (a clean shutdown, nothing saved) and comes back empty on the same port 2 s
    later: both nodes lose their subscriptions and close their cross-node channels with
    NODE_UNREACHABLE; once Redis is back they subscribe again and put their presence keys back,
    and the device resumes."""

    async def restart() -> None:
        await redis_server.restart_async(down_for=2.0)

    await stream_across(nodes, deployment, retry_log, redis_server, restart)


@pytest.mark.parametrize("how", ["sigstop", "client-pause"])
async def test_redis_paused_for_15_s_during_a_cross_node_stream(
    redis_server: RedisServer, nodes: list[Node], deployment: Deployment, retry_log: RetryLog, how: str
) -> None:
    """Redis answers nothing for 15 s: stopped dead (SIGSTOP: sockets stay open, and presence
    keys expire meanwhile, their TTL being 10 s) or holding every command (CLIENT PAUSE ALL).
    The nodes see only their commands time out. The cross-node channel closes retryably rather
    than hang or lose frames, and everything recovers once Redis answers again."""

    async def pause() -> None:
        if how == "sigstop":
            await redis_server.pause(15)
        else:
            redis_server.client_pause(15)
            await asyncio.sleep(15)

    await stream_across(nodes, deployment, retry_log, redis_server, pause)


# A pty program that says "ready", waits for a file, then prints LINES numbered lines of 64 bytes
# as fast as it can (megabytes: more than loopback's socket buffers hold for a node that reads
# nothing) and exits.
BURST = """\
import os, sys, time
trigger, lines = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
deadline = time.monotonic() + 60
while not os.path.exists(trigger) and time.monotonic() < deadline:
    time.sleep(0.02)
for i in range(1, lines + 1):
    sys.stdout.write(f"{'x' * 48} line-{i:06d}\\n")
sys.stdout.flush()
"""
BURST_LINES = 30_000
FOLLOWERS = 16  # subscriptions on the device's one connection, the most the host allows on one
SLOW_SUBSCRIBER_LIMIT = "pubsub 256kb 128kb 1"
DEFAULT_LIMIT = "pubsub 32mb 8mb 60"


async def test_a_slow_node_dropped_by_redis_closes_its_channels_and_the_device_resumes(
    redis_server: RedisServer, nodes: list[Node], deployment: Deployment, retry_log: RetryLog
) -> None:
    """Redis's output buffer for subscribers is set low, and node 2 (where the device is) stops
    reading: its process is frozen (SIGSTOP) while the host bursts megabytes to the device's 16
    subscriptions (each up to its 512 KiB flow-control window). Redis drops node 2's subscription;
    what was published after that is gone. Node 2 counts the drop, closes its cross-node channels
    retryably and subscribes again; the device resumes every subscription from its cursor."""
    one, two = nodes
    pids = (one.pid, two.pid)
    redis_server.config_set("client-output-buffer-limit", SLOW_SUBSCRIBER_LIMIT)
    script = deployment.workspace / "burst.py"
    script.write_text(BURST)
    trigger = deployment.workspace / "go"
    assert metrics(two)[DROPS] == 0
    async with await Client.open(deployment.client_home) as client:
        session_id = await client.start_session(["python3", str(script), str(trigger), str(BURST_LINES)])
        followers = [Follower(client, session_id) for _ in range(FOLLOWERS)]
        async with contextlib.AsyncExitStack() as stack:
            for follower in followers:
                await stack.enter_async_context(follower)
            for follower in followers:
                await follower.until("ready", lambda f=follower: "ready" in f.text, timeout=30)
            assert metrics(two)[TO_OTHER] == 1, "the device's channel crosses nodes"
            two.freeze()
            try:
                trigger.touch()
                await asyncio.to_thread(wait_until, "Redis dropping node 2",
                                        lambda: "overcoming of output buffer limits" in redis_server.log)
            finally:
                two.thaw()
            # Redis's usual limit again: 16 windows catching up at once would go on overflowing
            # the low one, and this test is about one drop
            redis_server.config_set("client-output-buffer-limit", DEFAULT_LIMIT)
            for follower in followers:
                await follower.exit(timeout=90)
    for follower in followers:
        follower.assert_whole(BURST_LINES)
    assert metrics(two)[DROPS] >= 1 and metrics(one)[DROPS] == 0, "Redis dropped node 2, and only node 2"
    retry_log.assert_resumed_after(CloseCode.NODE_UNREACHABLE)
    assert (one.pid, two.pid) == pids and one.proc.alive and two.proc.alive
    await asyncio.to_thread(assert_no_channels_left, one, two)


async def cut_while_idle(
    nodes: list[Node], deployment: Deployment, retry_log: RetryLog, cut: Callable[[], None]
) -> None:
    """A device on node 2 follows a quiet session of the host on node 1; ``cut`` (run in a
    thread) breaks the bus between them. The device's channel must close retryably, open again
    across the nodes, and the session arrive whole; no channel is left behind on either node."""
    one, two = nodes
    script = deployment.workspace / "burst.py"
    script.write_text(BURST)
    trigger = deployment.workspace / "go"
    async with await Client.open(deployment.client_home) as client:
        session_id = await client.start_session(["python3", str(script), str(trigger), "2000"])
        async with Follower(client, session_id) as follower:
            await follower.until("ready", lambda: "ready" in follower.text, timeout=30)
            assert metrics(one)[FROM_OTHER] == 1 and metrics(two)[TO_OTHER] == 1
            await asyncio.to_thread(cut)
            # (polled: the session is quiet, so no event would wake the follower to look)
            await asyncio.to_thread(wait_until, "the device's channel closed retryably",
                                    lambda: int(CloseCode.NODE_UNREACHABLE) in retry_log.closes())
            # the resumed channel, and only it, crosses nodes
            await asyncio.to_thread(wait_until, "the device's channel open again", lambda: metrics(two)[TO_OTHER] == 1)
            await asyncio.to_thread(assert_channels, one, {FROM_OTHER: 1})
            trigger.touch()
            await follower.exit(timeout=30)
    follower.assert_whole(2000)
    retry_log.assert_resumed_after(CloseCode.NODE_UNREACHABLE)
    await asyncio.to_thread(assert_no_channels_left, one, two)


@pytest.mark.parametrize("dropped", ["device's node", "host's node"])
async def test_a_dropped_subscription_while_the_channel_is_idle_closes_the_channel_on_both_nodes(
    redis_server: RedisServer, nodes: list[Node], deployment: Deployment, retry_log: RetryLog, dropped: str
) -> None:
    """Redis drops one node's subscription (CLIENT KILL: to that node it looks like a drop for
    being slow) while the host has nothing to send, so the other node publishes nothing and sees
    no trouble of its own. The dropped node closes its end of the channel; the other node must
    close its end too: on the host's node, or the host keeps a channel (and the device's
    subscriptions on it) that no device will ever use again; on the device's node, or a device
    that only listens waits on a dead channel for good."""
    node = nodes[1] if dropped == "device's node" else nodes[0]

    def drop() -> None:
        [subscriber] = redis_subscribers_of(redis_server, node.pid)
        redis_server.execute("CLIENT", "KILL", "ID", subscriber)
        wait_until("the node counting the drop", lambda: metrics(node)[DROPS] == 1)

    await cut_while_idle(nodes, deployment, retry_log, drop)


def forge_gap(redis_server: RedisServer, sender: str, receiver: str) -> None:
    """Have ``receiver`` see batches from ``sender`` go missing, as when Redis loses some without
    telling anyone: read one of the sender's batches to it (each node sends one at least every
    refresh to the nodes it shares channels with), then publish an empty one numbered two past it."""
    channel = f"tether:bus:{receiver}"
    with redis_server.client() as r:
        pubsub = r.pubsub()
        pubsub.ssubscribe(channel)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            message = pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                seen = decode_batch(message["data"])
                if seen.sender == sender:
                    break
        else:
            raise AssertionError(f"no batch from {sender} to {receiver} within 15 s")
        pubsub.close()
        r.spublish(channel, batch_head(sender, seen.epoch, seen.sequence + 2))


async def test_batches_lost_without_a_word_close_the_channel_at_both_ends_and_the_device_resumes(
    redis_server: RedisServer, nodes: list[Node], deployment: Deployment, retry_log: RetryLog
) -> None:
    """Redis loses batches from node 1 to node 2 and nobody is told (no dropped subscription, no
    failed publish). Node 2 finds the gap in node 1's numbers, closes the channel retryably at
    both ends, and the device resumes from its cursor: every line once, in order."""
    one, two = nodes
    await cut_while_idle(nodes, deployment, retry_log, lambda: forge_gap(redis_server, "node-1", "node-2"))
    assert metrics(two)["tether_relay_cluster_gaps_total"] >= 1 and metrics(one)["tether_relay_cluster_gaps_total"] == 0
    assert metrics(two)[DROPS] == 0  # no trouble Redis told of


async def test_a_node_found_gone_by_its_presence_key_while_it_lives_has_its_channels_closed_at_both_ends(
    redis_server: RedisServer, nodes: list[Node], deployment: Deployment, retry_log: RetryLog
) -> None:
    """Node 2's presence key goes missing while node 2 lives and listens (Redis restarted empty
    and node 2 subscribed again before its next refresh put the key back; or the key expired).
    Node 1 finds node 2 gone and closes the channels through it: it must tell node 2, or a device
    there that only listens waits on a channel node 1 no longer has, for good (CI saw that on a
    Redis Cluster whose master restarted: the stream stopped, nothing closed)."""

    def delete_node_2s_key() -> None:
        # for longer than two of node 1's refreshes (3 s apart), faster than node 2 puts it back
        with redis_server.client() as r:
            deadline = time.monotonic() + 7
            while time.monotonic() < deadline:
                r.delete("tether:node:node-2")
                time.sleep(0.01)

    await cut_while_idle(nodes, deployment, retry_log, delete_node_2s_key)
    assert all(metrics(node)[DROPS] == 0 for node in nodes), "no subscription was lost: only the key"
