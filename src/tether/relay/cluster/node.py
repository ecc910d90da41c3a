"""One relay node of a cluster: its presence in Redis, its end of the bus, and the channels that
cross nodes, joined to the node's router (ARCHITECTURE §9, docs/cluster.md).

A device connected here that opens a channel to a host connected to node A: this node's router
keeps the channel as the device's *remote* channel (counted against the device as any other),
looks up the host's node, and sends the OPEN there with the device's key; on node A the device is
a :class:`~tether.relay.router.ProxyPeer` whose frames go out over the bus, and node A's router
applies the host's allowlist and offers as for a device connected there. DATA then flows through
the bus both ways, unparsed. Nothing of a channel is kept in Redis: a node that dies takes its
channels with it, and the clients resume from their cursors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from tether.crypto.keys import derive_id
from tether.errors import ConfigError
from tether.lograte import LogLimiter
from tether.protocol.frames import (
    REDIRECT_VERSION,
    Close,
    CloseCode,
    FrameError,
    FrameType,
    MailboxItem,
    Open,
    Redirect,
    Role,
    close_message,
    data_channel,
    decode_frame,
)
from tether.relay.cluster.bus import Bus
from tether.relay.cluster.presence import REFRESH_SECONDS, TTL_MS, Holder, Presence
from tether.relay.cluster.records import KEY_LEN, Kind, Record
from tether.relay.cluster.redis_client import TROUBLE, Client, connect
from tether.relay.cluster.settings import ClusterSettings
from tether.relay.cluster.watching import Watching
from tether.relay.connection import Connection, Link
from tether.relay.limits import RelayLimits
from tether.relay.router import UNREACHABLE, UNREACHABLE_OFFER, Peer, Router


class Shell(Protocol):
    """What a node needs of the relay it is part of (``server.RelayServer``)."""

    router: Router[Link]
    limits: RelayLimits

    def act(self) -> None:
        """Carry out what the router decided."""

    def push_item(self, host_id: str, frame: bytes) -> bool:
        """Send a queued mailbox item to its host if it is connected here and has taken."""

log = logging.getLogger("tether.relay.cluster")
# seconds between the looks for the node of a host a device queued an item for, while none holds it
ITEM_RETRIES = (0.1, 0.5, 2.0)

_DATA = int(FrameType.DATA)
# tasks using Redis at once (each may hold a pooled connection); the bus, the presence writer and
# the shared address limits take a few more
REDIS_TASKS = 64
# presence writes wait this long (s) for others to join their pipeline: during a burst of hosts a
# pipeline per Redis reply cost more in round trips than in commands (hosts arriving one per
# 1.5 ms: 150 us each gathered for 10 ms, 104 us for 50 ms; docs/benchmarks.md)
PRESENCE_GATHER = 0.05
# hosts that changed are told to the other nodes this long after (s), as records of this many ids
CHANGED_DELAY = 0.05
CHANGED_PER_RECORD = 2000
# times a takeover asks Redis whether it still stands, REFRESH_SECONDS apart, while Redis fails
TAKEOVER_TRIES = 4
_NONE: dict[int, int] = {}
_REDIS_DOWN = (
    "the relay cannot reach its cluster's Redis, so hosts on other nodes cannot be reached from this "
    "one; retry in a moment"
)


class RemoteDevice:
    """A device connected to another node: what node A's router sends it goes over the bus."""

    __slots__ = ("closing", "handle", "node", "owner", "peer")

    channel_bytes = _NONE  # nothing is counted here: Redis holds what the other node has not read

    def __init__(self, owner: ClusterNode, node: str, handle: int) -> None:
        self.owner = owner
        self.node = node
        self.handle = handle
        self.closing = False
        self.peer: Peer[Link] | None = None

    @property
    def label(self) -> str:
        who = self.peer.id if self.peer is not None else "?"
        return f"device {who} on node {self.node}"

    def enqueue(self, frame: bytes, channel: int = -1) -> bool:
        if self.closing:
            return False
        return self.owner.to_device(self, frame)

    def fail(self, code: CloseCode, message: str) -> None:
        if not self.closing:
            self.closing = True
            body = code.to_bytes(2, "big") + message.encode()[:1024]
            self.owner.send(self.node, Record(Kind.FAIL_DEVICE, self.handle, body))
            self.owner.forget_proxy(self)

    async def wait_progress(self, timeout: float) -> None:
        await asyncio.sleep(0)


