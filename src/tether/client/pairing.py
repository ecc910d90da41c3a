"""Pairing, device side: claim an offer from a pairing link and remember the host."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from tether.client.state import ClientState, PairedHost
from tether.crypto.encoding import b64u_encode
from tether.errors import TetherError
from tether.protocol.e2e import E2ETransport
from tether.protocol.pairing_link import parse_link
from tether.protocol.rpc import RpcPeer
from tether.relay.link import RelayLink


class PairingFailed(TetherError):
    code = "pairing"


async def login(home: Path, link_text: str, name: str | None = None) -> PairedHost:
    """Pair this client with the host of ``link_text`` and save it; returns the host."""
    link = parse_link(link_text)
    state = ClientState(home)
    identity = state.identity(create=True)
    relay = await RelayLink.connect(link.relay_url, identity, "device")
    try:
        channel = await relay.open(link.host_id, offer_id=link.offer_id)
        transport = await E2ETransport.initiate(
            channel, static=identity.static, remote_static=link.host_static, psk=link.secret
        )
        peer = RpcPeer(transport)
        runner = asyncio.create_task(peer.run())
        try:
            device_name = name or f"cli@{socket.gethostname()}"
            result = await peer.call(
                "pair.complete",
                {"name": device_name, "identity_public": b64u_encode(identity.identity_public)},
            )
        finally:
            runner.cancel()
            with contextlib.suppress(BaseException):
                await runner
    finally:
        await relay.close()
    if result.get("host_id") != link.host_id:
        raise PairingFailed("the host answered with a different id than the link names")
    host = PairedHost(
        host_id=link.host_id,
        name=str(result.get("host_name", link.host_id)),
        relay_url=link.relay_url,
        host_static=link.host_static,
        device_id=str(result["device_id"]),
        scopes=list(result.get("scopes", [])),
    )
    state.save_host(host)
    return host
