"""What a relay that records everything can do with it: read nothing, and replay nothing.

The relay is played by in-memory channels (the relay's view: every payload both ways), with a
real host daemon behind them."""

from __future__ import annotations

import asyncio
import contextlib
import time

from tests.security.test_host_admission import MemChannel, _pair
from tests.security.test_host_admission import host as host
from tether.crypto.tokens import parse_token
from tether.host.daemon import HostDaemon
from tether.protocol.e2e import E2ETransport
from tether.protocol.rpc import RpcPeer
from tether.protocol.scopes import Scope
from tether.relay.link import ChannelClosed


class Recording(MemChannel):
    """A client end whose every sent and received payload the 'relay' keeps."""

    def __init__(self, channel_id: int, log: list[bytes]) -> None:
        super().__init__(channel_id)
        self.log = log

    async def send(self, payload: bytes) -> None:
        self.log.append(bytes(payload))
        await super().send(payload)

    async def recv(self) -> bytes:
        data = await super().recv()
        self.log.append(data)
        return data


def _recording_pair(identity_public: bytes, sent: list[bytes]) -> tuple[Recording, MemChannel]:
    client, served = Recording(1, sent), MemChannel(1, identity_public)
    client.other, served.other = served, client
    return client, served


async def _session_count(host: HostDaemon) -> int:
    return len(await host.sessions.list())


async def test_the_relay_sees_no_plaintext_and_cannot_replay_a_handshake_or_command(
    host: HostDaemon,
) -> None:
    _, identity = await _token_with_prompt(host)
    seen: list[bytes] = []
    client, served = _recording_pair(identity.identity_public, seen)
    serving = asyncio.create_task(host._serve_channel(served))  # type: ignore[arg-type]
    transport = await E2ETransport.initiate(
        client, static=identity.static, remote_static=host.identity.static_public  # type: ignore[arg-type]
    )
    peer = RpcPeer(transport)
    runner = asyncio.create_task(peer.run())
    marker = "very-private-marker-7d1f"
    started = await peer.call("sessions.start", {"command": ["sh", "-c", f"echo {marker}"], "cid": "c-1"})
    assert await _session_count(host) == 1
    await transport.close()
    await serving
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner

    # Confidentiality: nothing the relay carried contains the command, the marker or the reply.
    carried = b"".join(seen)
    for secret in (marker.encode(), b"sessions.start", started["id"].encode()):
        assert secret not in carried

    # Replay: the recorded handshake message and the recorded command, on a new channel.
    handshake, command = seen[0], seen[2]  # client → host: msg1, then the request (seen[1] is msg2)
    attacker, served = _pair(identity.identity_public)
    serving = asyncio.create_task(host._serve_channel(served))  # type: ignore[arg-type]
    await attacker.send(handshake)
    reply = await asyncio.wait_for(attacker.recv(), 5)  # the host answers a fresh msg2 ...
    assert reply != seen[1]  # ... with a new ephemeral key, so the old session keys are useless
    await attacker.send(command)
    try:
        async with asyncio.timeout(5):
            while True:
                await attacker.recv()
    except ChannelClosed as exc:
        assert "tampered with, replayed" in exc.message or "end-to-end" in exc.message
    await serving
    assert await _session_count(host) == 1, "the replayed command started nothing"


async def _token_with_prompt(host: HostDaemon):  # type: ignore[no-untyped-def]


    created = await host.create_token(
        frozenset({Scope.READ, Scope.PROMPT}), workspace=None, expires_at=time.time() + 3600, name="ci",
        created_by="local",
    )
    return str(created["id"]), parse_token(created["token"]).identity()
