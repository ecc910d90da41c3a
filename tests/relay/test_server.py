"""The relay over real sockets on 127.0.0.1: admission, routing, allowlists, presence, limits."""

from __future__ import annotations

import asyncio
import os
import random
import select
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tether.crypto.keys import Identity
from tether.protocol.frames import (
    Allowlist,
    Auth,
    Challenge,
    Close,
    CloseCode,
    Data,
    Error,
    FrameType,
    Hello,
    Open,
    Opened,
    Presence,
    Role,
    Watch,
    auth_message,
    decode_frame,
    encode_data,
)
from tether.relay.link import Channel, ChannelClosed, RelayError, RelayLink
from tether.relay.listen import parse_listen
from tether.relay.server import RelayServer

from .conftest import RelayFactory, raw_auth, raw_connect

pytestmark = pytest.mark.timeout(60)

Links = Callable[..., Awaitable[RelayLink]]


async def expect_error(ws: object, code: CloseCode) -> Error:
    """The next frame is ERROR(code), then the relay closes the socket."""
    async with asyncio.timeout(5):
        frame = decode_frame(await ws.recv())  # type: ignore[attr-defined]
        assert isinstance(frame, Error), frame
        assert frame.code == code, frame
        with pytest.raises(ConnectionClosed):
            await ws.recv()  # type: ignore[attr-defined]
    return frame


async def wait_presence(link: RelayLink, host_id: str, online: bool) -> None:
    async with asyncio.timeout(5):
        while link.presence.get(host_id) is not online:
            await link.wait_presence_change()


async def host_and_device(
    url: str, links: Links, *, host_identity: Identity | None = None, **device_kw: object
) -> tuple[RelayLink, RelayLink]:
    """A host that allowlists a device, and that device, once the relay has applied the list."""
    host = await links(url, host_identity or Identity.generate(), "host")
    device = await links(url, Identity.generate(), "device", **device_kw)
    await host.publish_allowlist([device.identity.identity_public])
    await device.watch([host.id])
    await wait_presence(device, host.id, True)
    return host, device


async def open_pair(host: RelayLink, device: RelayLink) -> tuple[Channel, Channel]:
    async with asyncio.timeout(5):
        device_side = await device.open(host.id)
        host_side = await host.accept()
    return host_side, device_side


# --- admission -----------------------------------------------------------------------------------


async def test_bad_signature_is_refused(relay: tuple[RelayServer, str]) -> None:
    ident = Identity.generate()
    async with await raw_connect(relay[1]) as ws:
        await ws.send(Hello(Role.DEVICE, ident.identity_public).encode())
        challenge = decode_frame(await ws.recv())  # type: ignore[arg-type]
        assert isinstance(challenge, Challenge)
        forged = Identity.generate().sign(auth_message(Role.DEVICE, challenge.nonce))
        await ws.send(Auth(forged).encode())
        err = await expect_error(ws, CloseCode.AUTH_FAILED)
        assert "identity key" in err.message


async def test_signature_for_another_role_is_refused(relay: tuple[RelayServer, str]) -> None:
    ident = Identity.generate()
    async with await raw_connect(relay[1]) as ws:
        await ws.send(Hello(Role.HOST, ident.identity_public).encode())
        challenge = decode_frame(await ws.recv())  # type: ignore[arg-type]
        assert isinstance(challenge, Challenge)
        await ws.send(Auth(ident.sign(auth_message(Role.DEVICE, challenge.nonce))).encode())
        await expect_error(ws, CloseCode.AUTH_FAILED)


async def test_unknown_role_is_a_protocol_error(relay: tuple[RelayServer, str]) -> None:
    async with await raw_connect(relay[1]) as ws:
        await ws.send(bytes([FrameType.HELLO, 0, 1, 9]) + bytes(32))
        err = await expect_error(ws, CloseCode.PROTOCOL_ERROR)
        assert "role" in err.message


async def test_other_version_is_refused(relay: tuple[RelayServer, str]) -> None:
    async with await raw_connect(relay[1]) as ws:
        await ws.send(Hello(Role.DEVICE, bytes(32), version=99).encode())
        err = await expect_error(ws, CloseCode.UNSUPPORTED_VERSION)
        assert "upgrade" in err.message


