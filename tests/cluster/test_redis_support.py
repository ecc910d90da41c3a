"""The Redis test helpers themselves (tests/support/redis_server.py), and the redis-py behaviours
that cluster mode has to build on: what a subscriber sees when Redis restarts or drops it."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
import redis.asyncio as aredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, ClusterPubSub
from redis.asyncio.cluster import RedisCluster as ClusterClient
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.support.redis_server import RedisCluster, RedisServer

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(60)]


async def next_message(pubsub: PubSub, kinds: tuple[str, ...] = ("message",), timeout: float = 5) -> dict[str, object]:
    """The next message of one of ``kinds`` (others are skipped), within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        message = await pubsub.get_message(timeout=min(left, 0.5))
        if message is not None and message["type"] in kinds:
            return message
    raise AssertionError(f"no {kinds} message within {timeout} s")


async def test_server_is_throwaway_and_on_loopback(redis_server: RedisServer) -> None:
    r = aredis.from_url(redis_server.url)
    try:
        assert await r.set("k", b"v")
        assert await r.get("k") == b"v"
    finally:
        await r.aclose()
    assert redis_server.config_get("save") == ""
    assert redis_server.config_get("appendonly") == "no"
    assert redis_server.config_get("bind") == "127.0.0.1"
    assert Path(redis_server.config_get("dir")) == redis_server.dir.resolve()
    assert "Ready to accept connections" in redis_server.log

    pid, directory = redis_server.pid, redis_server.dir
    redis_server.close()
    assert not redis_server.running
    assert not directory.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_restart_on_the_same_port_and_the_subscriber_resubscribes(redis_server: RedisServer) -> None:
    """A restart empties Redis; redis-py's ``Redis(...)`` (default retry: 10 attempts with backoff)
    reconnects a reading subscriber and subscribes it again without raising — its only trace is a
    second 'subscribe' confirmation; what was published meanwhile is lost."""
    port = redis_server.port
    pub = aredis.from_url(redis_server.url)
    sub = aredis.Redis(host="127.0.0.1", port=port)
    pubsub = sub.pubsub()
    try:
        await pub.set("k", b"v")
        await pubsub.subscribe("frames")
        assert (await next_message(pubsub, ("subscribe",)))["channel"] == b"frames"
        reading = asyncio.create_task(next_message(pubsub, ("subscribe",), timeout=10))
        await asyncio.sleep(0.1)  # the subscriber is blocked in a read when Redis goes away

        await redis_server.restart_async(down_for=0.2)
        assert redis_server.port == port
        assert (await reading)["channel"] == b"frames"  # resubscribed, no exception

        assert await pub.get("k") is None  # persistence is off
        assert await pub.publish("frames", b"after") == 1
        assert (await next_message(pubsub))["data"] == b"after"
    finally:
        await pubsub.aclose()
        await sub.aclose()
        await pub.aclose()


async def test_kill_resets_clients_until_started_again(redis_server: RedisServer) -> None:
    r = aredis.from_url(redis_server.url)
    try:
        assert await r.ping()
        redis_server.kill()
        assert not redis_server.running
        with pytest.raises(RedisConnectionError):
            await r.ping()
        redis_server.start()
        assert await r.ping()
    finally:
        await r.aclose()


async def test_pause_freezes_the_server_then_it_answers_again(redis_server: RedisServer) -> None:
    r = aredis.from_url(redis_server.url)
    try:
        assert await r.ping()
        pause = asyncio.create_task(redis_server.pause(1.0))
        await asyncio.sleep(0.05)
        assert redis_server.frozen
        started = time.monotonic()
        # SIGSTOP: the connection stays open and the command just waits; the test's loop runs on.
        assert await asyncio.wait_for(r.ping(), 5)
        assert time.monotonic() - started > 0.7
        await pause
        assert not redis_server.frozen

        redis_server.client_pause(0.5)  # CLIENT PAUSE: Redis holds commands and resumes by itself
        started = time.monotonic()
        await r.set("k", b"v")
        assert time.monotonic() - started > 0.3
    finally:
        await r.aclose()


