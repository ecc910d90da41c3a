"""The host daemon: owns the state, runs sessions, and serves devices through the relay and
the local owner through a unix socket (0600).

It dials out to the relay and keeps that one connection up with backoff; every device channel
multiplexed over it gets its own end-to-end transport and API connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tether.backoff import Backoff
from tether.crypto.keys import Identity
from tether.errors import ConfigError, TetherError
from tether.home import ensure_home
from tether.host.api import ApiConnection
from tether.host.config import load_config
from tether.host.db import Database
from tether.host.eventlog import EventLog
from tether.host.pairing import claim_offer
from tether.host.principal import Principal
from tether.host.sessions import SessionManager
from tether.host.store import Store
from tether.protocol.e2e import E2ETransport
from tether.protocol.frames import CloseCode
from tether.protocol.local import StreamTransport
from tether.protocol.pairing_link import PairingLink
from tether.protocol.rpc import MessageTransport, RpcPeer
from tether.protocol.scopes import Scope, parse_scopes, scope_list
from tether.relay.link import Channel, RelayLink

log = logging.getLogger("tether.host")

# Unix socket paths are limited to 107 bytes on Linux (104 on macOS).
MAX_SOCKET_PATH = 100
MAINTENANCE_SECONDS = 3600.0


class HostPaths:
    def __init__(self, home: Path) -> None:
        self.dir = home / "host"
        self.keys = self.dir / "keys.json"
        self.db = self.dir / "state.db"
        self.socket = self.dir / "daemon.sock"


def http_url(relay_url: str) -> str:
    """The relay's web address (for pairing links) from its ws/wss/http/https URL."""
    parts = urlsplit(relay_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    path = path.removesuffix("/ws")
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class HostDaemon:
    def __init__(
        self,
        home: Path,
        *,
        relay_url: str | None,
        name: str | None = None,
        workspaces: list[Path] | None = None,
        public_url: str | None = None,
    ) -> None:
        self.home = home
        self.paths = HostPaths(home)
        self.relay_url = relay_url
        self.public_url = public_url or (http_url(relay_url) if relay_url else None)
        self.config = load_config(home)
        self.name = name or self.config.name or socket.gethostname()
        # Workspaces from the command line come first (the default for new sessions).
        listed = [*(workspaces or []), *self.config.workspaces] or [Path.cwd()]
        self.workspaces = list(dict.fromkeys(Path(os.path.realpath(w)) for w in listed))
        self.identity: Identity
        self.db: Database
        self.log: EventLog
        self.store: Store
        self.sessions: SessionManager
        self.relay_connected = asyncio.Event()
        self._link: RelayLink | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connections: dict[str, set[ApiConnection]] = {}
        self._local_server: asyncio.AbstractServer | None = None
        self._offer_timer: asyncio.TimerHandle | None = None
        self._stopping = False

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        ensure_home(self.home)
        self.paths.dir.mkdir(mode=0o700, exist_ok=True)
        for w in self.workspaces:
            if not w.is_dir():
                raise ConfigError(f"workspace {w} is not a directory", hint="pass an existing --workspace DIR")
        self.identity = Identity.load_or_create(self.paths.keys)
        self.db = await Database.open(self.paths.db)
        self.log = await EventLog.open(self.db)
        self.store = Store(self.db)
        self.sessions = SessionManager(self.log, self.db)
        await self.sessions.start()
        await self._start_local_socket()
        self._spawn(self._maintenance())
        if self.relay_url:
            self._spawn(self._relay_loop())
        log.info("host %s (%s) started; workspaces: %s", self.name, self.identity.id,
                 ", ".join(map(str, self.workspaces)))

    async def stop(self) -> None:
        self._stopping = True
        if self._offer_timer is not None:
            self._offer_timer.cancel()
        if self._local_server is not None:
            self._local_server.close()
        for conns in list(self._connections.values()):
            for conn in list(conns):
                await conn.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._link is not None:
            await self._link.close()
        await self.sessions.close()
        await self.db.close()
        with contextlib.suppress(FileNotFoundError):
            self.paths.socket.unlink()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _maintenance(self) -> None:
        """Forget used or expired offers and old command ids, so those tables stay small."""
        while not self._stopping:
            await self.store.prune_offers()
            await self.store.prune_commands()
            await asyncio.sleep(MAINTENANCE_SECONDS)

    # -- the relay -----------------------------------------------------------------------

    async def _relay_loop(self) -> None:
        assert self.relay_url is not None
        backoff = Backoff()
        while not self._stopping:
            try:
                link = await RelayLink.connect(self.relay_url, self.identity, "host")
            except TetherError as exc:
                delay = backoff.next_delay()
                log.warning("relay unreachable (%s); retrying in %.1fs", exc.message, delay)
                await asyncio.sleep(delay)
                continue
            self._link = link
            try:
                await self.publish()
                self.relay_connected.set()
                backoff.reset()
                log.info("connected to relay %s", self.relay_url)
                while True:
                    channel = await link.accept()
                    self._spawn(self._serve_channel(channel))
            except TetherError as exc:
                log.warning("relay connection lost (%s)", exc.message)
            finally:
                self.relay_connected.clear()
                self._link = None
                await link.close()
            await asyncio.sleep(backoff.next_delay())

    async def publish(self) -> None:
        """Tell the relay who may open channels: paired devices and live pairing offers."""
        self._schedule_offer_expiry()
        link = self._link
        if link is None:
            return
        with contextlib.suppress(TetherError):
            await link.publish_allowlist(await self.store.allowlist())
            await link.publish_offers([o.id for o in await self.store.live_offers()])

    def _schedule_offer_expiry(self) -> None:
        # Re-publish when the next offer expires, so the relay stops admitting it.
        if self._offer_timer is not None:
            self._offer_timer.cancel()
            self._offer_timer = None
        self._spawn(self._arm_offer_timer())

    async def _arm_offer_timer(self) -> None:
        offers = await self.store.live_offers()
        if offers and not self._stopping:
            delay = max(0.0, min(o.expires_at for o in offers) - time.time()) + 0.05
            loop = asyncio.get_running_loop()
            self._offer_timer = loop.call_later(delay, lambda: self._spawn(self.publish()))

    async def _serve_channel(self, channel: Channel) -> None:
        if channel.offer_id:
            await claim_offer(self, channel)
            return
        try:
            transport = await E2ETransport.accept(channel, static=self.identity.static)
        except TetherError as exc:
            # E2ETransport has already closed the channel with the reason.
            log.info("channel %s: handshake failed (%s)", channel.id, exc.message)
            return
        assert transport.remote_static is not None
        device = await self.store.get_device_by_static(transport.remote_static)
        if device is None or device.revoked or (
            channel.peer_identity is not None and channel.peer_identity != device.identity_public
        ):
            revoked = device is not None and device.revoked
            why = "this device has been revoked on the host" if revoked else "this device is unknown to the host"
            log.info("channel %s refused: %s", channel.id, why)
            with contextlib.suppress(TetherError):
                await channel.close(
                    code=CloseCode.REVOKED if revoked else CloseCode.NOT_ALLOWED,
                    reason=f"{why}; pair again with `tether pair` on the host",
                )
            return
        await self.store.touch_device(device.id)
        principal = Principal(
            kind="device",
            id=device.id,
            name=device.name,
            scopes=parse_scopes(device.scopes),
            workspace=device.workspace,
        )
        await self.serve(transport, principal)

    # -- serving a caller ----------------------------------------------------------------

    async def serve(self, transport: MessageTransport, principal: Principal) -> None:
        """Answer one caller's requests until its transport closes."""
        conn = ApiConnection(self, principal)
        peer = conn.peer = RpcPeer(transport, on_request=conn.handle, on_notification=conn.on_notification)
        self._connections.setdefault(principal.id, set()).add(conn)
        try:
            await peer.run()
        finally:
            self._connections.get(principal.id, set()).discard(conn)
            log.info("%s disconnected: %s", principal.describe(), peer.close_error.message)
            await conn.close()
            await peer.close()

    async def _start_local_socket(self) -> None:
        path = self.paths.socket
        if len(str(path)) > MAX_SOCKET_PATH:
            raise ConfigError(
                f"the home path is too long for a unix socket ({path})", hint="use a shorter --home"
            )
        if path.exists():
            try:
                _, writer = await asyncio.open_unix_connection(str(path))
            except OSError:
                path.unlink()  # stale socket of a daemon that died
            else:
                writer.close()
                raise ConfigError(
                    f"a host daemon is already running with home {self.home}",
                    hint="stop it first, or use another --home",
                )

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.serve(StreamTransport(reader, writer), Principal.local())

        # The socket's directory is 0700 and the socket 0600: only the owner may drive the host.
        old = os.umask(0o177)
        try:
            self._local_server = await asyncio.start_unix_server(on_connect, str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)

    # -- devices and pairing -------------------------------------------------------------

    async def revoke_device(self, device_id: str) -> bool:
        if not await self.store.revoke_device(device_id):
            return False
        log.info("device %s revoked", device_id)
        await self.publish()
        for conn in list(self._connections.get(device_id, ())):
            transport = conn.peer.transport
            with contextlib.suppress(TetherError):
                if isinstance(transport, E2ETransport):
                    await transport.channel.close(code=CloseCode.REVOKED, reason="this device has been revoked")
                else:
                    await transport.close()
        return True

    async def create_pairing_offer(self, scopes: frozenset[Scope], ttl: float) -> dict[str, Any]:
        if not self.public_url:
            raise ConfigError("this host has no relay", hint="start it with --relay URL")
        offer = await self.store.create_offer(scope_list(scopes), ttl)
        await self.publish()
        link = PairingLink(self.public_url, self.identity.id, self.identity.static_public, offer.id, offer.secret)
        return {"link": link.format(), "expires_at": offer.expires_at, "scopes": scope_list(scopes)}

    def status(self) -> dict[str, Any]:
        return {
            "role": "host",
            "id": self.identity.id,
            "name": self.name,
            "relay": self.relay_url,
            "connected": self.relay_connected.is_set(),
            "workspaces": [str(w) for w in self.workspaces],
        }