@pytest.mark.parametrize(
    "first",
    [encode_data(1, b"x"), Open(1, "HOST").encode(), b"garbage", Watch(("A",)).encode()],
)
async def test_frames_before_hello_close_the_connection(relay: tuple[RelayServer, str], first: bytes) -> None:
    async with await raw_connect(relay[1]) as ws:
        await ws.send(first)
        await expect_error(ws, CloseCode.PROTOCOL_ERROR)


async def test_frames_before_auth_close_the_connection(relay: tuple[RelayServer, str]) -> None:
    async with await raw_connect(relay[1]) as ws:
        await ws.send(Hello(Role.DEVICE, Identity.generate().identity_public).encode())
        await ws.recv()
        await ws.send(encode_data(1, b"sneaky"))
        err = await expect_error(ws, CloseCode.PROTOCOL_ERROR)
        assert "AUTH" in err.message


async def test_text_messages_are_refused(relay: tuple[RelayServer, str]) -> None:
    async with await raw_connect(relay[1]) as ws:
        await ws.send("hello")
        await expect_error(ws, CloseCode.PROTOCOL_ERROR)


async def test_auth_timeout(relay_factory: RelayFactory) -> None:
    _, url = await relay_factory(auth_timeout=0.3)
    async with await raw_connect(url) as ws:
        await ws.send(Hello(Role.DEVICE, Identity.generate().identity_public).encode())
        await ws.recv()
        start = time.monotonic()
        await expect_error(ws, CloseCode.AUTH_TIMEOUT)
        assert time.monotonic() - start < 2


async def test_link_reports_unreachable_relay() -> None:
    with pytest.raises(RelayError) as info:
        await RelayLink.connect("ws://127.0.0.1:9", Identity.generate(), "device", open_timeout=2)
    assert "cannot reach the relay at ws://127.0.0.1:9" in info.value.message
    assert info.value.hint


async def test_link_reports_refusal(relay_factory: RelayFactory) -> None:
    _, url = await relay_factory(auth_timeout=0.0001)
    with pytest.raises(RelayError) as info:
        await RelayLink.connect(url, Identity.generate(), "device")
    assert "refused" in info.value.message or "authentication" in info.value.message


async def test_welcome_carries_the_id(relay: tuple[RelayServer, str], links: Links) -> None:
    ident = Identity.generate()
    link = await links(relay[1], ident, "host")
    assert link.id == ident.id
    assert link.max_frame_bytes == 70_000


# --- channels ------------------------------------------------------------------------------------


async def test_data_flows_both_ways_unchanged(relay: tuple[RelayServer, str], links: Links) -> None:
    host, device = await host_and_device(relay[1], links)
    host_side, device_side = await open_pair(host, device)
    assert host_side.peer_identity == device.identity.identity_public
    assert host_side.offer_id is None
    payloads = [b"", b"\x00", os.urandom(1000), os.urandom(65_535), bytes(range(256)) * 10]
    async with asyncio.timeout(10):
        for payload in payloads:
            await device_side.send(payload)
            await host_side.send(payload[::-1])
        for payload in payloads:
            assert await host_side.recv() == payload
            assert await device_side.recv() == payload[::-1]


async def test_many_channels_share_one_host_connection(relay: tuple[RelayServer, str], links: Links) -> None:
    host = await links(relay[1], Identity.generate(), "host")
    devices = [await links(relay[1]) for _ in range(3)]
    await host.publish_allowlist([d.identity.identity_public for d in devices])
    for d in devices:
        await d.watch([host.id])
        await wait_presence(d, host.id, True)
    async with asyncio.timeout(10):
        pairs = []
        for d in devices:
            for _ in range(2):
                dev_ch = await d.open(host.id)
                pairs.append((dev_ch, await host.accept()))
        for i, (dev_ch, host_ch) in enumerate(pairs):
            await dev_ch.send(b"to host %d" % i)
            await host_ch.send(b"to device %d" % i)
        for i, (dev_ch, host_ch) in enumerate(pairs):
            assert await host_ch.recv() == b"to host %d" % i
            assert await dev_ch.recv() == b"to device %d" % i
    assert len({h.id for _, h in pairs}) == 6


