"""One live connection from a client to a host: through the relay (end-to-end encrypted),
or to the local daemon's unix socket. Both speak the same application protocol, so every
command behaves the same either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.client.dial import dial_relay
from tether.client.state import ClientState, PairedHost
from tether.crypto.encoding import b64u_decode
from tether.crypto.keys import Identity
from tether.crypto.tokens import AccessToken
from tether.errors import TetherError, UsageError
from tether.home import HostPaths
from tether.protocol.e2e import E2ETransport, HandshakeFailed
from tether.protocol.frames import RETRYABLE_CLOSES, CloseCode
from tether.protocol.local import StreamTransport
from tether.protocol.messages import Notification
from tether.protocol.rpc import MessageTransport, RpcPeer
from tether.protocol.transport import ChannelClosed, TransportClosed
from tether.relay.errors import RelayError

if TYPE_CHECKING:
    from tether.relay.link import Channel, RelayLink

# Batches a subscription may hold before the reader waits for the consumer.
SUBSCRIPTION_QUEUE = 64


class Subscription:
    """Event batches of one ``events.subscribe``; ends with :class:`TransportClosed`."""

    def __init__(self, conn: Connection, sub_id: int) -> None:
        self.conn = conn
        self.sub_id = sub_id
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(SUBSCRIPTION_QUEUE)

    async def items(self) -> AsyncIterator[dict[str, Any]]:
        """Yields each event (a dict with seq, session, type...) and snapshots (type "snapshot")."""
        while True:
            item = await self.queue.get()
            if item is None:
                raise self.conn.peer.close_error
            if "events" in item:
                for event in item["events"]:
                    yield event
            else:
                yield {
                    "type": "snapshot",
                    "seq": item["seq"],
                    "session": None,
                    "sessions": item["sessions"],
                    "last": item.get("last", True),
                }


class Connection:
    def __init__(
        self,
        transport: MessageTransport,
        *,
        host_id: str,
        link: RelayLink | None = None,
        on_host_key: Callable[[bytes], None] | None = None,
    ) -> None:
        self.host_id = host_id
        self.link = link
        self._on_host_key = on_host_key
        self._background: set[asyncio.Task[None]] = set()
        self._subs: dict[int, Subscription] = {}
        self._sub_ids = itertools.count(1)
        self.peer = RpcPeer(transport, on_notification=self._on_notification)
        self._runner = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            await self.peer.run()
        finally:
            for sub in self._subs.values():
                with contextlib.suppress(asyncio.QueueFull):
                    sub.queue.put_nowait(None)
            if self.link is not None:
                await self.link.close()

    async def _on_notification(self, note: Notification) -> None:
        if note.method == "host.key":
            self._host_key(note.params)
            return
        sub = self._subs.get(note.params.get("sub", -1))
        if sub is not None and note.method in ("events", "snapshot"):
            await sub.queue.put(note.params)
            # Acknowledged once queued: the host sends more only as this client takes them.
            with contextlib.suppress(TetherError):
                await self.peer.notify("events.ack", {"sub": sub.sub_id})

    def _host_key(self, params: dict[str, Any]) -> None:
        # The host rotated its static key and says so over the channel its old key authenticated:
        # pin the new one for the next connection.
        if self._on_host_key is None or params.get("host_id") != self.host_id:
            return
        try:
            key = b64u_decode(str(params.get("static_key", "")))
        except ValueError:
            return
        if len(key) == 32:
            self._on_host_key(key)

    def background(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run work that belongs to this connection; cancelled when it closes."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @property
    def closed(self) -> bool:
        return self.peer.closed.is_set()

    async def call(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = 30) -> Any:
        return await self.peer.call(method, params, timeout=timeout)

    async def subscribe(self, since: int, session: str | None = None) -> Subscription:
        sub = Subscription(self, next(self._sub_ids))
        # Registered before the call: the first batch may arrive before the response.
        self._subs[sub.sub_id] = sub
        try:
            await self.call("events.subscribe", {"sub": sub.sub_id, "since": since, "session": session})
        except BaseException:
            self._subs.pop(sub.sub_id, None)
            raise
        return sub

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await self.peer.close()
        with contextlib.suppress(asyncio.CancelledError, TetherError):
            await self._runner


async def connect_local(home: Path) -> Connection:
    paths = HostPaths(home)
    try:
        reader, writer = await asyncio.open_unix_connection(str(paths.socket))
    except OSError:
        raise TransportClosed(
            f"no host daemon is running with home {home}",
            hint="start one with `tether host --relay URL` or `tether up`",
        ) from None
    return Connection(StreamTransport(reader, writer), host_id="local")


async def connect_remote(state: ClientState, host: PairedHost) -> Connection:
    """Open an IK channel to ``host`` through its relay: at the cluster node that held it last
    time, if a node said so and it still does, else at the host's relay URL (and if the node
    reached there says another holds the host, there instead)."""
    identity = state.identity()
    link, channel = await _open_steered(state, host)
    try:
        transport = await E2ETransport.initiate(channel, static=identity.static, remote_static=host.host_static)
    except BaseException:
        await link.close()
        raise

    def pin(key: bytes) -> None:
        current = next((h for h in state.hosts() if h.host_id == host.host_id), host)
        state.save_host(dataclasses.replace(current, host_static=key))

    conn = Connection(transport, host_id=host.host_id, link=link, on_host_key=pin)
    conn.background(learn_linked_hosts(conn, state, host))
    return conn


STEER_TIMEOUT = 5.0


async def _open_steered(state: ClientState, host: PairedHost) -> tuple[RelayLink, Channel]:
    identity = state.identity()
    opened: tuple[RelayLink, Channel] | None = None
    url = host.node_url
    if url and url != host.relay_url:
        with contextlib.suppress(TetherError, OSError, TimeoutError):
            async with asyncio.timeout(STEER_TIMEOUT):
                opened = await _open_at(url, identity, host)
        if opened is None:
            _remember_node(state, host, "")  # that node is gone, or no longer holds the host
    if opened is None:
        url = host.relay_url
        opened = await _open_at(url, identity, host)
    link = opened[0]
    node_url = link.redirects.get(host.host_id)
    if not node_url or node_url == url:
        return opened
    # The channel works across nodes; one at the host's own node does not cross them at all.
    try:
        async with asyncio.timeout(STEER_TIMEOUT):
            steered = await _open_at(node_url, identity, host)
    except (TetherError, OSError, TimeoutError):
        return opened
    except BaseException:  # cancelled meanwhile: the first link is nobody's to close but ours
        await link.close()
        raise
    await link.close()
    _remember_node(state, host, node_url)
    return steered


async def _open_at(url: str, identity: Identity, host: PairedHost) -> tuple[RelayLink, Channel]:
    link = await dial_relay(url, identity)
    try:
        return link, await link.open(host.host_id)
    except BaseException:
        await link.close()
        raise


def _remember_node(state: ClientState, host: PairedHost, node_url: str) -> None:
    current = next((h for h in state.hosts() if h.host_id == host.host_id), None)
    if current is not None and current.node_url != node_url:
        state.save_host(dataclasses.replace(current, node_url=node_url))


async def learn_linked_hosts(conn: Connection, state: ClientState, parent: PairedHost) -> None:
    """Keep this client's hosts in step with the hosts ``parent`` started over SSH (and shares its
    devices with), as told over this authenticated channel: new ones join with no new pairing,
    renamed ones are renamed, forgotten ones leave. A host paired here directly is never touched,
    and a learned host's key is then kept up to date by that host itself (``host.key``)."""
    try:
        linked = await conn.call("hosts.linked")
    except TetherError:
        return  # no read scope, or an older host
    known = {h.host_id: h for h in state.hosts()}
    announced: set[str] = set()
    for item in linked:
        try:
            host = PairedHost(
                host_id=str(item["host_id"]), name=str(item["name"]), relay_url=str(item["relay_url"]),
                host_static=b64u_decode(str(item["static_public"])), device_id=parent.device_id,
                scopes=list(parent.scopes), linked_from=parent.host_id,
            )
        except (KeyError, ValueError):
            continue
        if len(host.host_static) != 32 or host.host_id == parent.host_id:
            continue
        announced.add(host.host_id)
        had = known.get(host.host_id)
        if had is None:
            state.save_host(host)
        elif had.linked_from == parent.host_id and (had.name, had.relay_url) != (host.name, host.relay_url):
            state.save_host(dataclasses.replace(had, name=host.name, relay_url=host.relay_url))
    for had in known.values():
        if had.linked_from == parent.host_id and had.host_id not in announced:
            state.remove_host(had.host_id)