class ClusterNode:
    """This node's part in the cluster; see the module's docstring."""

    def __init__(self, server: Shell, redis: Client, node_id: str, advertise_url: str) -> None:
        self.server = server
        self.router = server.router
        self.redis = redis
        self.node_id = node_id
        self.advertise_url = advertise_url
        self.presence = Presence(redis, node_id, advertise_url)
        self.bus = Bus(redis, node_id, self._deliver, self._on_trouble, self._resubscribed, self.node_lost,
                       self._on_gap)
        #: why the cluster is in trouble now (None: it is not), for /healthz
        self.trouble: str | None = None
        self._devices: dict[int, Connection] = {}  # handle → a device here with remote channels
        self._next_handle = 1
        self._proxies: dict[tuple[str, int], RemoteDevice] = {}  # (node, handle) → its proxy here
        self._urls: dict[str, str] = {}  # node → its advertise URL
        self._nodes: list[str] = []  # the live nodes, as of the last refresh
        self.watching = Watching(self.router, self.presence, server.act)
        self._tasks: set[asyncio.Task[None]] = set()
        # at most this many tasks use Redis at once (redis-py's pool refuses past 100 connections)
        self._slots = asyncio.Semaphore(REDIS_TASKS)
        self._writing = False  # _write_queued runs
        self._closed = False
        self._changed_hosts: set[str] = set()  # hosts to tell the other nodes of (_send_changed)
        self._changed_timer: asyncio.TimerHandle | None = None
        self._lost: dict[str, float] = {}  # node → when it was last found gone (loop time)
        self._refresher: asyncio.Task[None] | None = None
        self._refreshing = asyncio.Lock()  # one refresh at a time (the periodic one, a resubscription's)
        self._quiet = LogLimiter(log)

    @classmethod
    async def join(cls, server: Shell, settings: ClusterSettings) -> ClusterNode:
        """Connect to the cluster's Redis and take part (ConfigError if it cannot be reached)."""
        redis = await connect(settings.seeds)
        node = cls(server, redis, settings.node_id, settings.advertise_url)
        try:
            await node.start()
        except TROUBLE as exc:
            await redis.aclose()
            raise ConfigError(f"cannot join the cluster through Redis: {exc}",
                              hint="check the --cluster URL and that Redis is running") from None
        return node

    async def start(self) -> None:
        await self.presence.refresh()
        self._nodes = await self.presence.nodes()
        await self.bus.start()
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())
        log.info("cluster node %s (%s) joined", self.node_id, self.advertise_url)

    async def close(self) -> None:
        self._closed = True
        if self._changed_timer is not None:
            self._changed_timer.cancel()
        if self._refresher is not None:
            self._refresher.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self.bus.close()
        with contextlib.suppress(*TROUBLE, TimeoutError):
            async with asyncio.timeout(2):
                await self.presence.leave()
        await self.redis.aclose()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        if self._closed:
            work.close()
            return
        task = asyncio.get_running_loop().create_task(self._bounded(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _bounded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            async with self._slots:
                await work
        finally:
            work.close()  # cancelled while waiting for a slot: never started

    def send(self, node: str, record: Record) -> bool:
        return self.bus.send(node, record)

    # --- hosts connected here ---

    def host_connected(self, host_id: str) -> None:
        self.presence.host_connected(host_id)
        self._write_presence()

    def host_gone(self, host_id: str) -> None:
        self.presence.host_gone(host_id)
        self._write_presence()

    def allowlist_published(self, host_id: str, keys: frozenset[bytes]) -> None:
        self.presence.publish_allowlist(host_id, keys)
        self._write_presence()

    def _write_presence(self) -> None:
        if not self._writing:
            self._writing = True
            self._spawn(self._write_queued())

    async def _write_queued(self) -> None:
        """Write what hosts changed, a pipeline at a time: what queues while one is out goes in the
        next, so a burst of connections costs a few round trips."""
        try:
            while self.presence.pending:
                await asyncio.sleep(PRESENCE_GATHER)  # more hosts join this pipeline
                written = await self.presence.write()
                if written.error is not None:
                    self._on_trouble(f"cannot write presence to Redis: {written.error}")
                for host_id, old, mine in written.taken:
                    if self._reachable(old.node):
                        self.send(old.node, Record(Kind.TAKEOVER, 0, f"{host_id} {mine.encode()}".encode()))
                self._changed(written.changed)
        finally:
            self._writing = False

    def _changed(self, host_ids: list[str]) -> None:
        """Tell every other node, within ``CHANGED_DELAY``, that these hosts connected, left or
        changed their allowlists: gathered, so that a burst of hosts (a failover) costs the bus a
        few records rather than a publish per loop pass."""
        self._changed_hosts.update(host_ids)
        if self._changed_hosts and self._changed_timer is None:
            self._changed_timer = asyncio.get_running_loop().call_later(CHANGED_DELAY, self._send_changed)

    def _send_changed(self) -> None:
        self._changed_timer = None
        hosts, self._changed_hosts = list(self._changed_hosts), set()
        nodes = [node for node in self._nodes if node != self.node_id and self._reachable(node)]
        for start in range(0, len(hosts), CHANGED_PER_RECORD):
            body = " ".join(hosts[start:start + CHANGED_PER_RECORD]).encode()
            for node in nodes:
                self.send(node, Record(Kind.HOST_CHANGED, 0, body))

    def _reachable(self, node: str) -> bool:
        """Whether ``node`` may be listening: not found gone within the last ``TTL_MS``. (Telling a
        dead node of each of its hosts coming back elsewhere would find it gone each time.)"""
        lost = self._lost.get(node)
        return lost is None or asyncio.get_running_loop().time() - lost > TTL_MS / 1000

    # --- devices here watching hosts elsewhere ---

    def watch(self, device: Peer[Link], host_ids: tuple[str, ...]) -> None:
        self._spawn(self.watching.watch(device, host_ids))

    def reconsider(self, host_id: str) -> None:
        self._spawn(self.watching.changed(host_id))

    async def _takeover(self, host_id: str, newer: Holder, attempt: int = 1) -> None:
        """Another node says a newer connection of ``host_id`` is there: close ours if Redis agrees."""
        host = self.router.hosts.get(host_id)
        if host is None:
            return
        try:
            if not await self.presence.still_holds(host_id, newer):
                return
        except TROUBLE:
            # not known either way: asked again later, for our connection must not outlive the
            # newer one (after a Redis restart our refresh could take the key back)
            if attempt < TAKEOVER_TRIES:
                asyncio.get_running_loop().call_later(
                    REFRESH_SECONDS, lambda: self._spawn(self._takeover(host_id, newer, attempt + 1)))
            return
        if self.router.hosts.get(host_id) is host:
            self.presence.held.pop(host_id, None)  # the entry is the newer connection's now
            self.router.fail(host, CloseCode.REPLACED, close_message(CloseCode.REPLACED))
            self.server.act()

    # --- the mailbox ---

    def mailbox_item(self, host_id: str, frame: bytes) -> None:
        """A device here queued ``frame`` (MAILBOX_ITEM) for a host that is not connected here:
        if it is connected to another node, that node sends it to the host at once (as one relay
        does); otherwise the host takes it when it comes back."""
        self._spawn(self._send_item(host_id, frame))

    async def _send_item(self, host_id: str, frame: bytes, attempt: int = 0) -> None:
        try:
            holder = await self.presence.where(host_id)
        except TROUBLE:
            return  # the item is in the mailbox: the host takes it at its next TAKE
        if holder is not None and holder.node != self.node_id:
            if self._reachable(holder.node):
                self.send(holder.node, Record(Kind.MAILBOX_ITEM, 0, host_id.encode() + b" " + frame))
        elif attempt < len(ITEM_RETRIES):
            # A host that just connected elsewhere may have taken its items before its node wrote
            # its presence: asked again a little later (not holding a Redis slot meanwhile), for
            # the host would not see the item until it next connects.
            asyncio.get_running_loop().call_later(
                ITEM_RETRIES[attempt], lambda: self._spawn(self._send_item(host_id, frame, attempt + 1)))

    # --- devices connected here, with channels to hosts elsewhere ---

    def open_elsewhere(self, device: Peer[Link], frame: Open) -> None:
        self._spawn(self._place(device, frame))

    async def _place(self, device: Peer[Link], frame: Open) -> None:
        router = self.router
        channel = frame.channel
        if not self.bus.subscribed:
            router.unplaced(device, channel, CloseCode.NODE_UNREACHABLE, _REDIS_DOWN)
            self.server.act()
            return
        try:
            holder = await self.presence.where(frame.host_id)
        except TROUBLE as exc:
            self._on_trouble(f"cannot read presence from Redis: {exc}")
            router.unplaced(device, channel, CloseCode.NODE_UNREACHABLE, _REDIS_DOWN)
            self.server.act()
            return
        if holder is None or holder.node == self.node_id:
            reason = UNREACHABLE_OFFER if frame.offer_id else UNREACHABLE
            router.unplaced(device, channel, CloseCode.HOST_OFFLINE, reason)
        elif router.placed(device, channel, holder.node):
            conn = device.link
            assert isinstance(conn, Connection)
            if conn.version >= REDIRECT_VERSION:
                # before the OPEN goes on, so that the device has it by the time its channel opens
                url = await self._url_of(holder.node)
                if url and not conn.closing:
                    conn.enqueue(Redirect(frame.host_id, url).encode())
            if not conn.handle:
                conn.handle = self._next_handle
                self._next_handle += 1
                self._devices[conn.handle] = conn
            if not self.send(holder.node, Record(Kind.OPEN, conn.handle, device.key + frame.encode())):
                router.unplaced(device, channel, CloseCode.NODE_UNREACHABLE, close_message(CloseCode.NODE_UNREACHABLE))
        self.server.act()

    async def _url_of(self, node: str) -> str | None:
        """Where clients reach ``node`` (its advertise URL), cached while it lives."""
        url = self._urls.get(node)
        if url is None:
            with contextlib.suppress(*TROUBLE):
                url = await self.presence.url_of(node)
            if url:
                self._urls[node] = url
        return url

    def from_device(self, conn: Connection, message: bytes) -> None:
        """A DATA frame a device here sent on a channel to a host elsewhere."""
        remote = conn.peer.remote
        channel = data_channel(message)
        node = remote.get(channel) if remote else None
        if node and not self.send(node, Record(Kind.FROM_DEVICE, conn.handle, message)):
            self.router.unplaced(conn.peer, channel, CloseCode.TOO_SLOW, close_message(CloseCode.TOO_SLOW))
            self.server.act()

    def to_node(self, device: Peer[Link], node: str, frame: bytes) -> None:
        conn = device.link
        if isinstance(conn, Connection) and conn.handle:
            self.send(node, Record(Kind.FROM_DEVICE, conn.handle, frame))

    def left_nodes(self, device: Peer[Link], nodes: frozenset[str]) -> None:
        conn = device.link
        if isinstance(conn, Connection) and conn.handle:
            for node in nodes:
                self.send(node, Record(Kind.DEVICE_GONE, conn.handle, b""))

    def forget(self, conn: Connection) -> None:
        """A device connection here is gone (its nodes were told, by :meth:`left_nodes`)."""
        if conn.handle:
            self._devices.pop(conn.handle, None)

    # --- devices connected elsewhere, with channels to hosts here ---

    def to_device(self, proxy: RemoteDevice, frame: bytes) -> bool:
        return self.send(proxy.node, Record(Kind.TO_DEVICE, proxy.handle, frame))

    def forget_proxy(self, proxy: RemoteDevice) -> None:
        if self._proxies.get((proxy.node, proxy.handle)) is proxy:
            del self._proxies[(proxy.node, proxy.handle)]

    def _drop_proxy_if_idle(self, proxy: RemoteDevice) -> None:
        peer = proxy.peer
        if peer is not None and not peer.channels and not peer.gone:
            self.forget_proxy(proxy)
            self.router.disconnect(peer)

    # --- the bus ---

    def _deliver(self, sender: str, records: list[Record]) -> None:
        self._lost.pop(sender, None)  # it speaks: it lives
        for record in records:
            try:
                self._on_record(sender, record)
            except FrameError as exc:
                self._quiet.log(logging.WARNING, "record", "dropped a bad record from node %s: %s", sender, exc)
        self.server.act()

    def _on_record(self, sender: str, record: Record) -> None:
        kind, handle, body = record.kind, record.handle, record.body
        if kind is Kind.OPEN:
            key, frame = body[:KEY_LEN], decode_frame(body[KEY_LEN:])
            if len(key) != KEY_LEN or not isinstance(frame, Open):
                raise FrameError("an OPEN record carries a key and an OPEN frame")
            proxy = self._proxies.get((sender, handle))
            if proxy is None or proxy.peer is None or proxy.peer.key != key:
                proxy = RemoteDevice(self, sender, handle)
                proxy.peer = self.router.connect(proxy, Role.DEVICE, key, derive_id(key), proxy=True)
                self._proxies[(sender, handle)] = proxy
            self.router.receive(proxy.peer, frame)
            self.server.act()
            self._drop_proxy_if_idle(proxy)
        elif kind is Kind.FROM_DEVICE:
            self._from_remote_device(sender, handle, body)
        elif kind is Kind.TO_DEVICE:
            self._to_device_here(handle, body)
        elif kind is Kind.DEVICE_GONE:
            proxy = self._proxies.pop((sender, handle), None)
            if proxy is not None and proxy.peer is not None:
                self.router.disconnect(proxy.peer)
        elif kind is Kind.FAIL_DEVICE:
            conn = self._devices.get(handle)
            if conn is not None and len(body) >= 2:
                code = int.from_bytes(body[:2], "big")
                conn.fail(CloseCode(code) if code in CloseCode._value2member_map_ else CloseCode.PROTOCOL_ERROR,
                          body[2:].decode("utf-8", "replace"))
        elif kind is Kind.TAKEOVER:
            host_id, _, holder = body.decode("ascii", "replace").partition(" ")
            newer = Holder.decode(holder)
            if newer is not None:
                self._spawn(self._takeover(host_id, newer))
        elif kind is Kind.HOST_CHANGED:
            for host_id in body.decode("ascii", "replace").split(" "):
                if self.watching.wants(host_id):
                    self._spawn(self.watching.changed(host_id))
        elif kind is Kind.MAILBOX_ITEM:
            to_host, _, item = body.partition(b" ")
            if not isinstance(decode_frame(item), MailboxItem):
                raise FrameError("a MAILBOX_ITEM record carries a host id and a MAILBOX_ITEM frame")
            self.server.push_item(to_host.decode("ascii", "replace"), item)

    def _from_remote_device(self, sender: str, handle: int, body: bytes) -> None:
        proxy = self._proxies.get((sender, handle))
        peer = proxy.peer if proxy is not None else None
        if not body:
            raise FrameError("an empty frame")
        if body[0] == _DATA:
            target = self.router.forward(peer, body) if peer is not None else None
            if target is None:
                # a channel this node no longer has: say so, or the device waits on it forever
                channel = data_channel(body)
                reason = close_message(CloseCode.PEER_GONE)
                self.send(sender, Record(Kind.TO_DEVICE, handle, Close(channel, CloseCode.PEER_GONE, reason).encode()))
                return
            receiver, frame, channel = target
            queued = receiver.link.channel_bytes.get(channel, 0)
            if queued and queued + len(frame) > self.server.limits.channel_queue_bytes:
                # no waiting on the bus (it would hold up every other channel): the channel
                # closes, and the clients resume
                route = peer.channels.get(data_channel(body)) if peer is not None else None
                if route is not None:
                    self.router.close_route(route, CloseCode.TOO_SLOW, close_message(CloseCode.TOO_SLOW))
                return
            receiver.link.enqueue(frame, channel)
            return
        if peer is not None and proxy is not None:
            self.router.receive(peer, decode_frame(body))
            self.server.act()
            self._drop_proxy_if_idle(proxy)

    def _to_device_here(self, handle: int, body: bytes) -> None:
        conn = self._devices.get(handle)
        if conn is None or conn.closing or not body:
            return
        peer = conn.peer
        if body[0] == _DATA:
            channel = data_channel(body)
            if peer.remote and peer.remote.get(channel):
                conn.enqueue(body, channel)
            return
        frame = decode_frame(body)
        if isinstance(frame, Close):
            if self.router.closed_elsewhere(peer, frame.channel):
                conn.enqueue(body)
        elif peer.remote and getattr(frame, "channel", -1) in peer.remote:
            conn.enqueue(body)  # OPENED

    def metrics(self) -> list[str]:
        """This node's cluster figures, for /metrics."""
        bus = self.bus
        return [
            "# HELP tether_relay_cluster_trouble 1 while the node cannot use the cluster's Redis as it should.",
            "# TYPE tether_relay_cluster_trouble gauge",
            f"tether_relay_cluster_trouble {int(self.trouble is not None)}",
            "# HELP tether_relay_cluster_records_total Records between nodes (frames and channel events).",
            "# TYPE tether_relay_cluster_records_total counter",
            f'tether_relay_cluster_records_total{{direction="sent"}} {bus.records_sent}',
            f'tether_relay_cluster_records_total{{direction="received"}} {bus.records_received}',
            "# HELP tether_relay_cluster_messages_total Redis messages (batches of records) between nodes.",
            "# TYPE tether_relay_cluster_messages_total counter",
            f'tether_relay_cluster_messages_total{{direction="sent"}} {bus.messages_sent}',
            f'tether_relay_cluster_messages_total{{direction="received"}} {bus.messages_received}',
            "# HELP tether_relay_cluster_subscription_drops_total Times Redis dropped this node's subscription.",
            "# TYPE tether_relay_cluster_subscription_drops_total counter",
            f"tether_relay_cluster_subscription_drops_total {bus.dropped_subscriptions}",
            "# HELP tether_relay_cluster_gaps_total Batches from other nodes found missing (their channels closed).",
            "# TYPE tether_relay_cluster_gaps_total counter",
            f"tether_relay_cluster_gaps_total {bus.gaps}",
            "# HELP tether_relay_cluster_hosts_held Hosts this node holds in the cluster's presence keys.",
            "# TYPE tether_relay_cluster_hosts_held gauge",
            f"tether_relay_cluster_hosts_held {len(self.presence.held)}",
            *self.presence.write_seconds.lines(),
        ]

    # --- trouble ---

    def node_lost(self, node: str, *, tell: bool = False) -> None:
        """``node`` is gone: the channels through it close, retryably. ``tell``: it may still
        listen (only its presence key is missing), so have it close its ends too."""
        if self._reachable(node):
            log.info("cluster node %s is gone: closing the channels through it", node)
        self._lost[node] = asyncio.get_running_loop().time()
        self._urls.pop(node, None)
        self._cut(node, close_message(CloseCode.NODE_UNREACHABLE), tell=tell)

    def _on_gap(self, node: str) -> None:
        """Batches from ``node`` were lost on the way: the channels shared with it may have lost
        frames, so they close, retryably, at both ends."""
        self._quiet.log(logging.WARNING, f"gap {node}", "records from cluster node %s were lost on the way: "
                        "closing the channels shared with it", node)
        self._cut(node, _REDIS_DOWN)

    def _cut(self, node: str, reason: str, *, tell: bool = True) -> None:
        """Close every channel between this node and ``node`` with NODE_UNREACHABLE; ``tell``:
        have ``node`` close its ends too (if that gets through: when it does not, that node is in
        trouble as well and closes them itself), or the hosts there keep them open for good."""
        if tell:
            for peer in list(self.router.peers):
                if peer.remote and node in peer.remote.values():
                    self.left_nodes(peer, frozenset((node,)))
        self.router.node_lost(node, CloseCode.NODE_UNREACHABLE, reason)
        for (where, _), proxy in list(self._proxies.items()):
            if where == node and proxy.peer is not None:
                if tell:  # a device there that only listens would wait on its channel for good
                    for channel in list(proxy.peer.channels):
                        self.to_device(proxy, Close(channel, CloseCode.NODE_UNREACHABLE, reason).encode())
                self.forget_proxy(proxy)
                self.router.disconnect(proxy.peer)
        self.server.act()

    def _shared(self) -> set[str]:
        """The nodes this node shares channels with."""
        nodes = {node for peer in self.router.peers if peer.remote for node in peer.remote.values() if node}
        nodes.update(node for node, _ in self._proxies)
        return nodes

    def _on_trouble(self, why: str) -> None:
        if self.trouble is None:
            log.warning("cluster trouble: %s; channels to other nodes are closed until it heals", why)
        self.trouble = why
        # Records may have been lost whatever failed: a subscription Redis dropped misses what was
        # published meanwhile, a publish that failed lost its batch (one that timed out may even
        # be run late, after newer ones), and a frozen Redis shows only as timed-out commands
        # while the subscription looks live. No channel through the bus can go on.
        for node in self._shared():
            self._cut(node, _REDIS_DOWN)

    def _resubscribed(self) -> None:
        # Healed once presence is written too: Redis may have restarted empty, and a node that
        # takes channels again before its key is back is found gone by the others.
        self._spawn(self._refresh())

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            await self._refresh()

    async def _refresh(self) -> None:
        async with self._refreshing:
            await self._refresh_once()

    async def _refresh_once(self) -> None:
        try:
            await self.presence.refresh()
            self._nodes = await self.presence.nodes()
            await self.watching.check()
            for node in self._shared():
                if not await self.presence.node_alive(node):
                    # A live node may have lost its key (Redis restarted empty, the node
                    # subscribed again before its refresh): untold, a device there that only
                    # listens would wait on its channel for good. Told, a dead node hears
                    # nothing, and a publish finding nobody costs one message.
                    self.node_lost(node, tell=True)
                else:
                    self.bus.touch(node)  # a lost batch shows within a refresh
        except TROUBLE as exc:
            self._on_trouble(f"cannot refresh presence in Redis: {exc}")
            return
        if self.trouble is not None and self.bus.subscribed:
            log.info("cluster healed: Redis is reachable again")
            self.trouble = None