async def test_close_is_forwarded_with_its_reason(relay: tuple[RelayServer, str], links: Links) -> None:
    host, device = await host_and_device(relay[1], links)
    host_side, device_side = await open_pair(host, device)
    await host_side.send(b"last words")
    await host_side.close(CloseCode.NORMAL, "session over")
    async with asyncio.timeout(5):
        assert await device_side.recv() == b"last words"
        with pytest.raises(ChannelClosed) as info:
            await device_side.recv()
    assert info.value.close_code == CloseCode.NORMAL
    assert info.value.message == "session over"
    with pytest.raises(ChannelClosed):
        await host_side.send(b"more")


async def test_not_on_the_allowlist(relay: tuple[RelayServer, str], links: Links) -> None:
    """Refused, and told exactly what a host that is not connected would tell it: a stranger
    must not learn whether the host is online."""
    host, _ = await host_and_device(relay[1], links)
    stranger = await links(relay[1])
    with pytest.raises(ChannelClosed) as info:
        await stranger.open(host.id)
    with pytest.raises(ChannelClosed) as offline:
        await stranger.open(Identity.generate().id)
    assert info.value.close_code == offline.value.close_code == CloseCode.HOST_OFFLINE
    assert info.value.message == offline.value.message
    assert "tether pair" in info.value.message


async def test_pairing_offer_admits_and_unknown_offer_is_refused(relay: tuple[RelayServer, str], links: Links) -> None:
    host, device = await host_and_device(relay[1], links)
    await host.publish_offers(["offer-1", "offer-2"])
    await open_pair(host, device)  # a round trip through the relay: the offers are applied
    newcomer = await links(relay[1])
    async with asyncio.timeout(5):
        channel = await newcomer.open(host.id, offer_id="offer-2")
        incoming = await host.accept()
    assert incoming.offer_id == "offer-2"
    assert incoming.peer_identity == newcomer.identity.identity_public
    await channel.send(b"pair me")
    assert await incoming.recv() == b"pair me"
    with pytest.raises(ChannelClosed) as info:
        await newcomer.open(host.id, offer_id="offer-3")
    with pytest.raises(ChannelClosed) as offline:
        await newcomer.open(Identity.generate().id, offer_id="offer-3")
    assert info.value.close_code == offline.value.close_code == CloseCode.HOST_OFFLINE
    assert info.value.message == offline.value.message
    assert "already used or expired" in info.value.message and "offline" in info.value.message
    # The host withdraws every offer: the old one stops working.
    await host.publish_offers([])
    await open_pair(host, device)
    with pytest.raises(ChannelClosed) as info:
        await newcomer.open(host.id, offer_id="offer-2")
    assert info.value.close_code == CloseCode.HOST_OFFLINE


async def test_host_offline(relay: tuple[RelayServer, str], links: Links) -> None:
    device = await links(relay[1])
    with pytest.raises(ChannelClosed) as info:
        await device.open(Identity.generate().id)
    assert info.value.close_code == CloseCode.HOST_OFFLINE
    assert "offline" in info.value.message


async def test_allowlist_update_revokes_live_channels_at_once(relay: tuple[RelayServer, str], links: Links) -> None:
    host, device = await host_and_device(relay[1], links)
    keeper = await links(relay[1])
    await host.publish_allowlist([device.identity.identity_public, keeper.identity.identity_public])
    await keeper.watch([host.id])
    await wait_presence(keeper, host.id, True)
    host_a, dev_a = await open_pair(host, device)
    host_b, dev_b = await open_pair(host, keeper)
    await host.publish_allowlist([keeper.identity.identity_public])
    async with asyncio.timeout(2):
        with pytest.raises(ChannelClosed) as info:
            await dev_a.recv()
        assert info.value.close_code == CloseCode.REVOKED
        with pytest.raises(ChannelClosed) as info:
            await host_a.recv()
        assert info.value.close_code == CloseCode.REVOKED
        await wait_presence(device, host.id, False)  # presence is for allowlisted devices only
        await dev_b.send(b"still here")
        assert await host_b.recv() == b"still here"
    with pytest.raises(ChannelClosed) as info:
        await device.open(host.id)
    assert info.value.close_code == CloseCode.HOST_OFFLINE  # the same answer as for an offline host