async def connect_token(token: AccessToken) -> Connection:
    """Open an IK channel to the host named in ``token``, as the token (no home needed)."""
    if token.expired:
        raise token_refusal(token, ChannelClosed(CloseCode.NOT_ALLOWED))
    identity = token.identity()
    link = await dial_relay(token.relay_url, identity)
    try:
        channel = await link.open(token.host_id)
        transport = await E2ETransport.initiate(channel, static=identity.static, remote_static=token.host_static)
    except ChannelClosed as exc:
        await link.close()
        raise token_refusal(token, exc) from None
    except BaseException:
        await link.close()
        raise
    return Connection(transport, host_id=token.host_id, link=link)


def token_refusal(token: AccessToken, exc: BaseException) -> BaseException:
    """A refusal said in a token's terms. The relay's refusals speak of devices, and it cannot
    tell a revoked token from an expired one (both just left the allowlist), nor either from an
    offline host (it answers both HOST_OFFLINE, so as not to tell strangers whether the host is
    online); the token knows its own expiry. The host's own reasons ("this token ...") are kept."""
    codes = (CloseCode.NOT_ALLOWED, CloseCode.REVOKED, CloseCode.HOST_OFFLINE)
    if not isinstance(exc, ChannelClosed) or exc.close_code not in codes:
        return exc
    if exc.reason.startswith("this token"):
        return exc
    hint = "create a new one with `tether tokens create` on the host"
    if token.expired:
        reason = f"this token expired on {token.expiry_text()}"
    elif exc.close_code == CloseCode.HOST_OFFLINE:
        reason = (
            "the host does not accept this token (it has been revoked, or was never created on that host), "
            "or the host is offline"
        )
        hint = "start the host if it is not running; else " + hint
    else:
        reason = "the host does not accept this token: it has been revoked (or was never created on that host)"
    return ChannelClosed(exc.close_code, reason, hint=hint)


