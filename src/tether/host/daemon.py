"""The host daemon: owns the state, runs sessions, and serves devices through the relay and
the local owner through a unix socket (0600).

It dials out to the relay and keeps that one connection up with backoff; every device channel
multiplexed over it gets its own end-to-end transport and API connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any

from tether.agents.policy import AgentConfig, Policy
from tether.backoff import Backoff
from tether.crypto.encoding import b64u_encode
from tether.crypto.keys import Identity, derive_id
from tether.crypto.tokens import AccessToken, format_expiry
from tether.errors import ConfigError, TetherError
from tether.home import HostPaths, ensure_home, resolve_home
from tether.host import projection
from tether.host.agent_status import AgentStatus
from tether.host.api import ApiConnection, Caller
from tether.host.audit import Actor, AuditLog
from tether.host.config import load_config
from tether.host.db import Database
from tether.host.eventlog import EventLog
from tether.host.inheritance import Inheritance
from tether.host.keyring import HostKeyring
from tether.host.mailbox.applier import Applier
from tether.host.mailbox.deposits import Depositor
from tether.host.pairing import claim_offer
from tether.host.principal import Principal
from tether.host.push import keys as push_keys
from tether.host.push import subscriptions
from tether.host.push.sender import PushSender
from tether.host.remotes import RemoteHosts
from tether.host.sessions import SessionError, SessionManager, check_apart
from tether.host.store import Device, Grantee, Store, Token
from tether.host.workspaces import resolve_workspace
from tether.protocol.e2e import E2ETransport
from tether.protocol.events import EventType
from tether.protocol.frames import CloseCode
from tether.protocol.local import StreamTransport
from tether.protocol.messages import Request
from tether.protocol.pairing_link import PairingLink
from tether.protocol.rpc import MessageTransport, RpcPeer
from tether.protocol.scopes import Scope, parse_scopes, scope_list
from tether.relay.link import Channel, RelayLink, http_url

log = logging.getLogger("tether.host")

# Unix socket paths are limited to 107 bytes on Linux (104 on macOS).
MAX_SOCKET_PATH = 100
MAINTENANCE_SECONDS = 3600.0
# Leaving devices the state the host stopped in may wait on a busy relay; a stop waits no longer.
STOP_DEPOSIT_SECONDS = 5.0


def _expired_reason(expires_at: float) -> str:
    return f"this token expired on {format_expiry(expires_at)}; create a new one with `tether tokens create`"


class HostDaemon:
    def __init__(
        self,
        home: Path,
        *,
        relay_url: str | None,
        name: str | None = None,
        workspaces: list[Path] | None = None,
        public_url: str | None = None,
        enroll_key: bytes | None = None,
        relay_tls: ssl.SSLContext | None = None,
        remotes: RemoteHosts,
    ) -> None:
        self.home = home
        # the relay's enrollment key, for relays that admit enrolled hosts only (`--enroll-key`)
        self.enroll_key = enroll_key
        self.relay_tls = relay_tls
        self.paths = HostPaths(home)
        self.relay_url = relay_url
        self.public_url = public_url or (http_url(relay_url) if relay_url else None)
        self.config = load_config(home)
        self.name = name or self.config.name or socket.gethostname()
        # Workspaces from the command line come first (the default for new sessions).
        listed = [*(workspaces or []), *self.config.workspaces] or [Path.cwd()]
        self.workspaces = list(dict.fromkeys(Path(os.path.realpath(w)) for w in listed))
        self.keyring: HostKeyring
        self.inherited: Inheritance | None = None
        self.db: Database
        self.log: EventLog
        self.store: Store
        self.audit: AuditLog
        self.sessions: SessionManager
        # Tunnels to the `--mode tunnel` remote hosts this home started with `tether ssh` (and
        # the devices they inherit), given by the caller: tether.sshremote sits above the host.
        self.tunnels = remotes
        self.relay_connected = asyncio.Event()
        self._link: RelayLink | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connections: dict[str, set[ApiConnection]] = {}
        # Channels open per caller, handshaking ones included, keyed by the id the relay's
        # identity key gives (a device's or token's id): one caller cannot use up the host.
        self._channels: dict[str, int] = {}
        self._crowded: set[str] = set()  # callers told they are at the cap (logged once)
        self._local_server: asyncio.AbstractServer | None = None
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._stopping = False
        self.push_key: str | None = None
        self._push: PushSender | None = None
        self._depositor: Depositor
        self._applier: Applier

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        ensure_home(self.home)
        self.paths.dir.mkdir(mode=0o700, exist_ok=True)
        hidden = _hidden_from_agents(self.home, self.workspaces)
        self.keyring = HostKeyring(self.paths.keys)
        self.db = await Database.open(self.paths.db)
        self.log = await EventLog.open(self.db)
        self.store = Store(self.db)
        self.audit = AuditLog(self.db)
        self.sessions = SessionManager(
            self.log, self.db, limits=self.config.limits, limit_key=self.config.limit_key, hidden=hidden,
            resume_as=self._resume_as,
        )
        await self.sessions.start()
        self.agent_status = AgentStatus(self.config)
        self._depositor = Depositor(self.db, self.log, self.store, self.keyring, host_id=self.identity.id,
                                    host_name=lambda: self.name)
        self._applier = Applier(self.db, self.log, self.store, self.audit, self.keyring, host_id=self.identity.id,
                                apply=self._apply_queued)
        if self.config.push.enabled:
            key = await asyncio.to_thread(push_keys.load_or_create, self.paths.vapid)
            self.push_key = push_keys.public_key(key)
            self._push = PushSender(self.db, self.log, key, host_id=self.identity.id, host_name=self.name,
                                    subject=self.config.push.subject)
            self._spawn(self._push.run())
        # A host started by `tether ssh` accepts its desktop's devices, from a signed bundle.
        self.inherited = Inheritance(self.home, self.identity.id)
        self.inherited.load()
        self._spawn(self.inherited.watch(self._on_inheritance_changed))
        await self._start_local_socket()
        self._spawn(self._maintenance())
        await self._unlink_forgotten()
        self._spawn(self.tunnels.run())
        if self.relay_url:
            self._spawn(self._relay_loop())
        log.info("host %s (%s) started; workspaces: %s", self.name, self.identity.id,
                 ", ".join(map(str, self.workspaces)))

    def _resume_as(self, agent: str, recorded: Policy, workspace: str) -> tuple[AgentConfig, Policy, Path]:
        """What a session resumed after a restart runs under: the host's config of its agent now,
        its recorded policy made no looser than the host allows now, and its workspace if the host
        still allows it (WorkspaceError if not). Blocking (it resolves the path)."""
        config = self.config.agent(agent)
        policy = recorded.within(config.policy)
        if self.inherited is not None:
            policy = self.inherited.cap(agent, policy)
        return config, policy, resolve_workspace(workspace, self.workspaces)

    async def _unlink_forgotten(self) -> None:
        """Linked hosts that are no longer among this home's remotes were forgotten (`tether ssh
        forget`) while this daemon was down: tell the clients now."""
        try:
            kept = self.tunnels.host_ids()
        except TetherError as exc:
            log.warning("remote hosts: %s", exc.message)
            return
        for linked in await self.db.run(projection.linked_hosts, write=False):
            if linked["host_id"] not in kept:
                await self.log.append(None, EventType.HOST_UNLINKED, {"host_id": linked["host_id"]})
                log.info("linked host %s (%s) was forgotten; clients are told", linked.get("name"), linked["host_id"])

    @property
    def identity(self) -> Identity:
        return self.keyring.identity

    async def rotate_keys(self, grace: float) -> dict[str, Any]:
        """A new end-to-end static key; every connected client is told over its own channel, and
        one that was away can still connect with the old key for ``grace`` seconds to learn it."""
        identity = self.keyring.rotate(grace)
        log.info("host static key rotated; the old one is accepted for %.0f s more", grace)
        for conns in list(self._connections.values()):
            for conn in list(conns):
                if isinstance(conn.peer.transport, E2ETransport):
                    with contextlib.suppress(TetherError):
                        await conn.peer.notify("host.key", self._key_notice())
        await self.publish()  # new pairing links carry the new key; the allowlist is unchanged
        return {"static_key": b64u_encode(identity.static_public), "grace": grace}

    def _key_notice(self) -> dict[str, Any]:
        return {"host_id": self.identity.id, "static_key": b64u_encode(self.identity.static_public)}

    async def stop(self) -> None:
        self._stopping = True
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        if self._local_server is not None:
            self._local_server.close()
        for conns in list(self._connections.values()):
            for conn in list(conns):
                await conn.close()
        link = self._link
        if link is not None:
            # What the devices will show while the host is away: the state it stopped in.
            with contextlib.suppress(TetherError, TimeoutError):
                async with asyncio.timeout(STOP_DEPOSIT_SECONDS):
                    await self._depositor.deposit_all(link)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._link is not None:
            await self._link.close()
        if self._push is not None:
            await self._push.close()
        await self.sessions.close()
        with contextlib.suppress(Exception):
            await self.audit.close()
        await self.db.close()
        with contextlib.suppress(FileNotFoundError):
            self.paths.socket.unlink()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _maintenance(self) -> None:
        """Forget used or expired offers, old command ids, old audit entries and old events, so
        those tables stay small."""
        while not self._stopping:
            await self.store.prune_offers()
            await self.store.prune_commands()
            await self.audit.prune()
            await self._forget_events()
            await asyncio.sleep(MAINTENANCE_SECONDS)

    async def _forget_events(self) -> None:
        limits = self.config.limits
        cutoff = time.time() - limits.event_retention_days * 86400
        dropped = await self.log.forget(
            ended_before=cutoff, older_than=cutoff, max_db_bytes=limits.max_database_mb * 1024 * 1024
        )
        if dropped:
            log.info("retention: %d old events dropped; clients behind seq %d get a snapshot", dropped, self.log.floor)

    # -- the relay -----------------------------------------------------------------------

    async def _relay_loop(self) -> None:
        assert self.relay_url is not None
        backoff = Backoff()
        while not self._stopping:
            try:
                link = await RelayLink.connect(
                    self.relay_url, self.identity, "host", enroll_key=self.enroll_key, tls=self.relay_tls
                )
            except TetherError as exc:
                delay = backoff.next_delay()
                log.warning("relay unreachable (%s); retrying in %.1fs", exc.message, delay)
                await asyncio.sleep(delay)
                continue
            self._link = link
            mailbox: list[asyncio.Task[Any]] = []
            try:
                await self.publish()  # before taking the mailbox: a revoked device's items are gone
                self.relay_connected.set()
                backoff.reset()
                log.info("connected to relay %s", self.relay_url)
                mailbox = [self._spawn(self._applier.run(link)), self._spawn(self._depositor.run(link))]
                while True:
                    channel = await link.accept()
                    self._spawn(self._serve_channel(channel))
            except TetherError as exc:
                log.warning("relay connection lost (%s)", exc.message)
            finally:
                for task in mailbox:
                    task.cancel()
                self.relay_connected.clear()
                self._link = None
                await link.close()
            await asyncio.sleep(backoff.next_delay())

    async def publish(self) -> None:
        """Tell the relay who may open channels: paired devices, live tokens and live pairing
        offers."""
        self._schedule_expiry()
        link = self._link
        if link is None:
            return
        allow = await self.store.allowlist()
        if self.inherited is not None:
            allow = list(dict.fromkeys([*allow, *self.inherited.allowlist()]))
        with contextlib.suppress(TetherError):
            await link.publish_allowlist(allow)
            await link.publish_offers([o.id for o in await self.store.live_offers()])

    async def _on_inheritance_changed(self, removed: set[str]) -> None:
        # Close first, then tell the relay: the device hears this host's reason, not the relay's.
        for device_id in removed:
            if await self.store.get_device(device_id) is not None:
                continue  # also paired here directly: its own record decides
            for conn in list(self._connections.get(device_id, ())):
                await self._close_connection(
                    conn, CloseCode.REVOKED,
                    "this device has been revoked on the desktop host this host inherits its devices from",
                )
        await self.publish()

    def _schedule_expiry(self) -> None:
        # Re-publish when the next offer or token expires, so the relay stops admitting it.
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        self._spawn(self._arm_expiry_timer())

    async def _arm_expiry_timer(self) -> None:
        deadlines = [o.expires_at for o in await self.store.live_offers()]
        token_expiry = await self.store.next_token_expiry()
        if token_expiry is not None:
            deadlines.append(token_expiry)
        if deadlines and not self._stopping:
            delay = max(0.0, min(deadlines) - time.time()) + 0.05
            loop = asyncio.get_running_loop()
            if self._expiry_timer is not None:
                self._expiry_timer.cancel()
            self._expiry_timer = loop.call_later(delay, lambda: self._spawn(self._on_expiry()))

    async def _on_expiry(self) -> None:
        # An expired token's live channels end too, with the host's own reason.
        now = time.time()
        for conns in list(self._connections.values()):
            for conn in list(conns):
                expires_at = conn.principal.expires_at
                if expires_at is not None and expires_at <= now:
                    await self._close_connection(conn, CloseCode.NOT_ALLOWED, _expired_reason(expires_at))
        await self.publish()

    async def _serve_channel(self, channel: Channel) -> None:
        caller = self._relay_actor(channel).id
        limit = self.config.limits.max_channels_per_caller
        count = self._channels.get(caller, 0)
        if count >= limit:
            if caller not in self._crowded:  # said once per crowd, not once per channel
                self._crowded.add(caller)
                log.warning("caller %s has %d channels open, the most one may; refusing more", caller, limit)
            with contextlib.suppress(TetherError):
                await channel.close(
                    code=CloseCode.TOO_MANY_CHANNELS,
                    reason=f"this device or token already has {limit} channels open to the host, the most one may"
                    f" ({self.config.limit_key('max_channels_per_caller')}); close some and retry",
                )
            return
        self._channels[caller] = count + 1
        try:
            await self._serve_admitted(channel)
        finally:
            self._channels[caller] -= 1
            if not self._channels[caller]:
                del self._channels[caller]
                self._crowded.discard(caller)

    async def _serve_admitted(self, channel: Channel) -> None:
        if channel.offer_id:
            await self._serve_pairing(channel)
            return
        timeout = self.config.limits.handshake_timeout
        try:
            transport = await E2ETransport.accept(
                channel, static=self.identity.static, retired=self.keyring.statics()[1:], timeout=timeout
            )
        except Exception as exc:
            # A channel that never finishes its handshake (or fails it) is closed here: nothing
            # else would, and it would hold its place among the caller's channels for good.
            if isinstance(exc, TetherError):
                why = exc.message
            elif isinstance(exc, TimeoutError):
                why = f"no handshake within {timeout:g} s"
            else:
                why = f"{type(exc).__name__}: {exc}"
            log.info("channel %s: handshake failed (%s)", channel.id, why)
            with contextlib.suppress(TetherError):
                await channel.close(code=CloseCode.PROTOCOL_ERROR, reason=f"end-to-end handshake failed: {why}")
            self.audit.record(self._relay_actor(channel), "channel.open", "handshake_failed")
            return
        assert transport.remote_static is not None
        # The host trusts the static key the handshake proved, looked up in its own tables, not
        # the relay's admission: a relay that admits a revoked or unknown party gets nowhere.
        device = await self.store.get_device_by_static(transport.remote_static)
        if device is None and self.inherited is not None:
            device = self.inherited.device_by_static(transport.remote_static)
        token = None if device is not None else await self.store.get_token_by_static(transport.remote_static)
        principal = await self._admit(channel, device, token)
        if principal is None:
            return
        self.audit.record(principal.actor, "channel.open", "ok")
        await self.serve(transport, principal)

    async def _admit(self, channel: Channel, device: Device | None, token: Token | None) -> Principal | None:
        """The caller of an IK channel, or None after closing the channel with the reason."""
        record = device or token
        mismatch = (
            record is not None and channel.peer_identity is not None and channel.peer_identity != record.identity_public
        )
        code, outcome, why = CloseCode.NOT_ALLOWED, "not_allowed", ""
        if record is None:
            why = "this device or token is unknown to the host; pair again with `tether pair` on the host"
        elif mismatch:
            why = f"this {'device' if device else 'token'} showed the relay another identity key"
        elif device is not None and device.revoked:
            code, outcome = CloseCode.REVOKED, "revoked"
            why = "this device has been revoked on the host; pair again with `tether pair` on the host"
        elif token is not None and token.revoked:
            code, outcome = CloseCode.REVOKED, "revoked"
            why = "this token has been revoked; create a new one with `tether tokens create` on the host"
        elif token is not None and token.expired():
            outcome, why = "expired", _expired_reason(token.expires_at)
        if why:
            actor = (
                Actor("device" if device else "token", record.id, record.name)
                if record is not None and not mismatch
                else self._relay_actor(channel)
            )
            log.info("channel %s refused: %s", channel.id, why)
            self.audit.record(actor, "channel.open", outcome, detail=why.partition(";")[0])
            with contextlib.suppress(TetherError):
                await channel.close(code=code, reason=why)
            return None
        if device is not None:
            await self.store.touch_device(device.id)
            return Principal(
                kind="device",
                id=device.id,
                name=device.name,
                scopes=parse_scopes(device.scopes),
                workspace=device.workspace,
            )
        assert token is not None
        await self.store.touch_token(token.id)
        return Principal(
            kind="token",
            id=token.id,
            name=token.name,
            scopes=parse_scopes(token.scopes),
            workspace=token.workspace,
            expires_at=token.expires_at,
        )

    @staticmethod
    def _relay_actor(channel: Channel) -> Actor:
        # Who the relay says is calling: an id derived from the identity key it checked.
        if channel.peer_identity is not None and len(channel.peer_identity) == 32:
            return Actor("unknown", derive_id(channel.peer_identity), "unknown caller")
        return Actor.unknown()

    async def _serve_pairing(self, channel: Channel) -> None:
        assert channel.offer_id is not None
        await claim_offer(self, channel, timeout=self.config.limits.handshake_timeout)
        # pairing.py answers the device; the audit entry is read back from the offer it consumed.
        offer = await self.store.get_offer(channel.offer_id)
        caller = self._relay_actor(channel)
        device = None
        if offer is not None and offer.device_id is not None and offer.device_id == caller.id:
            device = await self.store.get_device(offer.device_id)
        if device is not None:
            self.audit.record(Actor("device", device.id, device.name), "pair.complete", "ok", target=device.id)
            self._refresh_remotes()
        else:
            self.audit.record(caller, "pair.complete", "pairing", detail="the offer was unknown, used or expired")

    # -- serving a caller ----------------------------------------------------------------

    async def _apply_queued(self, principal: Principal, method: str, params: dict[str, Any]) -> Any:
        """A request a device queued at the relay while the host was away, as its own request."""
        return await ApiConnection(self, principal).handle(Request(0, method, params))

    def subscriptions_of(self, caller: str) -> int:
        """Event subscriptions a caller has, over all its connections."""
        return sum(conn.subscriptions for conn in self._connections.get(caller, ()))

    async def serve(self, transport: MessageTransport, principal: Principal) -> None:
        """Answer one caller's requests until its transport closes."""
        conn = ApiConnection(self, principal)
        peer = conn.peer = RpcPeer(transport, on_request=conn.handle, on_notification=conn.on_notification)
        self._connections.setdefault(principal.id, set()).add(conn)
        try:
            if isinstance(transport, E2ETransport) and transport.used_retired:
                # It reached us with a key we rotated away: tell it the current one first.
                await peer.notify("host.key", self._key_notice())
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
            # Ended by the daemon's stop: asyncio's stream callback would report the cancelled
            # task as an error, so it ends quietly here.
            with contextlib.suppress(asyncio.CancelledError):
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
        await self.db.run(functools.partial(subscriptions.remove, device_id=device_id))
        log.info("device %s revoked", device_id)
        await self.publish()
        self._refresh_remotes()
        for conn in list(self._connections.get(device_id, ())):
            await self._close_connection(conn, CloseCode.REVOKED, "this device has been revoked")
        return True

    async def revoke_token(self, token_id: str, *, by: Caller | None = None) -> bool:
        """Revoke a token: its live channels close at once (with the host's reason, before the
        relay's), then the relay's allowlist drops it. A token revoking itself gets its answer
        first."""
        if not await self.store.revoke_token(token_id):
            return False
        log.info("token %s revoked", token_id)
        reason = "this token has been revoked; create a new one with `tether tokens create` on the host"
        for conn in list(self._connections.get(token_id, ())):
            if conn is by:
                self._spawn(self._close_later(conn, CloseCode.REVOKED, reason))
            else:
                await self._close_connection(conn, CloseCode.REVOKED, reason)
        await self.publish()
        return True

    async def _close_later(self, conn: ApiConnection, code: int, reason: str) -> None:
        await asyncio.sleep(0.2)
        await self._close_connection(conn, code, reason)

    @staticmethod
    async def _close_connection(conn: ApiConnection, code: int, reason: str) -> None:
        transport = conn.peer.transport
        with contextlib.suppress(TetherError):
            if isinstance(transport, E2ETransport):
                await transport.channel.close(code=code, reason=reason)
            else:
                await transport.close()

    async def create_token(
        self,
        scopes: frozenset[Scope],
        *,
        workspace: str | None,
        expires_at: float,
        name: str | None,
        created_by: str,
    ) -> dict[str, Any]:
        """Mint a token; the returned ``token`` string is the only copy of its secret."""
        if not self.public_url:
            raise ConfigError("this host has no relay, so a token could not reach it", hint="start it with --relay URL")
        token = AccessToken.generate(
            relay_url=self.public_url, host_id=self.identity.id, host_static=self.identity.static_public,
            expires_at=expires_at,
        )
        identity = token.identity()
        who = Grantee(identity.id, name or f"token-{identity.id[:6]}", identity.identity_public,
                      identity.static_public, scope_list(scopes), workspace)
        record = await self.store.add_token(who, expires_at=float(token.expires_at), created_by=created_by)
        log.info("token %r (%s) created with scopes %s", record.name, record.id, ",".join(record.scopes))
        await self.publish()
        return {
            "id": record.id,
            "token": token.format(),
            "name": record.name,
            "scopes": list(record.scopes),
            "workspace": record.workspace,
            "expires_at": float(token.expires_at),
        }

    async def create_pairing_offer(
        self, scopes: frozenset[Scope], ttl: float, workspace: str | None = None
    ) -> dict[str, Any]:
        if not self.public_url:
            raise ConfigError("this host has no relay", hint="start it with --relay URL")
        offer = await self.store.create_offer(scope_list(scopes), ttl, workspace)
        await self.publish()
        link = PairingLink(self.public_url, self.identity.id, self.identity.static_public, offer.id, offer.secret)
        return {"link": link.format(), "expires_at": offer.expires_at, "scopes": scope_list(scopes),
                "workspace": workspace}

    def status(self) -> dict[str, Any]:
        return {
            "role": "host",
            "id": self.identity.id,
            "name": self.name,
            "relay": self.relay_url,
            "public_url": self.public_url,
            "connected": self.relay_connected.is_set(),
            "workspaces": [str(w) for w in self.workspaces],
            "inherited_from": self.inherited.describe() if self.inherited is not None else None,
        }

    def _refresh_remotes(self) -> None:
        """Hosts this one started with `tether ssh` get the new set of devices (never raises)."""
        self._spawn(self.tunnels.refresh(self.identity, self.name))


def _hidden_from_agents(home: Path, workspaces: list[Path]) -> list[Path]:
    """What no agent may see: the home this host runs with, and the default one (where a CLI
    device keeps its keys). Each configured workspace must exist; one that holds a home is kept
    (sessions in its projects are fine) with a warning, as a session in it is refused."""
    hidden = [Path(os.path.realpath(p)) for p in dict.fromkeys([home, resolve_home()]) if p.is_dir()]
    for w in workspaces:
        if not w.is_dir():
            raise ConfigError(f"workspace {w} is not a directory", hint="pass an existing --workspace DIR")
        try:
            check_apart(w, hidden)
        except SessionError as e:
            log.warning("%s: agent sessions there will be refused; start them in a project directory inside it",
                        e.message)
    return hidden