async def test_large_allowlists_travel_in_chunks(relay: tuple[RelayServer, str], links: Links) -> None:
    host = await links(relay[1], Identity.generate(), "host")
    device = await links(relay[1])
    others = [os.urandom(32) for _ in range(5000)]
    await host.publish_allowlist([*others, device.identity.identity_public])
    await device.watch([host.id])
    await wait_presence(device, host.id, True)
    await open_pair(host, device)


async def test_allowlist_over_the_limit_closes_the_host(relay_factory: RelayFactory, links: Links) -> None:
    _, url = await relay_factory(max_allowlist=10)
    host = await links(url, Identity.generate(), "host")
    await host.publish_allowlist([os.urandom(32) for _ in range(11)])
    async with asyncio.timeout(5):
        await host.wait_closed()
    assert "more than 10 keys" in host.close_reason


# --- presence and disconnects --------------------------------------------------------------------


async def test_presence_on_and_off(relay: tuple[RelayServer, str], links: Links) -> None:
    host_ident = Identity.generate()
    device = await links(relay[1])
    stranger = await links(relay[1])
    await device.watch([host_ident.id])
    await stranger.watch([host_ident.id])
    await wait_presence(device, host_ident.id, False)
    await wait_presence(stranger, host_ident.id, False)
    host = await links(relay[1], host_ident, "host")
    await host.publish_allowlist([device.identity.identity_public])
    await wait_presence(device, host.id, True)
    await host.close()
    await wait_presence(device, host.id, False)
    assert stranger.presence[host_ident.id] is False  # never told anything else


async def test_host_disconnect_closes_device_channels_at_once(relay: tuple[RelayServer, str], links: Links) -> None:
    host, device = await host_and_device(relay[1], links)
    _, device_side = await open_pair(host, device)
    await host.close()
    async with asyncio.timeout(2):
        with pytest.raises(ChannelClosed) as info:
            await device_side.recv()
    assert info.value.close_code == CloseCode.PEER_GONE
    assert "host disconnected" in info.value.message


async def test_device_disconnect_closes_host_channels_at_once(relay: tuple[RelayServer, str], links: Links) -> None:
    host, device = await host_and_device(relay[1], links)
    host_side, _ = await open_pair(host, device)
    await device.close()
    async with asyncio.timeout(2):
        with pytest.raises(ChannelClosed) as info:
            await host_side.recv()
    assert info.value.close_code == CloseCode.PEER_GONE
    assert not host.closed


async def test_second_host_connection_replaces_the_first(relay: tuple[RelayServer, str], links: Links) -> None:
    ident = Identity.generate()
    first, device = await host_and_device(relay[1], links, host_identity=ident)
    _, old_channel = await open_pair(first, device)
    second = await links(relay[1], ident, "host")
    async with asyncio.timeout(5):
        await first.wait_closed()
        with pytest.raises(ChannelClosed) as info:
            await old_channel.recv()
        assert info.value.close_code == CloseCode.PEER_GONE
    assert "took over" in first.close_reason
    assert first.close_code == CloseCode.REPLACED
    with pytest.raises(RelayError):
        await first.accept()
    # The allowlist carries over: the device reaches the new connection without a republish.
    host_side, device_side = await open_pair(second, device)
    await device_side.send(b"hi")
    assert await host_side.recv() == b"hi"
    assert device.presence[ident.id] is True


async def test_relay_shutdown_wakes_every_waiter(relay_factory: RelayFactory, links: Links) -> None:
    server, url = await relay_factory()
    host, device = await host_and_device(url, links)
    _, device_side = await open_pair(host, device)
    accept = asyncio.create_task(host.accept())
    recv = asyncio.create_task(device_side.recv())
    presence = asyncio.create_task(device.wait_presence_change())
    await asyncio.sleep(0.05)
    await server.close()
    async with asyncio.timeout(5):
        with pytest.raises(RelayError):
            await accept
        with pytest.raises(ChannelClosed):
            await recv
        with pytest.raises(RelayError):
            await presence
    assert "shutting down" in device.close_reason
    with pytest.raises(RelayError):
        await device.open(host.id)


# --- limits and hostile clients ------------------------------------------------------------------