def local_daemon_running(home: Path) -> bool:
    return HostPaths(home).socket.exists()


async def connect(home: Path, host: str | None = None) -> Connection:
    """The local daemon when this home runs one (and no ``--host`` was given), else a paired host."""
    if host is None and local_daemon_running(home):
        with contextlib.suppress(TransportClosed):
            return await connect_local(home)
    state = ClientState(home)
    if not state.hosts() and host is None:
        raise UsageError(
            "no host daemon runs with this home and it is not paired with any host",
            hint="start a host with `tether up`, or pair this client with `tether login`",
        )
    try:
        target = state.find_host(host)
    except UsageError:
        # Perhaps a host one of ours started over SSH since we last asked (`tether ssh`).
        if host is None or not await learn_from(state, state.hosts()):
            raise
        target = state.find_host(host)
    return await connect_remote(state, target)


async def learn_from(state: ClientState, parents: list[PairedHost]) -> bool:
    """Ask each of ``parents`` for the hosts it linked; whether any was new. A parent that is
    offline or refuses is skipped."""
    before = {h.host_id for h in state.hosts()}
    for parent in parents:
        try:
            conn = await connect_remote(state, parent)
        except (TetherError, OSError):
            continue
        try:
            await learn_linked_hosts(conn, state, parent)
        finally:
            await conn.close()
    return {h.host_id for h in state.hosts()} != before


def is_retryable(exc: BaseException) -> bool:
    """Whether reconnecting could make the failed operation succeed."""
    if isinstance(exc, ChannelClosed):
        return exc.close_code in RETRYABLE_CLOSES
    if isinstance(exc, HandshakeFailed):
        return False
    if isinstance(exc, RelayError) and exc.code == "relay_refused":
        return False  # the relay answered (bad signature, unsupported version): not a lost connection
    return isinstance(exc, (TransportClosed, RelayError, TimeoutError, OSError))
