"""The relay's keepalive (``RelayLimits.ping_interval``/``ping_timeout``, relay/keepalive.py): a
peer that stops answering pings — a machine gone without a FIN, a process frozen — is dropped
ping_interval + ping_timeout after it was last heard, and forgotten by the router; a peer that
answers stays."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from tether.crypto.keys import Identity
from tether.protocol.frames import Role

from .conftest import RelayFactory
from .rawws import RawSocket
from .test_hardening import port_of

pytestmark = pytest.mark.timeout(30)

PING, PONG = 0x9, 0xA


async def answer_pings(sock: RawSocket, seen: list[int]) -> None:
    """Read frames and answer every ping, as any WebSocket client does."""
    while True:
        opcode, payload = await sock.recv()
        seen.append(opcode)
        if opcode == PING:
            await sock.send(payload, PONG)


@pytest.mark.parametrize(("interval", "timeout"), [(0.4, 0.4), (0.2, 0.7), (0.6, 0.2)])
async def test_a_peer_that_stops_answering_pings_is_let_go_and_one_that_answers_stays(
    relay_factory: RelayFactory, interval: float, timeout: float
) -> None:
    """Timeouts shorter and longer than the interval (pings then overlap) as well."""
    server, url = await relay_factory(ping_interval=interval, ping_timeout=timeout, close_timeout=0.5)
    port = port_of(url)
    silent, alive = Identity.generate(), Identity.generate()
    mute = await RawSocket.upgrade(port)
    talker = await RawSocket.upgrade(port)
    seen: list[int] = []
    answering: asyncio.Task[None] | None = None
    try:
        mute_id = (await mute.authenticate(silent, Role.HOST)).id
        alive_id = (await talker.authenticate(alive, Role.HOST)).id
        answering = asyncio.create_task(answer_pings(talker, seen))
        assert {mute_id, alive_id} <= set(server.router.hosts)

        # The mute host reads nothing and answers nothing: dropped after interval + timeout.
        async with asyncio.timeout(5):
            while mute_id in server.router.hosts:
                await asyncio.sleep(0.05)
        assert await mute.closed_by_peer(timeout=3)
        assert "tether_relay_keepalive_drops_total 1\n" in server._metrics()

        # The other one was pinged all along, answered, and is still connected.
        await asyncio.sleep(3 * max(interval, timeout))
        assert seen.count(PING) >= 3
        assert alive_id in server.router.hosts and not answering.done()
        assert "tether_relay_keepalive_drops_total 1\n" in server._metrics()
    finally:
        if answering is not None:
            answering.cancel()
        mute.abort()
        talker.abort()


async def test_a_peer_that_only_writes_is_let_go_too(relay_factory: RelayFactory) -> None:
    """Frames from a peer say nothing of whether it reads: one that sends a ping of its own every
    0.1 s but never answers the relay's is dropped all the same."""
    server, url = await relay_factory(ping_interval=0.3, ping_timeout=0.3, close_timeout=0.5)
    writer = await RawSocket.upgrade(port_of(url))
    try:
        host_id = (await writer.authenticate(Identity.generate(), Role.HOST)).id

        async def chatter() -> None:
            while True:
                await writer.send(b"", PING)
                await asyncio.sleep(0.1)

        chatting = asyncio.create_task(chatter())
        try:
            async with asyncio.timeout(5):
                while host_id in server.router.hosts:
                    await asyncio.sleep(0.05)
        finally:
            chatting.cancel()
        assert "tether_relay_keepalive_drops_total 1\n" in server._metrics()
    finally:
        writer.abort()


async def test_a_closed_connection_is_not_kept_until_its_next_ping(relay_factory: RelayFactory) -> None:
    """Connections that come and go must not pile up in the keepalive's queues for an interval
    (bench/churn.py: 200 MiB more over 20,000 of them when they did)."""
    server, url = await relay_factory(ping_interval=60, ping_timeout=60)
    sock = await RawSocket.upgrade(port_of(url))
    host_id = (await sock.authenticate(Identity.generate(), Role.HOST)).id
    [conn] = [c for c in server.connections if c.id == host_id]
    kept = weakref.ref(conn)
    del conn
    sock.abort()
    async with asyncio.timeout(5):
        while host_id in server.router.hosts:
            await asyncio.sleep(0.02)
    for _ in range(50):  # the handler task ends a few loop passes later
        gc.collect()
        if kept() is None:
            break
        await asyncio.sleep(0.02)
    assert kept() is None
