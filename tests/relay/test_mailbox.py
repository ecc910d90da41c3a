"""The relay's mailbox ([9] part 2): what it holds for a host that is away, for whom, within which
bounds, and across a restart of the relay. Real relays and links on 127.0.0.1; the blobs are
opaque to the relay, so random bytes stand in for sealed ones here (tests/crypto/test_seal.py
seals real ones)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection

from tests.relay.conftest import RelayFactory, raw_auth, raw_connect
from tests.support.redis_server import RedisCluster, RedisServer
from tether.crypto.keys import Identity
from tether.protocol.frames import (
    OLDEST_PROTOCOL_VERSION,
    Auth,
    Challenge,
    CloseCode,
    Hello,
    MailboxError,
    MailboxGet,
    MailboxSnapshot,
    Role,
    Welcome,
    auth_message,
    decode_frame,
)
from tether.relay import server as server_module
from tether.relay.cluster.mailbox import SharedMailbox
from tether.relay.cluster.redis_client import connect
from tether.relay.errors import MailboxRefusal
from tether.relay.link import RelayLink
from tether.relay.mailbox import WRITES_PER_MINUTE, Mailbox, MailboxLimits, Store

Links = Callable[..., Awaitable[RelayLink]]


OpenBox = Callable[..., Awaitable[Store]]


STORES = ["sqlite", "redis", pytest.param("redis-cluster", marks=[pytest.mark.cluster, pytest.mark.slow])]


@pytest.fixture(scope="module")
def redis_servers() -> Iterator[dict[str, RedisServer | RedisCluster]]:
    """The module's redis-server and Redis Cluster, each started when a test first needs it (a
    cluster takes 2 s to start): every test uses hosts of its own."""
    started: dict[str, RedisServer | RedisCluster] = {}
    yield started
    for server in started.values():
        server.close()


@pytest.fixture(params=STORES)
async def open_box(request: pytest.FixtureRequest, tmp_path: Path,
                   redis_servers: dict[str, RedisServer | RedisCluster]) -> AsyncIterator[OpenBox]:
    """Open a mailbox (``open_box(limits)``) in one relay's SQLite file, or in Redis as a cluster
    node keeps it (``cluster/mailbox.py``; a real redis-server, or a Redis Cluster of 3 masters):
    the same tests hold for all three."""
    opened: list[Store] = []
    client = None
    if request.param != "sqlite":
        if request.param not in redis_servers:
            redis_servers[request.param] = RedisServer() if request.param == "redis" else RedisCluster()
        server = redis_servers[request.param]
        client = await connect(server.seeds if isinstance(server, RedisCluster) else [server.url])

    async def open(limits: MailboxLimits | None = None) -> Store:
        box: Store
        if client is not None:
            box = SharedMailbox(client, limits or MailboxLimits())
        else:
            box = await Mailbox.open(tmp_path / "relay" / f"mailbox{len(opened)}.db", limits)
        opened.append(box)
        return box

    try:
        yield open
    finally:
        for box in opened:
            await box.close()
        if client is not None:
            await client.aclose()


@pytest.fixture
async def box(open_box: OpenBox) -> Store:
    return await open_box()


async def host_with(links: Links, url: str, host: Identity, *devices: Identity) -> RelayLink:
    """The host, connected, its allowlist published and stored: the relay stores it before it
    answers the host's next mailbox request (a TAKE here), and devices on other connections may
    rely on it only then (a cluster's mailbox stores it in Redis, a round trip away)."""
    link = await links(url, host, "host")
    await link.publish_allowlist(d.identity_public for d in devices)
    await link.take()
    return link


async def test_a_snapshot_left_for_a_device_is_read_by_it_alone_once_the_host_is_away(
    relay_factory: RelayFactory, links: Links, box: Store
) -> None:
    _, url = await relay_factory(mailbox=box)
    host, phone, other = Identity.generate(), Identity.generate(), Identity.generate()
    link = await host_with(links, url, host, phone)
    sealed = os.urandom(2000)
    await link.deposit(phone.identity_public, sealed)
    with pytest.raises(MailboxRefusal) as refused:
        await link.deposit(other.identity_public, b"x" * 100)  # not on its allowlist
    assert refused.value.close_code == CloseCode.NOT_ALLOWED
    await link.close()

    device = await links(url, phone)
    held = await device.snapshot(link.id)
    assert held is not None and held[1] == sealed
    assert 1_700_000_000 < held[0] < 4_000_000_000  # when it was deposited, in unix seconds
    stranger = await links(url, other)
    assert await stranger.snapshot(link.id) is None  # learns nothing, as for a host that left nothing
    assert await stranger.snapshot("NOSUCHHOST") is None

    # An empty deposit clears the slot.
    back = await host_with(links, url, host, phone)
    await back.deposit(phone.identity_public, b"")
    assert await device.snapshot(back.id) is None


async def test_items_queued_while_the_host_is_away_are_taken_in_order_and_forgotten_once_acked(
    relay_factory: RelayFactory, links: Links, box: Store
) -> None:
    _, url = await relay_factory(mailbox=box)
    host, phone, tablet = Identity.generate(), Identity.generate(), Identity.generate()
    link = await host_with(links, url, host, phone, tablet)
    host_id = link.id
    await link.close()

    phone_link, tablet_link = await links(url, phone), await links(url, tablet)
    queued = [await phone_link.queue(host_id, b"p1" * 60), await tablet_link.queue(host_id, b"t1" * 60),
              await phone_link.queue(host_id, b"p2" * 60)]
    assert queued == sorted(queued) and len(set(queued)) == 3

    back = await host_with(links, url, host, phone, tablet)
    items = await back.take()
    assert [i.item for i in items] == queued
    assert [i.sealed[:2] for i in items] == [b"p1", b"t1", b"p2"]
    assert [i.device_identity for i in items] == [phone.identity_public, tablet.identity_public,
                                                  phone.identity_public]
    assert all(i.queued_at_ms > 1_700_000_000_000 for i in items)
    await back.ack([queued[0], queued[1]])
    assert [i.item for i in await back.take()] == [queued[2]]  # not acked: offered again
    await back.ack([queued[2]])
    assert await back.take() == []

    # Queued while the host is connected and has taken: it is sent to the host at once.
    late = await phone_link.queue(host_id, b"late" * 30)
    async with asyncio.timeout(5):
        pushed = await back.mailbox_items.get()
    assert pushed.item == late and pushed.sealed == b"late" * 30 and pushed.req == 0


async def test_a_device_dropped_from_the_allowlist_loses_its_queued_items_and_its_snapshot(
    relay_factory: RelayFactory, links: Links, box: Store
) -> None:
    _, url = await relay_factory(mailbox=box)
    host, revoked, kept = Identity.generate(), Identity.generate(), Identity.generate()
    link = await host_with(links, url, host, revoked, kept)
    host_id = link.id
    await link.deposit(revoked.identity_public, b"s" * 200)
    await link.close()
    revoked_link, kept_link = await links(url, revoked), await links(url, kept)
    await revoked_link.queue(host_id, b"from-revoked" * 10)
    kept_item = await kept_link.queue(host_id, b"from-kept" * 10)

    back = await host_with(links, url, host, kept)  # revoked while it was away
    assert [i.item for i in await back.take()] == [kept_item]
    assert await revoked_link.snapshot(host_id) is None
    with pytest.raises(MailboxRefusal) as refused:
        await revoked_link.queue(host_id, b"again" * 30)
    assert refused.value.close_code == CloseCode.HOST_OFFLINE


async def test_the_mailbox_and_the_allowlist_it_checks_survive_a_relay_restart(
    relay_factory: RelayFactory, links: Links, tmp_path: Path
) -> None:
    path = tmp_path / "relay" / "mailbox.db"
    first = await Mailbox.open(path)
    server, url = await relay_factory(mailbox=first)
    host, phone = Identity.generate(), Identity.generate()
    link = await host_with(links, url, host, phone)
    host_id = link.id
    await link.deposit(phone.identity_public, b"snap" * 100)
    await link.close()
    item = await (await links(url, phone)).queue(host_id, b"prompt" * 20)
    await server.close()
    await first.close()
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700

    second = await Mailbox.open(path)
    try:
        _, url2 = await relay_factory(mailbox=second)
        phone_link = await links(url2, phone)
        held = await phone_link.snapshot(host_id)  # the host has not come back: the stored allowlist says yes
        assert held is not None and held[1] == b"snap" * 100
        back = await host_with(links, url2, host, phone)
        assert [(i.item, i.sealed) for i in await back.take()] == [(item, b"prompt" * 20)]
    finally:
        await second.close()


async def test_quotas_refuse_what_does_not_fit_with_a_reason_and_drop_nothing_queued(
    relay_factory: RelayFactory, links: Links, open_box: OpenBox
) -> None:
    limits = MailboxLimits(host_bytes=20_000, device_items=3, device_bytes=8_000)
    box = await open_box(limits)
    _, url = await relay_factory(mailbox=box)
    host, a, b = Identity.generate(), Identity.generate(), Identity.generate()
    link = await host_with(links, url, host, a, b)
    host_id = link.id
    # Snapshots: the host's oldest makes room for a new one.
    await link.deposit(a.identity_public, b"A" * 9_000)
    await link.deposit(b.identity_public, b"B" * 9_000)
    await link.deposit(b.identity_public, b"C" * 12_000)  # replaces B; A (oldest) goes to fit
    await link.close()
    device_a, device_b = await links(url, a), await links(url, b)
    assert await device_a.snapshot(host_id) is None
    held = await device_b.snapshot(host_id)
    assert held is not None and held[1] == b"C" * 12_000

    # Items: per device, by count and by bytes; refused, never pushing out what is queued.
    with pytest.raises(MailboxRefusal) as too_large:
        await device_a.queue(host_id, b"x" * 8_001)
    assert too_large.value.close_code == CloseCode.TOO_LARGE and "shorten" in too_large.value.message
    kept = [await device_a.queue(host_id, bytes([i]) * 100) for i in range(3)]
    with pytest.raises(MailboxRefusal) as full:
        await device_a.queue(host_id, b"y" * 100)
    assert full.value.close_code == CloseCode.MAILBOX_FULL and "wait until the host is back" in full.value.message
    assert await device_b.queue(host_id, b"z" * 100)  # another device's share is its own
    back = await host_with(links, url, host, a, b)
    taken = [i.item for i in await back.take()]
    assert taken[:3] == kept and len(taken) == 4


async def test_a_relay_without_a_mailbox_says_so_and_keeps_the_connection(
    relay_factory: RelayFactory, links: Links
) -> None:
    _, url = await relay_factory()
    device = await links(url)
    with pytest.raises(MailboxRefusal) as refused:
        await device.queue("SOMEHOST", b"q" * 100)
    assert refused.value.close_code == CloseCode.MAILBOX_OFF
    with pytest.raises(MailboxRefusal):  # answered, not left hanging
        await device.snapshot("SOMEHOST")
    assert not device.closed


async def test_a_connection_past_its_share_of_writes_is_refused_not_served(
    relay_factory: RelayFactory, links: Links, box: Store
) -> None:
    _, url = await relay_factory(mailbox=box)
    host, phone = Identity.generate(), Identity.generate()
    link = await host_with(links, url, host, phone)
    outcomes: list[int] = []
    started = time.monotonic()
    for _ in range(WRITES_PER_MINUTE + 20):
        try:
            await link.deposit(phone.identity_public, b"s" * 100)
            outcomes.append(0)
        except MailboxRefusal as refused:
            outcomes.append(refused.close_code)
    # the bucket refills meanwhile, at its rate (a loaded machine takes seconds for these)
    refilled = (time.monotonic() - started) * WRITES_PER_MINUTE / 60
    assert outcomes.count(0) <= WRITES_PER_MINUTE + refilled + 1
    assert CloseCode.RATE_LIMITED in outcomes
    assert not link.closed
    # Another device's requests are its own share.
    assert await (await links(url, phone)).snapshot(link.id) is not None


async def test_a_client_of_the_first_protocol_version_is_still_admitted(
    relay_factory: RelayFactory, box: Mailbox
) -> None:
    _, url = await relay_factory(mailbox=box)
    ws: ClientConnection = await raw_connect(url)
    try:
        identity = Identity.generate()
        await ws.send(Hello(Role.DEVICE, identity.identity_public, version=OLDEST_PROTOCOL_VERSION).encode())
        challenge = decode_frame(await ws.recv())  # type: ignore[arg-type]
        assert isinstance(challenge, Challenge)
        await ws.send(Auth(identity.sign(auth_message(Role.DEVICE, challenge.nonce))).encode())
        assert isinstance(decode_frame(await ws.recv()), Welcome)  # type: ignore[arg-type]
        # A mailbox request answers by its id, raw.
        await ws.send(MailboxGet(77, "SOMEHOST").encode())
        answer = decode_frame(await ws.recv())  # type: ignore[arg-type]
        assert answer == MailboxSnapshot(77, 0, b"")
    finally:
        await ws.close()


async def test_a_host_cannot_send_device_requests_nor_a_device_host_ones(
    relay_factory: RelayFactory, links: Links, box: Store
) -> None:
    _, url = await relay_factory(mailbox=box)
    device = await links(url)
    with pytest.raises(Exception):  # noqa: B017 - UsageError before anything is sent
        await device.take()
    ws = await raw_connect(url)
    try:
        await raw_auth(ws, Identity.generate(), Role.HOST)
        await ws.send(MailboxGet(1, "SOMEHOST").encode())
        error = decode_frame(await ws.recv())  # type: ignore[arg-type]
        assert not isinstance(error, MailboxError)
        assert getattr(error, "code", None) == CloseCode.PROTOCOL_ERROR  # a frame a host may not send
    finally:
        await ws.close()


async def test_an_oversized_deposit_closes_only_its_connection_with_the_reason(
    relay_factory: RelayFactory, links: Links, box: Store
) -> None:
    _, url = await relay_factory(mailbox=box)
    host, phone = Identity.generate(), Identity.generate()
    good = await host_with(links, url, host, phone)
    ws = await raw_connect(url)
    try:
        await raw_auth(ws, Identity.generate(), Role.HOST)
        # Hand-made: the encoder itself refuses a blob over one Noise message.
        frame = bytes([0x50]) + (1).to_bytes(4, "big") + phone.identity_public + b"x" * 66_000
        await ws.send(frame)
        error = decode_frame(await ws.recv())  # type: ignore[arg-type]
        assert getattr(error, "code", None) == CloseCode.PROTOCOL_ERROR
        assert "a sealed blob is at most 65535 bytes" in getattr(error, "message", "")
    finally:
        await ws.close()
    await good.deposit(phone.identity_public, b"fine" * 25)  # the others go on


async def test_a_cluster_mailbox_past_redis_s_memory_refuses_whole_requests_and_still_revokes(
    relay_factory: RelayFactory, links: Links
) -> None:
    """Redis's ``maxmemory`` (noeviction) is the cluster mailbox's bound on the whole: past it a
    deposit is refused MAILBOX_OFF and changes nothing (the snapshot it would replace stays), the
    connection stays, and an allowlist published then still cuts the devices it dropped."""
    with RedisServer(args=["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]) as server:
        client = await connect([server.url])
        try:
            _, url = await relay_factory(mailbox=SharedMailbox(client, MailboxLimits()))
            phones = [Identity.generate() for _ in range(60)]
            host = Identity.generate()
            link = await host_with(links, url, host, *phones)
            await link.deposit(phones[0].identity_public, b"kept" * 1000)
            with pytest.raises(MailboxRefusal) as refused:
                for phone in phones[1:]:  # 59 × 60 KB (3.5 MB, within a host's 4 MiB): Redis is full first
                    await link.deposit(phone.identity_public, os.urandom(60_000))
            assert refused.value.close_code == CloseCode.MAILBOX_OFF
            assert "try again later" in refused.value.message
            with pytest.raises(MailboxRefusal):  # as large as the one just refused
                await link.deposit(phones[0].identity_public, os.urandom(60_000))
            first = await links(url, phones[0])
            held = await first.snapshot(link.id)
            assert held is not None and held[1] == b"kept" * 1000

            await link.publish_allowlist(p.identity_public for p in phones[1:])  # phones[0] revoked
            assert await link.take() == []  # the connection still serves
            assert await first.snapshot(link.id) is None
        finally:
            await client.aclose()


async def test_an_allowlist_the_cluster_mailbox_could_not_store_is_stored_once_redis_answers(
    relay_factory: RelayFactory, links: Links, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revocation published while Redis refuses it reaches the mailbox when Redis takes it again
    (the host still connected): the dropped device loses its snapshot."""
    monkeypatch.setattr(server_module, "PUBLISH_RETRY_SECONDS", 0.5)
    with RedisServer() as server:
        client = await connect([server.url])
        try:
            _, url = await relay_factory(mailbox=SharedMailbox(client, MailboxLimits()))
            kept, dropped = Identity.generate(), Identity.generate()
            link = await host_with(links, url, Identity.generate(), kept, dropped)
            await link.deposit(dropped.identity_public, b"old" * 100)
            device = await links(url, dropped)
            assert await device.snapshot(link.id) is not None
            server.execute("ACL", "SETUSER", "default", "-evalsha")  # every script refused
            try:
                await link.publish_allowlist([kept.identity_public])
                await asyncio.sleep(1.5)  # the store fails, and again half a second later
            finally:
                server.execute("ACL", "SETUSER", "default", "+@all")
            async with asyncio.timeout(10):
                while await device.snapshot(link.id) is not None:
                    await asyncio.sleep(0.2)
        finally:
            await client.aclose()