async def test_role_violations_close_the_connection(relay: tuple[RelayServer, str]) -> None:
    async with await raw_connect(relay[1]) as ws:
        await raw_auth(ws, Identity.generate(), Role.DEVICE)
        await ws.send(Allowlist((bytes(32),)).encode())
        err = await expect_error(ws, CloseCode.PROTOCOL_ERROR)
        assert "device may not send ALLOWLIST" in err.message
    async with await raw_connect(relay[1]) as ws:
        await raw_auth(ws, Identity.generate(), Role.HOST)
        await ws.send(Open(1, "SOMEHOST").encode())
        await expect_error(ws, CloseCode.PROTOCOL_ERROR)


async def test_oversize_frame_closes_only_the_offender(relay: tuple[RelayServer, str], links: Links) -> None:
    host, device = await host_and_device(relay[1], links)
    host_side, device_side = await open_pair(host, device)
    async with await raw_connect(relay[1]) as ws:
        await raw_auth(ws, Identity.generate(), Role.DEVICE)
        await ws.send(encode_data(1, bytes(100_000)))
        async with asyncio.timeout(5):
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    await device_side.send(b"fine")
    assert await host_side.recv() == b"fine"


async def test_garbage_clients_never_hurt_others(relay: tuple[RelayServer, str], links: Links) -> None:
    host, device = await host_and_device(relay[1], links)
    host_side, device_side = await open_pair(host, device)
    rng = random.Random(1234)
    types = [int(t) for t in FrameType] + [0x00, 0x7F, 0xFF]

    async def garbage(authenticated: bool) -> None:
        async with await raw_connect(relay[1]) as ws:
            if authenticated:
                await raw_auth(ws, Identity.generate(), rng.choice([Role.HOST, Role.DEVICE]))
            try:
                for _ in range(50):
                    body = rng.randbytes(rng.randint(0, 80))
                    await ws.send(bytes([rng.choice(types)]) + body)
            except ConnectionClosed:
                pass

    async with asyncio.timeout(20):
        for round_ in range(30):
            await asyncio.gather(*(garbage(authenticated=(i + round_) % 2 == 0) for i in range(4)))
            await device_side.send(b"ping %d" % round_)
            assert await host_side.recv() == b"ping %d" % round_
            await host_side.send(b"pong %d" % round_)
            assert await device_side.recv() == b"pong %d" % round_


async def test_data_on_a_channel_not_ours_goes_nowhere(relay: tuple[RelayServer, str], links: Links) -> None:
    host, device = await host_and_device(relay[1], links)
    host_side, device_side = await open_pair(host, device)
    async with await raw_connect(relay[1]) as ws:
        await raw_auth(ws, Identity.generate(), Role.DEVICE)
        await ws.send(encode_data(device_side.id, b"injected"))
        await ws.send(Close(device_side.id, CloseCode.REVOKED, "fake").encode())
        await device_side.send(b"genuine")
        assert await host_side.recv() == b"genuine"
    await host_side.send(b"still open")
    assert await device_side.recv() == b"still open"


async def test_slow_reader_is_closed_while_other_channel_stays_fast(relay_factory: RelayFactory, links: Links) -> None:
    _, url = await relay_factory(channel_queue_bytes=256 * 1024)
    host = await links(url, Identity.generate(), "host")
    fast = await links(url)
    slow_ident = Identity.generate()
    await host.publish_allowlist([fast.identity.identity_public, slow_ident.identity_public])
    await fast.watch([host.id])
    await wait_presence(fast, host.id, True)
    fast_host, fast_dev = await open_pair(host, fast)

    # A device that opens a channel and then never reads its socket again.
    from websockets.asyncio.client import connect

    slow = await connect(url + "/ws", compression=None, max_queue=1, ping_interval=None, max_size=None)
    try:
        await raw_auth(slow, slow_ident, Role.DEVICE)
        await slow.send(Open(7, host.id).encode())
        async with asyncio.timeout(5):
            while True:  # WATCH was never sent: the first frames are OPENED
                frame = decode_frame(await slow.recv())  # type: ignore[arg-type]
                if isinstance(frame, Opened):
                    break
            slow_host = await host.accept()

        async def flood() -> int:
            chunk = os.urandom(60_000)
            for sent in range(3000):
                try:
                    await slow_host.send(chunk)
                except ChannelClosed as closed:
                    assert closed.close_code == CloseCode.TOO_SLOW
                    return sent
            raise AssertionError("the slow channel was never closed")

        async def echo() -> list[float]:
            times = []
            for i in range(40):
                start = time.monotonic()
                await fast_dev.send(b"x%d" % i)
                assert await fast_host.recv() == b"x%d" % i
                await fast_host.send(b"y%d" % i)
                assert await fast_dev.recv() == b"y%d" % i
                times.append(time.monotonic() - start)
                await asyncio.sleep(0.005)
            return times

        async with asyncio.timeout(30):
            flood_task = asyncio.create_task(flood())
            times = await echo()
            sent = await flood_task
            with pytest.raises(ChannelClosed) as info:
                while True:
                    await slow_host.recv()
        assert info.value.close_code == CloseCode.TOO_SLOW
        assert sent > 0
        assert max(times) < 1.0, times
    finally:
        slow.transport.abort()  # it never reads, so a polite close would wait for its timeout


