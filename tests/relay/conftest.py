"""Fixtures for relay tests: real relays on 127.0.0.1, always closed afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tether.crypto.keys import Identity
from tether.protocol.frames import Auth, Challenge, Hello, Role, Welcome, auth_message, decode_frame
from tether.relay.link import RelayLink
from tether.relay.mailbox import Mailbox
from tether.relay.server import RelayLimits, RelayServer

RelayFactory = Callable[..., Awaitable[tuple[RelayServer, str]]]


@pytest.fixture
async def relay_factory() -> AsyncIterator[RelayFactory]:
    servers: list[RelayServer] = []

    async def make(
        static_dir: Any = None,
        *,
        enroll_key: bytes | None = None,
        public_url: str | None = None,
        allowed_origins: tuple[str, ...] = (),
        mailbox: Mailbox | None = None,
        **limits: Any,
    ) -> tuple[RelayServer, str]:
        server = RelayServer(
            limits=RelayLimits(**limits),
            static_dir=static_dir,
            enroll_key=enroll_key,
            public_url=public_url,
            allowed_origins=allowed_origins,
            mailbox=mailbox,
        )
        port = await server.start("127.0.0.1", 0)
        servers.append(server)
        return server, f"ws://127.0.0.1:{port}"

    yield make
    for server in servers:
        await server.close()


@pytest.fixture
async def relay(relay_factory: RelayFactory) -> tuple[RelayServer, str]:
    return await relay_factory()


@pytest.fixture
async def links() -> AsyncIterator[Callable[..., Awaitable[RelayLink]]]:
    """Connect RelayLinks that are closed at the end of the test."""
    opened: list[RelayLink] = []

    async def make(url: str, identity: Identity | None = None, role: str = "device", **kw: Any) -> RelayLink:
        link = await RelayLink.connect(url, identity or Identity.generate(), role, **kw)  # type: ignore[arg-type]
        opened.append(link)
        return link

    yield make
    for link in opened:
        await link.close()


async def raw_connect(url: str) -> ClientConnection:
    return await connect(url + "/ws", compression=None, max_size=None, ping_interval=None)


async def raw_auth(ws: ClientConnection, identity: Identity, role: Role) -> Welcome:
    """Do the admission handshake by hand; returns the WELCOME frame."""
    await ws.send(Hello(role, identity.identity_public).encode())
    challenge = decode_frame(await ws.recv())  # type: ignore[arg-type]
    assert isinstance(challenge, Challenge)
    await ws.send(Auth(identity.sign(auth_message(role, challenge.nonce))).encode())
    welcome = decode_frame(await ws.recv())  # type: ignore[arg-type]
    assert isinstance(welcome, Welcome), welcome
    return welcome
