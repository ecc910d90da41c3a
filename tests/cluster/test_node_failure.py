"""A relay node dies mid-stream (SIGKILL): behind the load balancer the host and the device come
back on the nodes that live, and the device gets every line once, in order."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time

import pytest

from tests.procs import free_port, login, remove, short_home, start_host, start_relay, tether_json
from tests.support.cluster_lb import ClusterBehindLb, metrics_of, need_caddy
from tests.support.redis_server import RedisServer
from tether import Client
from tether.crypto.keys import Identity
from tether.errors import TetherError
from tether.relay.link import RelayLink

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(180)]

LINES = 10_000
HOSTS = "tether_relay_connections{role=\"host\"}"
# 10,000 numbered lines in about 5 s: long enough to kill a node in the middle
SCRIPT = f"for i in $(seq 1 {LINES}); do echo line-$i; [ $((i % 100)) = 0 ] && sleep 0.05; done; echo all-done"


async def test_a_node_killed_mid_stream_loses_and_doubles_no_line() -> None:
    need_caddy()
    host_home, workspace, client_home = short_home("th"), short_home("tw"), short_home("tc")
    # policy "first": everything balanced goes to node 1 while it lives, then to node 2
    with RedisServer() as redis, ClusterBehindLb(redis.url, 3, policy="first", order=[1, 2, 3]) as lb:
        host = start_host(host_home, lb.url, workspace)
        try:
            login(client_home, str(tether_json(host_home, "pair", "--json")["link"]), "--name", "phone", "--json")
            assert metrics_of(lb.node(1).port)[HOSTS] == 1
            text = ""
            killed_at = 0
            async with await Client.open(client_home) as client:
                session = await client.start_session(["bash", "-c", SCRIPT])
                async with asyncio.timeout(120):
                    async for event in client.events(0, session=session):
                        if event["type"] != "session.output":
                            continue
                        text += event["data"]["data"]
                        seen = text.count("line-")
                        if not killed_at and seen >= 2_000:
                            killed_at = seen
                            lb.node(1).proc.stop(signal.SIGKILL)
                            killed = time.monotonic()
                        if "all-done" in text:
                            break
            back = time.monotonic() - killed
            numbers = [int(n) for n in re.findall(r"^line-(\d+)\r?$", text, re.M)]
            assert killed_at and killed_at < LINES / 2, killed_at  # the node died mid-stream
            assert numbers == list(range(1, LINES + 1))  # every line once, in order
            # The host came back through the balancer, on a node that lives.
            assert metrics_of(lb.node(2).port)[HOSTS] == 1
            print(json.dumps({"killed_at_line": killed_at, "seconds_to_the_end_after_the_kill": round(back, 1)}))
        finally:
            host.stop()
            remove(host_home, workspace, client_home)


async def test_a_node_listens_only_once_it_has_joined_so_every_host_it_admits_is_present(
    redis_server: RedisServer,
) -> None:
    """A node restarted while hosts are reconnecting (a load balancer sends them at once) must not
    admit a host before it can write the host's presence: one admitted during its join would be
    unreachable from every other node until it reconnected. Redis holds the node's join (CLIENT
    PAUSE) while a host keeps dialling its port."""
    port = free_port()
    home = short_home("tn")
    redis_server.client_pause(1.5)
    starting = asyncio.create_task(asyncio.to_thread(
        start_relay, port, "--cluster", redis_server.url, "--node-id", "node-1", home=home))
    host = Identity.generate()
    link = None
    try:
        async with asyncio.timeout(30):
            while link is None:
                try:
                    link = await RelayLink.connect(f"ws://127.0.0.1:{port}", host, "host", open_timeout=5)
                except (OSError, TetherError):
                    await asyncio.sleep(0.05)
        with redis_server.client() as r:
            deadline = time.monotonic() + 5
            while r.get(f"tether:host:{link.id}") is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert r.get(f"tether:host:{link.id}") is not None, "the host has no presence in Redis"
    finally:
        if link is not None:
            await link.close()
        proc, _ = await starting
        proc.stop()
        remove(home)