async def test_link_closes_a_channel_its_program_does_not_read(relay: tuple[RelayServer, str], links: Links) -> None:
    host, device = await host_and_device(relay[1], links, inbox_frames=10)
    host_side, device_side = await open_pair(host, device)
    async with asyncio.timeout(5):
        with pytest.raises(ChannelClosed) as info:
            for i in range(1000):
                await host_side.send(b"%d" % i)
                await asyncio.sleep(0)
        assert info.value.close_code == CloseCode.TOO_SLOW
    received = []
    with pytest.raises(ChannelClosed) as info:
        while True:
            received.append(await device_side.recv())
    assert received == [b"%d" % i for i in range(10)]  # what was queued is still delivered
    assert info.value.close_code == CloseCode.TOO_SLOW
    assert "did not read" in info.value.message
    assert not device.closed


async def test_opens_are_rate_limited(relay_factory: RelayFactory, links: Links) -> None:
    _, url = await relay_factory(opens_per_minute=5)
    host, device = await host_and_device(url, links)
    async with asyncio.timeout(5):
        for _ in range(5):
            await device.open(host.id)
        with pytest.raises(ChannelClosed) as info:
            await device.open(host.id)
    assert info.value.close_code == CloseCode.RATE_LIMITED


async def test_channels_per_connection_are_bounded(relay_factory: RelayFactory, links: Links) -> None:
    _, url = await relay_factory(max_channels_per_connection=3)
    host, device = await host_and_device(url, links)
    async with asyncio.timeout(5):
        for _ in range(3):
            await device.open(host.id)
        with pytest.raises(ChannelClosed) as info:
            await device.open(host.id)
    assert info.value.close_code == CloseCode.TOO_MANY_CHANNELS


async def test_frame_rate_limit_applies_backpressure(relay_factory: RelayFactory, links: Links) -> None:
    _, url = await relay_factory(frames_per_second=200, frames_burst=10)
    host, device = await host_and_device(url, links)
    host_side, device_side = await open_pair(host, device)
    start = time.monotonic()
    async with asyncio.timeout(10):
        for i in range(60):
            await device_side.send(b"%d" % i)
        for i in range(60):
            assert await host_side.recv() == b"%d" % i  # slowed down, nothing dropped
    assert time.monotonic() - start > 0.15


async def test_raw_watch_gets_presence_at_once(relay: tuple[RelayServer, str], links: Links) -> None:
    host = await links(relay[1], Identity.generate(), "host")
    async with await raw_connect(relay[1]) as ws:
        await raw_auth(ws, Identity.generate(), Role.DEVICE)
        await ws.send(Watch((host.id, "NOBODY")).encode())
        async with asyncio.timeout(5):
            got = {decode_frame(await ws.recv()) for _ in range(2)}  # type: ignore[arg-type]
        assert got == {Presence(host.id, False), Presence("NOBODY", False)}


# --- HTTP ----------------------------------------------------------------------------------------


async def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    async with asyncio.timeout(5):
        raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


async def test_healthz_and_no_static(relay: tuple[RelayServer, str]) -> None:
    server = relay[0]
    status, _, body = await http_get(server.port, "/healthz")
    assert (status, body) == (200, b"ok\n")
    status, _, _ = await http_get(server.port, "/")
    assert status == 404


