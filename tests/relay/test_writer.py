"""The relay's per-connection writer and state: batched writes, queue bounds, idle cost."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from tether.crypto.keys import Identity
from tether.protocol.frames import (
    Close,
    CloseCode,
    Data,
    Open,
    Opened,
    Role,
    Watch,
    decode_frame,
    encode_data,
)
from tether.relay.connection import Connection, binary_frame_header, send_one
from tether.relay.link import ChannelClosed, RelayLink
from tether.relay.router import HostPeer
from tether.relay.server import RelayServer
from tether.relay.websocket import RelaySocket

from .conftest import RelayFactory, raw_auth, raw_connect

pytestmark = pytest.mark.timeout(60)

Links = Callable[..., Awaitable[RelayLink]]


def server_side(server: RelayServer, id: str) -> Connection:
    [conn] = [c for c in server.connections if c.id == id]
    return conn


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def slow_device(url: str, identity: Identity, host_id: str) -> ClientConnection:
    """A raw device that opens channel 7 to ``host_id`` and then reads only when told to: with
    ``max_queue=1`` its client stops reading the socket as soon as one message waits."""
    ws = await connect(url + "/ws", compression=None, max_queue=1, ping_interval=None, max_size=None)
    await raw_auth(ws, identity, Role.DEVICE)
    await ws.send(Open(7, host_id).encode())
    async with asyncio.timeout(5):
        while not isinstance(decode_frame(await ws.recv()), Opened):  # type: ignore[arg-type]
            pass
    return ws


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 1024, 65535, 65536, 70_000])
def test_frame_header_is_what_websockets_would_write(size: int) -> None:
    data = os.urandom(size)
    assert binary_frame_header(size) + data == Frame(Opcode.BINARY, data).serialize(mask=False)


async def test_send_one_writes_a_frame_at_once_and_refuses_once_the_connection_is_closed() -> None:
    """Admission's CHALLENGE and WELCOME skip ws.send: on an open connection the client gets the
    frame as ws.send would have sent it; on a closed one ConnectionClosed, as from ws.send."""
    outcomes: list[str] = []

    async def handler(ws: RelaySocket) -> None:
        await send_one(ws, b"\x01first")
        await ws.close()
        try:
            await send_one(ws, b"\x02after close")
        except ConnectionClosed:
            outcomes.append("refused")

    async with RelayServer() as server:
        port = await server.start()
        assert server.listener is not None
        server.listener.handler = handler
        async with connect(f"ws://127.0.0.1:{port}/ws", compression=None) as client:
            assert await client.recv() == b"\x01first"
            with pytest.raises(ConnectionClosed):
                await client.recv()
        await until(lambda: outcomes == ["refused"], "send_one to refuse")


async def test_a_queued_burst_is_one_write_and_arrives_in_order(relay: tuple[RelayServer, str]) -> None:
    server, url = relay
    ws = await raw_connect(url)
    try:
        welcome = await raw_auth(ws, Identity.generate(), Role.DEVICE)
        conn = server_side(server, welcome.id)
        writes: list[int] = []
        transport: Any = conn.ws.transport
        real = transport.writelines

        def counting(parts: list[bytes]) -> None:
            writes.append(len(parts))
            real(parts)

        transport.writelines = counting
        frames = [encode_data(9, os.urandom(n)) for n in (0, 1, 125, 126, 1000, 65_535, 65_536, 3, 69_000)] * 20
        for frame in frames:
            assert conn.enqueue(frame, 9)
        assert conn.queued_bytes == sum(map(len, frames))
        async with asyncio.timeout(10):
            received = [await ws.recv() for _ in frames]
        assert received == frames
        assert writes == [2 * len(frames)]  # one header and one payload per frame, one write
        await until(lambda: conn.writer is None, "the writer to stop")
        assert conn.queued_bytes == 0 and conn.channel_bytes == {}
    finally:
        await ws.close()


async def test_idle_connections_hold_no_writer_and_no_host_state(relay: tuple[RelayServer, str], links: Links) -> None:
    server, url = relay
    host = await links(url, Identity.generate(), "host")
    ws = await raw_connect(url)
    try:
        welcome = await raw_auth(ws, Identity.generate(), Role.DEVICE)
        device = server_side(server, welcome.id)
        await ws.send(Watch((host.id,)).encode())
        decode_frame(await ws.recv())  # type: ignore[arg-type]  # PRESENCE: the writer ran
        await until(lambda: device.writer is None, "the device's writer to stop")
        hosted = server_side(server, host.id)
        await until(lambda: hosted.writer is None, "the host's writer to stop")
        assert isinstance(hosted.peer, HostPeer)
        assert not isinstance(device.peer, HostPeer)
        assert device.peer.opens is None and device.progress is None
        for part in (device, hosted, device.peer, hosted.peer):
            assert not hasattr(part, "__dict__")  # __slots__ all the way down
    finally:
        await ws.close()


async def test_slow_receiver_grace_turns_a_full_channel_into_backpressure(
    relay_factory: RelayFactory, links: Links
) -> None:
    limit = 128 * 1024
    server, url = await relay_factory(channel_queue_bytes=limit, slow_receiver_grace=20.0)
    host = await links(url, Identity.generate(), "host")
    ident = Identity.generate()
    await host.publish_allowlist([ident.identity_public])
    await asyncio.sleep(0.1)  # the relay applies the allowlist
    ws = await slow_device(url, ident, host.id)
    try:
        channel = await host.accept()
        device = server_side(server, ws_id(ident))
        chunks = [os.urandom(50_000) for _ in range(400)]  # 20 MB: more than loopback buffers hold

        async def flood() -> None:
            for chunk in chunks:
                await channel.send(chunk)

        sender = asyncio.create_task(flood())
        # The device reads nothing: the relay's queue for it fills up to the bound, then the host's
        # frames wait instead of closing the channel.
        await until(lambda: device.progress is not None, "a sender waiting for the channel to drain", 20)
        assert 0 < device.channel_bytes.get(7, 0) <= limit
        assert not sender.done()
        got = []
        async with asyncio.timeout(30):
            while len(got) < len(chunks):
                frame = decode_frame(await ws.recv())  # type: ignore[arg-type]
                assert isinstance(frame, Data), frame
                got.append(frame.payload)
            await sender
        assert got == chunks
        await until(lambda: device.queued_bytes == 0 and not device.channel_bytes, "the queue to empty")
    finally:
        ws.transport.abort()


async def test_connection_queue_bound_closes_the_receiver_not_the_sender(
    relay_factory: RelayFactory, links: Links
) -> None:
    server, url = await relay_factory(channel_queue_bytes=4 << 20, connection_queue_bytes=256 * 1024)
    host = await links(url, Identity.generate(), "host")
    ident = Identity.generate()
    await host.publish_allowlist([ident.identity_public])
    await asyncio.sleep(0.1)
    ws = await slow_device(url, ident, host.id)
    try:
        channel = await host.accept()
        device = server_side(server, ws_id(ident))
        chunk = os.urandom(60_000)
        with pytest.raises(ChannelClosed) as info:
            async with asyncio.timeout(30):
                for _ in range(2000):
                    await channel.send(chunk)
                    await asyncio.sleep(0)
        assert info.value.close_code == CloseCode.PEER_GONE
        assert device.closing and device not in server.connections
        assert device.queued_bytes == 0 and not device.queue
        await until(lambda: device.writer is None, "the writer to be cancelled")
        assert not host.closed
        # The host's other channels still work.
        other_ident = Identity.generate()
        await host.publish_allowlist([other_ident.identity_public])
        other = await links(url, other_ident, "device")
        await asyncio.sleep(0.1)
        async with asyncio.timeout(5):
            side = await other.open(host.id)
            host_side = await host.accept()
            await side.send(b"ping")
            assert await host_side.recv() == b"ping"
    finally:
        ws.transport.abort()


async def test_close_after_a_burst_still_reaches_the_peer(relay: tuple[RelayServer, str], links: Links) -> None:
    """CLOSE travels through the same queue as DATA, after it, in order."""
    _, url = relay
    host = await links(url, Identity.generate(), "host")
    ident = Identity.generate()
    await host.publish_allowlist([ident.identity_public])
    await asyncio.sleep(0.1)
    ws = await raw_connect(url)
    try:
        await raw_auth(ws, ident, Role.DEVICE)
        await ws.send(Open(3, host.id).encode())
        async with asyncio.timeout(5):
            assert isinstance(decode_frame(await ws.recv()), Opened)  # type: ignore[arg-type]
            channel = await host.accept()
            for i in range(500):
                await channel.send(b"%d" % i)
            await channel.close(reason="done")
            for i in range(500):
                frame = decode_frame(await ws.recv())  # type: ignore[arg-type]
                assert isinstance(frame, Data) and frame.payload == b"%d" % i
            close = decode_frame(await ws.recv())  # type: ignore[arg-type]
            assert isinstance(close, Close) and close.channel == 3 and close.reason == "done"
    finally:
        await ws.close()


def ws_id(identity: Identity) -> str:
    return identity.id
