"""The host decides admission itself: a relay that admits an unknown, revoked or expired token
(or a device or token showing another identity key) still gets nowhere, with a clear reason,
and every decision is in the audit log."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from tests.support.inprocess import running_host
from tether.crypto.keys import Identity
from tether.crypto.tokens import parse_token
from tether.host.daemon import HostDaemon
from tether.protocol.e2e import E2ETransport
from tether.protocol.frames import CloseCode
from tether.protocol.rpc import RpcPeer
from tether.protocol.scopes import Scope
from tether.relay.link import ChannelClosed


class MemChannel:
    """One end of an in-memory channel: what a relay that admits everything would hand over."""

    def __init__(self, channel_id: int, peer_identity: bytes | None = None) -> None:
        self.id = channel_id
        self.offer_id: str | None = None
        self.peer_identity = peer_identity
        self.other: MemChannel
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.end: tuple[int, str] | None = None

    async def send(self, payload: bytes) -> None:
        if self.end is not None:
            raise ChannelClosed(*self.end)
        self.other.inbox.put_nowait(bytes(payload))

    async def recv(self) -> bytes:
        item = await self.inbox.get()
        if item is None:
            assert self.end is not None
            raise ChannelClosed(*self.end)
        return item

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        if self.end is not None:
            return
        for side in (self, self.other):
            side.end = (code, reason)
            side.inbox.put_nowait(None)


def _pair(peer_identity: bytes) -> tuple[MemChannel, MemChannel]:
    client, host = MemChannel(1), MemChannel(1, peer_identity)
    client.other, host.other = host, client
    return client, host


@pytest.fixture
async def host() -> AsyncIterator[HostDaemon]:
    async with running_host(public_url="http://127.0.0.1:9") as daemon:
        yield daemon


async def _dial(
    host: HostDaemon, identity: Identity, shown: bytes | None = None
) -> tuple[E2ETransport, asyncio.Task[None]]:
    client, served = _pair(identity.identity_public if shown is None else shown)
    task = asyncio.create_task(host._serve_channel(served))  # type: ignore[arg-type]
    transport = await E2ETransport.initiate(
        client, static=identity.static, remote_static=host.identity.static_public  # type: ignore[arg-type]
    )
    return transport, task


async def _refusal(host: HostDaemon, identity: Identity, shown: bytes | None = None) -> ChannelClosed:
    transport, task = await _dial(host, identity, shown)
    peer = RpcPeer(transport)
    runner = asyncio.create_task(peer.run())
    with pytest.raises(ChannelClosed) as info:
        await peer.call("host.info", timeout=5)
    await task
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    return info.value


async def _token(host: HostDaemon, ttl: float = 3600) -> tuple[str, Identity]:
    created = await host.create_token(
        frozenset({Scope.READ}), workspace=None, expires_at=time.time() + ttl, name="ci", created_by="local"
    )
    return str(created["id"]), parse_token(created["token"]).identity()


async def test_a_live_token_is_served(host: HostDaemon) -> None:
    token_id, identity = await _token(host)
    transport, task = await _dial(host, identity)
    peer = RpcPeer(transport)
    runner = asyncio.create_task(peer.run())
    info = await peer.call("host.info", timeout=5)
    assert info["scopes"] == ["read"]
    await transport.close()
    await task
    runner.cancel()
    entries = await host.audit.list()
    assert [(e["actor"]["id"], e["method"], e["result"]) for e in entries][-2:] == [
        (token_id, "channel.open", "ok"), (token_id, "host.info", "ok")
    ]


async def test_revoked_token_admitted_by_the_relay_is_refused_by_the_host(host: HostDaemon) -> None:
    token_id, identity = await _token(host)
    assert await host.revoke_token(token_id)
    refusal = await _refusal(host, identity)
    assert refusal.close_code == CloseCode.REVOKED
    assert "this token has been revoked" in refusal.message
    entry = (await host.audit.list())[-1]
    assert (entry["actor"]["id"], entry["method"], entry["result"]) == (token_id, "channel.open", "revoked")


async def test_expired_token_admitted_by_the_relay_is_refused_by_the_host(host: HostDaemon) -> None:
    token_id, identity = await _token(host, ttl=-10)
    refusal = await _refusal(host, identity)
    assert refusal.close_code == CloseCode.NOT_ALLOWED
    assert "this token expired on" in refusal.message and "tether tokens create" in refusal.message
    entry = (await host.audit.list())[-1]
    assert (entry["actor"]["id"], entry["result"]) == (token_id, "expired")


async def test_unknown_key_admitted_by_the_relay_is_refused_by_the_host(host: HostDaemon) -> None:
    stranger = Identity.generate()
    refusal = await _refusal(host, stranger)
    assert refusal.close_code == CloseCode.NOT_ALLOWED and "unknown to the host" in refusal.message
    entry = (await host.audit.list())[-1]
    assert (entry["actor"]["kind"], entry["actor"]["id"], entry["result"]) == ("unknown", stranger.id, "not_allowed")


async def test_a_token_showing_the_relay_another_identity_is_refused(host: HostDaemon) -> None:
    _, identity = await _token(host)
    refusal = await _refusal(host, identity, shown=Identity.generate().identity_public)
    assert refusal.close_code == CloseCode.NOT_ALLOWED and "another identity key" in refusal.message
    assert (await host.audit.list())[-1]["result"] == "not_allowed"


async def test_the_allowlist_holds_live_tokens_only(host: HostDaemon) -> None:
    live_id, live = await _token(host)
    revoked_id, revoked = await _token(host)
    _, expired = await _token(host, ttl=-1)
    await host.revoke_token(revoked_id)
    allowlist = await host.store.allowlist()
    assert live.identity_public in allowlist
    assert revoked.identity_public not in allowlist and expired.identity_public not in allowlist
    [record] = [t for t in await host.store.list_tokens() if t.id == live_id]
    # The host keeps public keys only: nothing that could rebuild the token.
    assert record.identity_public == live.identity_public and record.static_public == live.static_public
    assert {t.status() for t in await host.store.list_tokens()} == {"active", "revoked", "expired"}
