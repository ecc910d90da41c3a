"""Relay hardening, in process: per-address and per-device limits, handshake and idle timeouts,
the Origin check and closed admission for hosts. The same attacks against a real relay process
are in tests/security/test_relay_attacks.py."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tether.client.connection import is_retryable
from tether.crypto.keys import Identity
from tether.errors import ConfigError
from tether.protocol.frames import (
    Auth,
    CloseCode,
    Error,
    FrameError,
    Hello,
    Role,
    auth_message,
    close_message,
    decode_frame,
)
from tether.relay.enrollment import (
    KEY_PREFIX,
    create_enroll_key,
    enroll_proof,
    load_enroll_key,
    verify_enroll_proof,
)
from tether.relay.limits import AddressTable, RelayLimits, address_key, connection_cap
from tether.relay.link import ChannelClosed, RelayError, RelayLink
from tether.relay.origin import OriginPolicy, normalize_origin
from tether.relay.server import RelayServer

from .conftest import RelayFactory
from .rawws import RawSocket, Refused
from .test_server import Links, host_and_device, open_pair

pytestmark = pytest.mark.timeout(60)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# --- per-address accounting ----------------------------------------------------------------------


def test_address_keys() -> None:
    limits = RelayLimits()
    assert address_key("203.0.113.7", limits) == "203.0.113.7"
    assert address_key("::ffff:203.0.113.7", limits) == "203.0.113.7"
    # IPv6 counts by /64: a subscriber cannot take 2**64 shares
    assert address_key("2001:db8:1:2:aaaa::1", limits) == address_key("2001:db8:1:2:bbbb::9", limits)
    assert address_key("2001:db8:1:2::1", limits) == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1", limits) != address_key("2001:db8:1:2::1", limits)
    assert address_key("fe80::1%eth0", limits) == "fe80::/64"
    assert address_key("127.0.0.1", limits) == "127.0.0.1"  # loopback is limited unless exempted
    exempt = RelayLimits(exempt_loopback=True)
    assert address_key("127.0.0.1", exempt) is None
    assert address_key("127.0.0.2", exempt) is None
    assert address_key("::1", exempt) is None
    assert address_key("203.0.113.7", exempt) == "203.0.113.7"
    assert address_key("", limits) is None  # a unix socket
    assert address_key("not an address", limits) is None


def test_address_table_caps_and_rates() -> None:
    now = [0.0]
    table = AddressTable(
        RelayLimits(max_connections_per_ip=3, connections_per_ip_per_second=2, connections_per_ip_burst=4),
        clock=lambda: now[0],
    )
    assert [table.open("a") for _ in range(3)] == [None, None, None]
    refusal = table.open("a")
    assert refusal is not None and "at most 3 at once" in refusal
    assert table.open("b") is None  # another address is not affected
    table.close("a")
    table.close("a")  # the refused connection counted until it closed, like any other
    assert table.connections("a") == 2
    # 3 of a's 4 tokens are spent (the refused open took none): one more, then the rate refuses
    assert table.open("a") is None
    table.close("a")
    refusal = table.open("a")
    assert refusal is not None and "too many new connections" in refusal
    table.close("a")
    now[0] += 1.0  # 2 tokens back
    assert table.open("a") is None
    for _ in range(3):
        table.close("a")
    table.close("b")
    assert table.connections("a") == 0 and table.connections("b") == 0


def test_address_table_forgets_quiet_addresses() -> None:
    now = [0.0]
    limits = RelayLimits(connections_per_ip_per_second=10, connections_per_ip_burst=5)
    table = AddressTable(limits, clock=lambda: now[0])
    table.open("192.0.2.1")  # holds a connection: kept
    for i in range(1023):
        table.open(f"10.0.{i // 256}.{i % 256}")
        table.close(f"10.0.{i // 256}.{i % 256}")
    assert len(table) == 1024
    now[0] += 1.0  # every bucket is full again
    table.open("192.0.2.2")  # the table is full: the sweep drops the quiet ones
    assert len(table) == 2
    assert table.connections("192.0.2.1") == 1


async def test_connections_per_ip_are_capped_with_http_429(relay_factory: RelayFactory, links: Links) -> None:
    server, url = await relay_factory(max_connections_per_ip=3)
    held = [await links(url) for _ in range(3)]
    with pytest.raises(RelayError) as info:
        await RelayLink.connect(url, Identity.generate(), "device")
    assert info.value.code == "relay_busy"  # retried by clients, with backoff
    assert is_retryable(info.value)
    assert "HTTP 429" in info.value.message and "at most 3 at once" in info.value.message
    with pytest.raises(InvalidStatus) as raw:
        await connect(url + "/ws")
    assert raw.value.response.status_code == 429
    assert raw.value.response.headers["Retry-After"] == "5"
    await held[0].close()
    async with asyncio.timeout(5):
        while server.addresses.connections("127.0.0.1") > 2:
            await asyncio.sleep(0.01)
    await links(url)  # a freed place is usable again


async def test_new_connections_per_ip_are_rate_limited(relay_factory: RelayFactory) -> None:
    _, url = await relay_factory(connections_per_ip_per_second=0.5, connections_per_ip_burst=3)
    for _ in range(3):
        link = await RelayLink.connect(url, Identity.generate(), "device")
        await link.close()
    with pytest.raises(RelayError) as info:
        await RelayLink.connect(url, Identity.generate(), "device")
    assert "too many new connections" in info.value.message


async def test_pending_http_requests_count_too(relay_factory: RelayFactory) -> None:
    """The count runs from TCP accept: connections that never send a request are counted."""
    server, url = await relay_factory(max_connections_per_ip=2)
    silent = [await RawSocket.connect(port_of(url)) for _ in range(2)]
    async with asyncio.timeout(5):
        while server.addresses.connections("127.0.0.1") < 2:
            await asyncio.sleep(0.01)
    with pytest.raises(Refused) as info:
        await RawSocket.upgrade(port_of(url))
    assert info.value.status == 429
    for sock in silent:
        sock.abort()
    async with asyncio.timeout(5):
        while server.addresses.connections("127.0.0.1"):
            await asyncio.sleep(0.01)


async def test_exempt_loopback(relay_factory: RelayFactory, links: Links) -> None:
    server, url = await relay_factory(max_connections_per_ip=1, connections_per_ip_burst=1, exempt_loopback=True)
    for _ in range(4):
        await links(url)
    assert len(server.addresses) == 0


async def test_forwarded_for_counts_the_proxys_clients(relay_factory: RelayFactory) -> None:
    server, url = await relay_factory(max_connections_per_ip=1, trust_forwarded_for=True)
    port = port_of(url)
    first = await RawSocket.upgrade(port, headers={"X-Forwarded-For": "198.51.100.1"})
    second = await RawSocket.upgrade(port, headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.2"})
    with pytest.raises(Refused) as info:
        # a client can prepend anything; the proxy's own (last) entry is the one counted
        await RawSocket.upgrade(port, headers={"X-Forwarded-For": "192.0.2.200, 198.51.100.1"})
    assert info.value.status == 429 and "198.51.100.1" in info.value.body
    assert server.addresses.connections("198.51.100.2") == 1
    proxy_itself = await RawSocket.upgrade(port)  # no header: the proxy's address is counted
    with pytest.raises(Refused):
        await RawSocket.upgrade(port)
    for sock in (first, second, proxy_itself):
        sock.abort()


@pytest.mark.parametrize(("networks", "trusted"), [(("127.0.0.0/8",), True), (("10.0.0.0/8", "::1/128"), False)])
async def test_a_proxy_on_a_trusted_network_is_counted_by_its_clients(
    relay_factory: RelayFactory, networks: tuple[str, ...], trusted: bool,
) -> None:
    """``--trusted-proxy``: a load balancer on another machine (here, loopback named as its network)
    is counted like a local one; a proxy outside the networks counts as itself, whatever it says."""
    server, url = await relay_factory(max_connections_per_ip=1, trusted_proxies=networks)
    port = port_of(url)
    first = await RawSocket.upgrade(port, headers={"X-Forwarded-For": "198.51.100.1"})
    if trusted:
        second = await RawSocket.upgrade(port, headers={"X-Forwarded-For": "198.51.100.2"})
        assert server.addresses.connections("198.51.100.2") == 1
        second.abort()
    else:
        with pytest.raises(Refused) as info:
            await RawSocket.upgrade(port, headers={"X-Forwarded-For": "198.51.100.2"})
        assert info.value.status == 429 and "127.0.0.1" in info.value.body
    first.abort()


# --- timeouts ------------------------------------------------------------------------------------


async def test_slow_loris_request_is_dropped_after_the_handshake_timeout(relay_factory: RelayFactory) -> None:
    server, url = await relay_factory(handshake_timeout=0.5)
    sock = await RawSocket.connect(port_of(url))
    sock.writer.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")  # never finished
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await sock.closed_by_peer(5)
    assert loop.time() - start < 3
    async with asyncio.timeout(5):
        while server.addresses.connections("127.0.0.1"):
            await asyncio.sleep(0.01)


async def test_idle_device_without_channels_is_closed(relay_factory: RelayFactory, links: Links) -> None:
    _, url = await relay_factory(idle_timeout=0.4)
    host, device = await host_and_device(url, links)  # the device watches the host: not idle
    busy = await links(url)
    await host.publish_allowlist([device.identity.identity_public, busy.identity.identity_public])
    host_side, busy_side = await open_pair(host, busy)
    idle = await RawSocket.upgrade(port_of(url))
    await idle.authenticate(Identity.generate())
    async with asyncio.timeout(5):
        frame = await idle.recv_frame()
    assert isinstance(frame, Error) and frame.code == CloseCode.IDLE_TIMEOUT, frame
    assert frame.message == close_message(CloseCode.IDLE_TIMEOUT)
    await asyncio.sleep(0.6)  # well past the timeout: the others are still there
    assert not host.closed and not device.closed and not busy.closed
    await busy_side.send(b"still open")
    assert await host_side.recv() == b"still open"


# --- per-identity limits -------------------------------------------------------------------------


async def test_connections_per_device_key_are_capped(relay_factory: RelayFactory, links: Links) -> None:
    server, url = await relay_factory(max_connections_per_device=2)
    identity = Identity.generate()
    first = await links(url, identity)
    await links(url, identity)
    with pytest.raises(RelayError) as info:
        await RelayLink.connect(url, identity, "device")
    assert "already has 2 connections" in info.value.message
    await links(url)  # another device is not affected
    await first.close()
    async with asyncio.timeout(5):
        while server.router.device_connections.get(identity.identity_public, 0) > 1:
            await asyncio.sleep(0.01)
    await links(url, identity)


async def test_a_forged_claim_does_not_use_up_a_devices_connections(relay_factory: RelayFactory, links: Links) -> None:
    """Connections are counted only after the signature: nobody can lock a device out."""
    _, url = await relay_factory(max_connections_per_device=1)
    victim = Identity.generate()
    for _ in range(3):
        sock = await RawSocket.upgrade(port_of(url))
        await sock.send(Hello(Role.DEVICE, victim.identity_public).encode())
        await sock.recv_frame()
        await sock.send(Auth(Identity.generate().sign(auth_message(Role.DEVICE, os.urandom(32)))).encode())
        frame = await sock.recv_frame()
        assert isinstance(frame, Error) and frame.code == CloseCode.AUTH_FAILED
        sock.abort()
    await links(url, victim)


# --- closed admission for hosts ------------------------------------------------------------------


def test_enroll_key_file(tmp_path: Path) -> None:
    path = tmp_path / "relay.key"
    key = create_enroll_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith(KEY_PREFIX)
    assert load_enroll_key(path) == key
    with pytest.raises(ConfigError, match="already exists"):
        create_enroll_key(path)
    assert load_enroll_key(path) == key  # never overwritten
    for bad in ("", "tether-enroll-v1:", "tether-enroll-v1:short", "hunter2-" + "A" * 43, KEY_PREFIX + "é" * 43):
        path.write_text(bad)
        with pytest.raises(ConfigError) as info:
            load_enroll_key(path)
        assert "enrollment key" in info.value.message
        secret = bad.removeprefix(KEY_PREFIX)
        assert not secret or secret not in info.value.message  # a key file is never echoed
    with pytest.raises(ConfigError, match="does not exist"):
        load_enroll_key(tmp_path / "missing")


def test_enroll_proof_is_bound_to_nonce_identity_and_key() -> None:
    key, nonce, ident = os.urandom(32), os.urandom(32), os.urandom(32)
    proof = enroll_proof(key, nonce, ident)
    assert verify_enroll_proof(key, proof, nonce, ident)
    assert not verify_enroll_proof(key, proof, os.urandom(32), ident)  # a replay on another connection
    assert not verify_enroll_proof(key, proof, nonce, os.urandom(32))  # another host
    assert not verify_enroll_proof(os.urandom(32), proof, nonce, ident)  # another relay


def test_auth_frame_with_and_without_enrollment() -> None:
    sig, proof = os.urandom(64), os.urandom(32)
    assert decode_frame(Auth(sig).encode()) == Auth(sig)
    assert decode_frame(Auth(sig, proof).encode()) == Auth(sig, proof)
    assert "enrollment" not in repr(Auth(sig, proof))
    with pytest.raises(FrameError):
        decode_frame(Auth(sig).encode() + os.urandom(31))
    with pytest.raises(FrameError):
        Auth(sig, os.urandom(31)).encode()


async def test_enrolled_relay_admits_only_hosts_with_the_key(relay_factory: RelayFactory, links: Links) -> None:
    key = os.urandom(32)
    _, url = await relay_factory(enroll_key=key)
    with pytest.raises(RelayError) as info:
        await RelayLink.connect(url, Identity.generate(), "host")
    assert "this relay only admits enrolled hosts: pass --enroll-key" in info.value.message
    with pytest.raises(RelayError) as info:
        await RelayLink.connect(url, Identity.generate(), "host", enroll_key=os.urandom(32))
    assert "is not this relay's" in info.value.message
    host = await links(url, Identity.generate(), "host", enroll_key=key)
    device = await links(url)  # devices never need it
    await host.publish_allowlist([device.identity.identity_public])
    await device.watch([host.id])
    async with asyncio.timeout(5):
        while not device.presence.get(host.id):
            await device.wait_presence_change()
    host_side, device_side = await open_pair(host, device)
    await device_side.send(b"enrolled")
    assert await host_side.recv() == b"enrolled"


async def test_open_relay_ignores_an_enrollment_proof(relay: tuple[RelayServer, str], links: Links) -> None:
    await links(relay[1], Identity.generate(), "host", enroll_key=os.urandom(32))


# --- Origin --------------------------------------------------------------------------------------


def test_origin_policy() -> None:
    own = OriginPolicy()
    assert own.admits([], "127.0.0.1:8765")  # not a browser
    assert own.admits(["http://127.0.0.1:8765"], "127.0.0.1:8765")
    assert own.admits(["http://localhost:8765"], "LOCALHOST:8765")
    assert own.admits(["https://relay.example.com"], "relay.example.com")  # behind a TLS proxy
    assert own.admits(["https://relay.example.com"], "relay.example.com:443")
    assert not own.admits(["https://relay.example.com"], "relay.example.com:8765")
    assert not own.admits(["https://evil.example"], "relay.example.com")
    assert not own.admits(["http://127.0.0.1:9999"], "127.0.0.1:8765")
    assert not own.admits(["null"], "127.0.0.1:8765")
    assert not own.admits(["file://"], "127.0.0.1:8765")
    assert not own.admits(["http://127.0.0.1:8765", "http://127.0.0.1:8765"], "127.0.0.1:8765")
    assert not own.admits(["http://127.0.0.1:8765"], None)
    public = OriginPolicy("https://relay.example.com/", ["http://dev.example:3000"])
    assert public.admits(["https://relay.example.com"], "127.0.0.1:8765")
    assert public.admits(["https://RELAY.example.com:443"], "anything")
    assert public.admits(["http://dev.example:3000"], "relay.example.com")
    # with a public URL the Host header is not trusted (a DNS-rebinding page names itself there)
    assert not public.admits(["http://127.0.0.1:8765"], "127.0.0.1:8765")
    assert not public.admits(["http://relay.example.com"], "relay.example.com")  # another scheme
    assert normalize_origin("wss://Relay.Example.com") == ("https", "relay.example.com", 443)
    with pytest.raises(ValueError):
        OriginPolicy(None, ["null"])


async def test_cross_origin_upgrades_are_refused_with_403(relay_factory: RelayFactory, links: Links) -> None:
    _, url = await relay_factory()
    port = port_of(url)
    with pytest.raises(InvalidStatus) as info:
        await connect(url + "/ws", origin="https://evil.example")  # type: ignore[arg-type]
    assert info.value.response.status_code == 403
    assert b"cross-origin" in (info.value.response.body or b"")
    same = await connect(url + "/ws", origin=f"http://127.0.0.1:{port}")  # type: ignore[arg-type]
    await same.close()
    await links(url)  # programs send no Origin


async def test_public_url_is_the_only_origin(relay_factory: RelayFactory) -> None:
    _, url = await relay_factory(public_url="https://relay.example.com", allowed_origins=("http://dev.example:3000",))
    for origin in ("https://relay.example.com", "http://dev.example:3000"):
        ws = await connect(url + "/ws", origin=origin)  # type: ignore[arg-type]
        await ws.close()
    with pytest.raises(InvalidStatus) as info:
        await connect(url + "/ws", origin=f"http://127.0.0.1:{port_of(url)}")  # type: ignore[arg-type]
    assert info.value.response.status_code == 403


async def test_static_pages_are_not_subject_to_the_origin_check(relay: tuple[RelayServer, str]) -> None:
    sock = await RawSocket.connect(port_of(relay[1]))
    sock.writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://evil.example\r\n\r\n")
    async with asyncio.timeout(5):
        head = await sock.reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    sock.abort()


# --- per-device and per-offer channels, the socket cap (issue [6]) ---------------------------------


async def test_channels_per_device_count_over_its_connections(relay_factory: RelayFactory, links: Links) -> None:
    server, url = await relay_factory(max_channels_per_device=3)
    host = await links(url, Identity.generate(), "host")
    identity = Identity.generate()
    first, second = await links(url, identity), await links(url, identity)
    other = await links(url)
    await host.publish_allowlist([identity.identity_public, other.identity.identity_public])
    await host.publish_offers([])  # a round trip: the allowlist is applied
    opened = [await first.open(host.id), await second.open(host.id), await first.open(host.id)]
    with pytest.raises(ChannelClosed) as info:
        await second.open(host.id)
    assert info.value.close_code == CloseCode.TOO_MANY_CHANNELS
    assert "this device has 3 channels open through the relay" in info.value.message
    await other.open(host.id)  # another device is not counted against it
    await opened[0].close()
    async with asyncio.timeout(5):
        while server.router.device_channels.get(identity.identity_public) != 2:
            await asyncio.sleep(0.01)
    await second.open(host.id)  # first holds one, second two
    await first.close()  # its channel goes back with the connection
    async with asyncio.timeout(5):
        while server.router.device_channels.get(identity.identity_public) != 2:
            await asyncio.sleep(0.01)


async def test_channels_per_pairing_offer_are_capped(relay_factory: RelayFactory, links: Links) -> None:
    _, url = await relay_factory(max_channels_per_offer=2)
    host = await links(url, Identity.generate(), "host")
    await host.publish_offers(["offer-1"])
    await host.publish_allowlist([])  # a round trip: the offers are applied
    for _ in range(2):
        await (await links(url)).open(host.id, offer_id="offer-1")  # a fresh key each time
    with pytest.raises(ChannelClosed) as info:
        await (await links(url)).open(host.id, offer_id="offer-1")
    assert info.value.close_code == CloseCode.TOO_MANY_CHANNELS
    assert "this pairing link already has channels open" in info.value.message


async def test_sockets_over_the_relay_cap_get_http_503(relay_factory: RelayFactory, links: Links) -> None:
    server, url = await relay_factory(max_connections=2)
    held = [await links(url) for _ in range(2)]
    with pytest.raises(RelayError) as info:
        await RelayLink.connect(url, Identity.generate(), "device")
    assert "HTTP 503" in info.value.message and "limit of 2 connections at once" in info.value.message
    assert info.value.hint is not None and "limit of connections" in info.value.hint
    with pytest.raises(InvalidStatus) as raw:
        await connect(url + "/ws")
    assert raw.value.response.headers["Retry-After"] == "5"
    await held[0].close()
    async with asyncio.timeout(5):
        while server.sockets.open > 1:
            await asyncio.sleep(0.01)
    await links(url)


def test_the_socket_cap_leaves_room_for_refused_sockets() -> None:
    for limit in (64, 256, 1024, 20_000, 1 << 20):
        cap, batch = connection_cap(limit)
        # about four loop passes of accepted-then-refused sockets, plus the process's own files
        assert 0 < cap < limit and limit - cap >= 4 * batch + 16, (limit, cap, batch)


async def test_http_requests_with_a_body_or_another_method(relay: tuple[RelayServer, str]) -> None:
    port = int(relay[1].rsplit(":", 1)[1])
    for request, status in (
        (b"GET / HTTP/1.1\r\nHost: r\r\nContent-Length: 5\r\n\r\nhello", b"400"),
        (b"POST /ws HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n", b"400"),
        (b"NONSENSE\r\n\r\n", b"400"),
        (b"DELETE /healthz HTTP/1.1\r\nHost: r\r\n\r\n", b"405"),
        (b"HEAD /ws HTTP/1.1\r\nHost: r\r\n\r\n", b"405"),
        (b"HEAD /healthz HTTP/1.1\r\nHost: r\r\n\r\n", b"200"),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        async with asyncio.timeout(5):
            answer = await reader.read()  # to EOF: the relay closes after answering
        writer.close()
        assert answer.split(b" ", 2)[1] == status, (request, answer)
        if request.startswith(b"HEAD"):
            assert answer.endswith(b"\r\n\r\n")  # headers only
        if status == b"405":
            assert b"\r\nAllow: " in answer


async def test_out_of_descriptor_accept_errors_are_logged_once_per_interval(
    relay: tuple[RelayServer, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Python 3.11 reports EMFILE from accept() a hundred times per loop pass (issue [6] item 9)."""
    loop = asyncio.get_running_loop()
    with caplog.at_level(logging.INFO, logger="tether.relay"):
        for _ in range(500):
            loop.call_exception_handler(
                {
                    "message": "socket.accept() out of system resource",
                    "exception": OSError(errno.EMFILE, "Too many open files"),
                }
            )
    assert [r.getMessage() for r in caplog.records] == ["cannot accept connections: Too many open files"]
