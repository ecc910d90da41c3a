"""A relay node dies mid-stream (SIGKILL): behind the load balancer the host and the device come
back on the nodes that live, and the device gets every line once, in order."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time

import pytest

from tests.procs import login, remove, short_home, start_host, tether_json
from tests.support.cluster_lb import ClusterBehindLb, metrics_of, need_caddy
from tests.support.redis_server import RedisServer
from tether import Client

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
