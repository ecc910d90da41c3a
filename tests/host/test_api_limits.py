"""The host's per-connection limits, through a live daemon's unix socket (the same RpcPeer and
ApiConnection a device's channel gets): at most MAX_SUBSCRIPTIONS (16) subscriptions per
connection, refused with a clear error; at most 32 requests in flight per peer, beyond which the
host stops reading that connection (backpressure, no error) until one finishes. Either way the
connection keeps working and other connections never notice."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.inprocess import running_host
from tether.client.connection import Connection, Subscription, connect_local
from tether.crypto.encoding import b64u_encode
from tether.host.api import HANDLERS, MAX_SUBSCRIPTIONS, ApiConnection
from tether.host.daemon import HostDaemon
from tether.protocol.messages import Request, encode
from tether.protocol.rpc import RemoteError

IN_FLIGHT = 32  # RpcPeer's max_concurrent_requests, as the daemon creates it


@pytest.fixture
async def host() -> AsyncIterator[HostDaemon]:
    async with running_host() as daemon:
        yield daemon


async def _append_event(conn: Connection) -> int:
    """Something new in the host's event log (a linked host, which only the owner may announce)."""
    params = {"host_id": "a" * 20, "name": "remote", "static_public": b64u_encode(os.urandom(32)),
              "relay_url": "ws://127.0.0.1:1"}
    result: dict[str, Any] = await conn.call("hosts.link", params, timeout=5)
    return int(result["seq"])


async def _next_event_after(sub: Subscription, seq: int) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        async for item in sub.items():
            if item["type"] != "snapshot" and item["seq"] >= seq:
                return item
        raise AssertionError("the subscription ended")

    return await asyncio.wait_for(first(), 5)


async def test_subscriptions_per_connection_are_capped(host: HostDaemon) -> None:
    assert MAX_SUBSCRIPTIONS == 16
    conn, other = await connect_local(host.home), await connect_local(host.home)
    try:
        subs = [await conn.subscribe(since=host.log.head) for _ in range(MAX_SUBSCRIPTIONS)]
        for attempt in range(2):  # refused every time, not only once
            with pytest.raises(RemoteError) as info:
                await conn.call("events.subscribe", {"sub": 1000 + attempt, "since": 0}, timeout=5)
            assert info.value.code == "limit"
            assert info.value.message == "too many subscriptions on one connection"
        # The connection keeps working: requests are answered and every subscription still delivers.
        assert (await conn.call("host.info", timeout=5))["role"] == "host"
        seq = await _append_event(conn)
        for sub in (subs[0], subs[-1]):
            assert (await _next_event_after(sub, seq))["seq"] == seq
        # Another connection has its own 16, at the same time.
        others = [await other.subscribe(since=host.log.head) for _ in range(MAX_SUBSCRIPTIONS)]
        with pytest.raises(RemoteError) as info:
            await other.call("events.subscribe", {"sub": 1000, "since": 0}, timeout=5)
        assert info.value.code == "limit"
        seq = await _append_event(other)
        assert (await _next_event_after(others[-1], seq))["seq"] == seq
        # Unsubscribing frees a place, on that connection only.
        assert await conn.call("events.unsubscribe", {"sub": subs[0].sub_id}, timeout=5) == {"ok": True}
        assert (await conn.call("events.subscribe", {"sub": 2000, "since": 0}, timeout=5))["sub"] == 2000
        with pytest.raises(RemoteError, match="too many subscriptions"):
            await conn.call("events.subscribe", {"sub": 2001, "since": 0}, timeout=5)
        with pytest.raises(RemoteError, match="too many subscriptions"):
            await other.call("events.subscribe", {"sub": 2001, "since": 0}, timeout=5)
    finally:
        await conn.close()
        await other.close()
    # A new connection starts with none.
    fresh = await connect_local(host.home)
    try:
        for _ in range(MAX_SUBSCRIPTIONS):
            await fresh.subscribe(since=0)
    finally:
        await fresh.close()
    refusals = [e for e in await host.audit.list() if e["method"] == "events.subscribe" and e["result"] == "limit"]
    assert len(refusals) == 5


async def test_requests_in_flight_per_peer_are_capped(host: HostDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    # sessions.list is made to hold its slot until the gate opens (host.info stays instant).
    gate = asyncio.Event()
    entered = 0

    async def held(self: ApiConnection, _: object) -> list[dict[str, Any]]:
        nonlocal entered
        entered += 1
        await gate.wait()
        return []

    monkeypatch.setitem(HANDLERS, "sessions.list", held)
    conn, other = await connect_local(host.home), await connect_local(host.home)
    try:
        calls = [asyncio.create_task(conn.call("sessions.list", timeout=30)) for _ in range(IN_FLIGHT + 8)]
        deadline = time.monotonic() + 5
        while entered < IN_FLIGHT and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert entered == IN_FLIGHT
        # Behind the 32 the host reads nothing more from this connection: a request that would
        # be answered at once waits too (queued, not refused or dropped)...
        quick = asyncio.create_task(conn.call("host.info", timeout=30))
        await asyncio.sleep(0.3)
        assert entered == IN_FLIGHT and not quick.done()
        assert not any(c.done() for c in calls)
        # It does not even take them in to wait: 500 more requests make the host start no task.
        tasks = len(asyncio.all_tasks())
        for i in range(500):
            await conn.peer.transport.send(encode(Request(id=1_000_000 + i, method="host.info")))
        await asyncio.sleep(0.3)
        assert len(asyncio.all_tasks()) - tasks < 10
        # ...while another connection is served as usual.
        started = time.monotonic()
        assert (await other.call("host.info", timeout=5))["role"] == "host"
        assert time.monotonic() - started < 2
        # Once the gate opens every request is answered, in the end none refused or lost.
        gate.set()
        assert await asyncio.wait_for(asyncio.gather(*calls), 5) == [[]] * (IN_FLIGHT + 8)
        assert (await asyncio.wait_for(quick, 5))["role"] == "host"
        assert entered == IN_FLIGHT + 8
        # The connection is as good as new.
        gate.clear()
        calls = [asyncio.create_task(conn.call("sessions.list", timeout=30)) for _ in range(IN_FLIGHT)]
        deadline = time.monotonic() + 5
        while entered < 2 * IN_FLIGHT + 8 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert entered == 2 * IN_FLIGHT + 8  # exactly 32 again: none of the old slots leaked
        gate.set()
        assert await asyncio.wait_for(asyncio.gather(*calls), 5) == [[]] * IN_FLIGHT
        assert (await conn.call("host.info", timeout=5))["role"] == "host"
    finally:
        gate.set()
        await conn.close()
        await other.close()