@pytest.mark.parametrize("sharded", [False, True], ids=["subscribe", "ssubscribe"])
async def test_slow_subscriber_is_dropped_by_redis(redis_server: RedisServer, sharded: bool) -> None:
    """With a low ``client-output-buffer-limit pubsub``, Redis closes a subscriber that does not
    read. What redis-py's asyncio client then does depends on its retry policy, the same for
    SUBSCRIBE and (on a single server) SSUBSCRIBE:

    * ``Redis.from_url(url)`` (no retries): ``get_message`` returns what was buffered, then raises
      ``ConnectionError('Connection closed by server.')`` once; the PubSub has already reconnected
      and subscribed again, and the next call returns a fresh confirmation;
    * ``Redis(host, port)`` (default retry): no exception at all, only that second confirmation.

    Either way the messages published between the drop and the new subscription are gone."""
    confirmation, data = ("ssubscribe", "smessage") if sharded else ("subscribe", "message")
    redis_server.config_set("client-output-buffer-limit", "pubsub 256kb 128kb 1")
    pub = aredis.from_url(redis_server.url)
    raising = aredis.from_url(redis_server.url)
    silent = aredis.Redis(host="127.0.0.1", port=redis_server.port)
    pubsubs = [raising.pubsub(), silent.pubsub()]

    async def publish(message: bytes) -> int:
        return int(await (pub.spublish if sharded else pub.publish)("frames", message))

    try:
        for pubsub in pubsubs:
            await (pubsub.ssubscribe if sharded else pubsub.subscribe)("frames")
            await next_message(pubsub, (confirmation,))
        payload = b"x" * 16384
        published, deadline = 0, time.monotonic() + 10
        # Nobody reads: the loopback socket buffers fill (a few MB), then Redis's buffer does.
        while published < 5000 and time.monotonic() < deadline:
            published += 1
            if await publish(payload) == 0:
                break
        else:
            raise AssertionError(f"Redis still had subscribers after {published} messages")
        assert "overcoming of output buffer limits" in redis_server.log

        async def drain(pubsub: PubSub) -> tuple[int, BaseException | None, dict[str, object] | None]:
            received = 0
            try:
                while received < published:
                    message = await pubsub.get_message(timeout=2)
                    if message is None:
                        return received, None, None
                    if message["type"] != data:
                        return received, None, message
                    received += 1
            except RedisConnectionError as e:
                return received, e, await next_message(pubsub, (confirmation,))
            raise AssertionError("every message arrived: the subscriber was not dropped")

        got_raising, error, after_raising = await drain(pubsubs[0])
        got_silent, no_error, after_silent = await drain(pubsubs[1])
        assert 0 < got_raising < published and 0 < got_silent < published
        assert isinstance(error, RedisConnectionError)
        assert str(error) == "Connection closed by server."
        assert after_raising is not None and after_raising["type"] == confirmation
        assert no_error is None
        assert after_silent is not None and after_silent["type"] == confirmation
        # Both are subscribed again and receive what is published from now on.
        assert await publish(b"after") == 2
        for pubsub in pubsubs:
            assert (await next_message(pubsub, (data,)))["data"] == b"after"
    finally:
        for pubsub in pubsubs:
            await pubsub.aclose()
        for client in (pub, raising, silent):
            await client.aclose()


def channels_on_every_node(client: ClusterClient) -> list[str]:
    """Channel names whose slots are owned by different masters, one per master."""
    owners: dict[str, str] = {}
    for i in range(1000):
        name = f"frames:{i}"
        node = client.get_node_from_key(name)
        assert node is not None
        owners.setdefault(node.name, name)
        if len(owners) == len(client.get_primaries()):
            return sorted(owners.values())
    raise AssertionError("no channel names covering every master")