async def test_static_files(relay_factory: RelayFactory, tmp_path: Path) -> None:
    static = tmp_path / "static"
    (static / "js").mkdir(parents=True)
    (static / "index.html").write_text("<h1>tether</h1>")
    (static / "js" / "app.js").write_text("console.log(1)")
    (static / "manifest.webmanifest").write_text("{}")
    (tmp_path / "secret.txt").write_text("do not serve")
    (static / "escape.txt").symlink_to(tmp_path / "secret.txt")
    server, _ = await relay_factory(static_dir=static)
    status, headers, body = await http_get(server.port, "/")
    assert (status, body) == (200, b"<h1>tether</h1>")
    assert headers["content-type"].startswith("text/html")
    status, headers, body = await http_get(server.port, "/js/app.js?v=1")
    assert status == 200 and body == b"console.log(1)"
    assert headers["content-type"].startswith("text/javascript")
    assert headers["x-content-type-options"] == "nosniff"
    status, headers, _ = await http_get(server.port, "/manifest.webmanifest")
    assert headers["content-type"] == "application/manifest+json"
    for path in ["/../secret.txt", "/js/../../secret.txt", "/%2e%2e/secret.txt", "/escape.txt", "/nope.js"]:
        status, _, body = await http_get(server.port, path)
        assert status == 404, path
        assert b"do not serve" not in body


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8765") == ("127.0.0.1", 8765)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen(":80") == ("127.0.0.1", 80)  # every interface only when said: 0.0.0.0:80
    from tether.errors import UsageError

    for bad in ["8765", "host:", "host:99999", "host:http"]:
        with pytest.raises(UsageError):
            parse_listen(bad)


async def test_raw_device_data_roundtrip_keeps_channel_ids(relay: tuple[RelayServer, str], links: Links) -> None:
    host = await links(relay[1], Identity.generate(), "host")
    ident = Identity.generate()
    await host.publish_allowlist([ident.identity_public])
    async with await raw_connect(relay[1]) as ws:
        await raw_auth(ws, ident, Role.DEVICE)
        await ws.send(Watch((host.id,)).encode())
        assert decode_frame(await ws.recv()) == Presence(host.id, True)  # type: ignore[arg-type]
        await ws.send(Open(42, host.id).encode())
        assert decode_frame(await ws.recv()) == Opened(42)  # type: ignore[arg-type]
        incoming = await host.accept()
        await ws.send(encode_data(42, b"payload"))
        assert await incoming.recv() == b"payload"
        await incoming.send(b"reply")
        assert decode_frame(await ws.recv()) == Data(42, b"reply")  # type: ignore[arg-type]


async def test_run_relay_serves_until_cancelled(caplog: pytest.LogCaptureFixture) -> None:
    from tether.relay.server import run_relay

    caplog.set_level("INFO", logger="tether.relay")
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_relay("127.0.0.1:0", "https://relay.example", ready=ready))
    try:
        async with asyncio.timeout(5):
            port = await ready
        status, _, _ = await http_get(port, "/healthz")
        assert status == 200
        assert any("relay listening on ws://127.0.0.1:" in r.getMessage() for r in caplog.records)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_connections_arriving_at_once_wait_for_the_relay_not_for_a_retry() -> None:
    """After a node dies its hosts all dial another at once. While the relay is busy (here: its
    loop is blocked), the kernel completes their TCP handshakes and queues them, far past the 100
    connections asyncio accepts per loop pass; a full queue would drop their SYNs, to be sent again
    1, 3, 7 s later."""
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    dialers = min(600, somaxconn - 8)
    if dialers <= 200:
        pytest.skip(f"net.core.somaxconn is {somaxconn}: too low to tell a bigger queue from asyncio's")

    async def started() -> tuple[RelayServer, int]:
        server = RelayServer()
        return server, await server.start("127.0.0.1", 0)

    loop = asyncio.new_event_loop()
    server, port = loop.run_until_complete(started())
    socks = []
    try:
        # the loop does not run from here on: nothing is accepted
        for _ in range(dialers):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            socks.append(sock)
        poll = select.poll()
        for sock in socks:
            poll.register(sock, select.POLLOUT)
        deadline = time.monotonic() + 5
        connected: set[int] = set()
        while len(connected) < dialers and time.monotonic() < deadline:
            for fd, _ in poll.poll(100):
                poll.unregister(fd)
                connected.add(fd)
        assert len(connected) == dialers
        assert all(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 for sock in socks)
    finally:
        for sock in socks:
            sock.close()
        loop.run_until_complete(server.close())
        loop.close()