async def test_cluster_has_three_masters_and_sharded_pubsub_works(redis_cluster: RedisCluster) -> None:
    assert len(redis_cluster.seeds) == 3
    assert all(seed.startswith("redis://127.0.0.1:") for seed in redis_cluster.seeds)
    assert all(node.config_get("cluster-enabled") == "yes" for node in redis_cluster)

    subscriber = ClusterClient(startup_nodes=[ClusterNode("127.0.0.1", port) for port in redis_cluster.ports])
    publisher = ClusterClient.from_url(redis_cluster.seeds[2])
    pubsub = subscriber.pubsub()
    try:
        await subscriber.initialize()
        await publisher.initialize()
        assert len(subscriber.get_primaries()) == 3
        channels = channels_on_every_node(subscriber)

        for name in channels:  # plain keys land on every master too
            await subscriber.set(f"{{{name}}}:k", name)
            assert await publisher.get(f"{{{name}}}:k") == name.encode()

        await pubsub.ssubscribe(*channels)
        confirmed: set[bytes] = set()
        deadline = time.monotonic() + 5
        while len(confirmed) < len(channels) and time.monotonic() < deadline:
            message = await pubsub.get_sharded_message(timeout=0.5)
            if message is not None and message["type"] == "ssubscribe":
                confirmed.add(message["channel"])
        assert confirmed == {name.encode() for name in channels}

        for name in channels:
            assert await publisher.spublish(name, f"to {name}".encode()) == 1
        received: dict[bytes, bytes] = {}
        deadline = time.monotonic() + 5
        while len(received) < len(channels) and time.monotonic() < deadline:
            message = await pubsub.get_sharded_message(timeout=0.5)
            if message is not None and message["type"] == "smessage":
                received[message["channel"]] = message["data"]
        assert received == {name.encode(): f"to {name}".encode() for name in channels}
    finally:
        await pubsub.aclose()
        await subscriber.aclose()
        await publisher.aclose()


async def test_cluster_drops_a_slow_shard_subscriber(redis_cluster: RedisCluster) -> None:
    """On Redis Cluster, redis-py's ``ClusterPubSub`` keeps one connection per node it has shard
    channels on, and ``get_sharded_message`` raises a connection error only when every node it
    polled failed. So when Redis drops a slow shard subscriber (even with no retries set):

    * subscribed on that node only: ``ConnectionError('Connection closed by server.')`` once,
      then a fresh 'ssubscribe' confirmation (it has reconnected and subscribed again);
    * subscribed on another node too: no exception at all, only that confirmation — which
      ``ignore_subscribe_messages=True`` hides.

    Either way the messages published in between are gone."""
    for node in redis_cluster:
        node.config_set("client-output-buffer-limit", "pubsub 256kb 128kb 1")
    seeds = [ClusterNode("127.0.0.1", port) for port in redis_cluster.ports]
    clients = [ClusterClient(startup_nodes=seeds, socket_timeout=2) for _ in range(3)]
    publisher, one_node, two_nodes = clients
    pubsubs = [one_node.pubsub(), two_nodes.pubsub()]
    try:
        for client in clients:
            await client.initialize()
        home = publisher.get_node_from_key("frames")
        elsewhere = next(c for c in channels_on_every_node(publisher) if publisher.get_node_from_key(c) != home)
        await pubsubs[0].ssubscribe("frames")
        await pubsubs[1].ssubscribe("frames", elsewhere)
        for pubsub, count in zip(pubsubs, (1, 2), strict=True):
            for _ in range(count):
                assert (await pubsub.get_sharded_message(timeout=2))["type"] == "ssubscribe"
        payload = b"x" * 16384
        published, deadline = 0, time.monotonic() + 10
        while published < 5000 and time.monotonic() < deadline:
            published += 1
            if await publisher.spublish("frames", payload) == 0:
                break
        else:
            raise AssertionError(f"Redis still had the subscribers after {published} messages")
        assert any("overcoming of output buffer limits" in node.log for node in redis_cluster)

        async def drain(pubsub: ClusterPubSub) -> tuple[int, BaseException | None, dict[str, object] | None]:
            received, error = 0, None
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    message = await pubsub.get_sharded_message(timeout=1)
                except RedisConnectionError as e:
                    error = e
                    continue
                if message is not None and message["type"] == "smessage":
                    received += 1
                elif message is not None:
                    return received, error, message
            raise AssertionError(f"no new confirmation within 10 s ({received} received, {error!r})")

        got_one, error, after_one = await drain(pubsubs[0])
        got_two, no_error, after_two = await drain(pubsubs[1])
        assert 0 < got_one < published and 0 < got_two < published
        assert isinstance(error, RedisConnectionError)
        assert str(error) == "Connection closed by server."
        assert no_error is None
        for message in (after_one, after_two):
            assert message is not None and message["type"] == "ssubscribe" and message["channel"] == b"frames"

        assert await publisher.spublish("frames", b"after") == 2
        for pubsub in pubsubs:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                message = await pubsub.get_sharded_message(timeout=0.5)
                if message is not None and message["type"] == "smessage":
                    assert message["data"] == b"after"
                    break
            else:
                raise AssertionError("nothing received after the new subscription")
    finally:
        for pubsub in pubsubs:
            await pubsub.aclose()
        for client in clients:
            await client.aclose()
