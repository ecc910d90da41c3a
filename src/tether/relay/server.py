"""The relay: a WebSocket server that hosts and devices dial out to (ARCHITECTURE §1, §4.2).

This module is the asyncio shell around the parts that decide: ``http.py`` answers everything
before a WebSocket exists (admission per address, pages), ``router.py`` says who may reach whom
and what each side is sent, ``connection.py`` queues and writes a connection's outgoing frames,
``mailbox.py`` keeps what hosts that are away left for devices. Channel payloads are end-to-end
Noise ciphertext: the relay forwards them, never parses or logs them.

Shape of one connection::

    handler task:  admit (awaiting HELLO → challenged → authenticated) → read loop → gone
    writer task:   only while frames are queued (connection.py)

Every connection must finish its upgrade within ``handshake_timeout`` and authenticate within
``auth_timeout``; with an enrollment key (``enrollment.py``) only hosts that prove they hold it
are admitted. A device connection that holds no channel, watches no host and sends nothing is
closed after ``idle_timeout``. Each connection reads at most ``frames_per_second`` (its socket is
not read while it is over), and a DATA frame whose receiver's channel queue is full waits up to
``slow_receiver_grace`` for it to drain before the channel is closed with TOO_SLOW.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from tether.crypto.keys import derive_id, verify_signature
from tether.errors import UsageError
from tether.lograte import LogLimiter
from tether.protocol.frames import (
    OLDEST_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    Auth,
    Challenge,
    CloseCode,
    Error,
    FrameError,
    FrameType,
    Hello,
    MailboxAck,
    MailboxDeposit,
    MailboxError,
    MailboxTake,
    Role,
    Welcome,
    auth_message,
    close_message,
    data_channel,
    decode_frame,
)
from tether.relay.connection import Connection, Link, send_one
from tether.relay.enrollment import verify_enroll_proof
from tether.relay.http import WS_PATH, Front, peer_name
from tether.relay.keepalive import Keepalive
from tether.relay.limits import (
    AddressTable,
    RelayLimits,
    SocketCount,
    connection_cap,
    raise_open_files_limit,
)
from tether.relay.listen import parse_listen
from tether.relay.mailbox import (
    DeviceRequest,
    HostRequest,
    Lane,
    Mailbox,
    MailboxRefused,
    Store,
    answer_device,
    answer_host,
    as_frame,
)
from tether.relay.origin import OriginPolicy
from tether.relay.router import (
    AllowlistPublished,
    Fail,
    LeftNodes,
    OpenElsewhere,
    Peer,
    Reconsider,
    Route,
    Router,
    Send,
    ToMailbox,
    ToNode,
    WatchElsewhere,
)
from tether.relay.static import default_static_dir
from tether.relay.websocket import Listener, RelaySocket

if TYPE_CHECKING:  # the cluster's modules need the redis library: imported only for a cluster node
    from tether.relay.cluster.node import ClusterNode
    from tether.relay.cluster.settings import ClusterSettings

__all__ = ["RelayLimits", "RelayServer", "default_static_dir", "run_relay"]

_T = TypeVar("_T")
_LoopHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]

log = logging.getLogger("tether.relay")

_DATA = int(FrameType.DATA)
# seconds before a host's allowlist the mailbox failed to store is stored again
PUBLISH_RETRY_SECONDS = 5.0
# connections the kernel completes and holds for the relay to accept (see start)
LISTEN_BACKLOG = 4096


class _Refused(Exception):
    """Admission refused: sent to the client as ERROR(code, message), then the socket closes."""

    def __init__(self, code: CloseCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RelayServer:
    """A relay on one port: ``/ws`` for hosts and devices, ``/healthz``, static files at ``/``."""

    def __init__(
        self,
        *,
        limits: RelayLimits | None = None,
        public_url: str | None = None,
        static_dir: Path | None = None,
        tls: ssl.SSLContext | None = None,
        enroll_key: bytes | None = None,
        allowed_origins: tuple[str, ...] = (),
        mailbox: Store | None = None,
        cluster: ClusterSettings | None = None,
    ) -> None:
        self.limits = limits or RelayLimits()
        #: Sealed snapshots and queued items for hosts that are away; None: this relay keeps none.
        self.mailbox = mailbox
        self._mailbox_tasks: set[asyncio.Task[None]] = set()
        self.tls = tls
        self.public_url = public_url
        self.static_dir = static_dir.resolve() if static_dir is not None else None
        #: Hosts must prove they hold it (``tether relay --enroll-key``); None: any host.
        self.enroll_key = enroll_key
        self.origins = OriginPolicy(public_url, allowed_origins)
        self.addresses = AddressTable(self.limits)
        self.sockets = SocketCount(0)
        # lines a flood can repeat at will (refusals, accept errors): once per 10 s per kind
        self.quiet_log = LogLimiter(log)
        self.front = Front(self.limits, self.addresses, self.sockets, self.quiet_log, self.origins, self.static_dir,
                           self._trouble, self._metrics)
        self.router: Router[Link] = Router(self.limits, elsewhere=cluster is not None)
        self.cluster_settings = cluster
        #: this node's part in a cluster (``--cluster``), from start()
        self.cluster: ClusterNode | None = None
        self._acting = False
        #: the listening socket and its connections, from start()
        self.listener: Listener | None = None
        # asyncio's exception handler before start() put _loop_exception in its place
        self._previous_handler: _LoopHandler | None = None
        self._idle_sweeper: asyncio.Task[None] | None = None
        self._mailbox_sweeper: asyncio.Task[None] | None = None
        lim = self.limits
        self.keepalive = Keepalive(lim.ping_interval, lim.ping_timeout) if lim.ping_interval else None
        self._pinger: asyncio.Task[None] | None = None
        self.port = 0

    # --- lifecycle ---

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0 = an ephemeral port); return the bound port."""
        lim = self.limits
        before, open_files = raise_open_files_limit()
        cap, batch = connection_cap(open_files)
        if lim.max_connections is not None:
            cap = lim.max_connections
        self.sockets.cap = cap
        raised = f" (raised from {before})" if open_files != before else ""
        log.info("open files: at most %d per process%s; at most %d connections at once", open_files, raised, cap)
        loop = asyncio.get_running_loop()
        if loop.get_exception_handler() != self._loop_exception:
            self._previous_handler = loop.get_exception_handler()
            loop.set_exception_handler(self._loop_exception)
        # websockets says "connection open" for every socket: a flood's worth of lines.
        ws_log = log.getChild("websockets")
        if ws_log.level == logging.NOTSET and not log.isEnabledFor(logging.DEBUG):
            ws_log.setLevel(logging.WARNING)

        try:
            # bound now, so that a port in use is said before anything else; accepting only once
            # a cluster node has joined: a host it admitted before would have no presence (nor a
            # device the shared rules) until it reconnected. Meanwhile connections wait in the
            # listen backlog.
            self.listener = listener = Listener(self.front, self._handle, ws_log)
            # asyncio accepts up to `batch` sockets per loop pass (connection_cap)
            await listener.listen(host, port, tls=self.tls, backlog=batch)
            server = listener.server
            assert server is not None
            self.port = int(server.sockets[0].getsockname()[1])
            if self.cluster_settings is not None:
                await self._join(self.cluster_settings)
            await server.start_serving()
            # asyncio listens with its accept batch as the backlog (at most 100): thousands of
            # hosts reconnecting at once after a node died would have their SYNs dropped and sent
            # again 1, 3, 7 s later. The kernel queues up to LISTEN_BACKLOG (capped by
            # net.core.somaxconn); asyncio still accepts a batch per loop pass.
            for sock in server.sockets:
                with socket.fromfd(sock.fileno(), sock.family, sock.type) as same:
                    same.listen(LISTEN_BACKLOG)
        except BaseException:
            await self.close()  # leaves the cluster it joined
            raise
        if lim.idle_timeout:
            self._idle_sweeper = asyncio.get_running_loop().create_task(self._sweep_idle(lim.idle_timeout))
        if self.keepalive is not None:
            self._pinger = asyncio.get_running_loop().create_task(self.keepalive.run())
        if self.mailbox is not None:
            self._mailbox_sweeper = asyncio.get_running_loop().create_task(self._sweep_mailbox(self.mailbox))
        return self.port

    async def _join(self, settings: ClusterSettings) -> None:
        from tether.relay.cluster.addresses import SharedAddresses
        from tether.relay.cluster.node import ClusterNode

        self.cluster = await ClusterNode.join(self, settings)
        self.front.shared = SharedAddresses(self.cluster.redis, self.limits)
        if settings.mailbox is not None:
            from tether.relay.cluster.mailbox import SharedMailbox

            self.mailbox = SharedMailbox(self.cluster.redis, settings.mailbox)

    async def close(self) -> None:
        """Stop listening and close every connection (clients see the relay going away)."""
        for task in (self._idle_sweeper, self._mailbox_sweeper, self._pinger, *self._mailbox_tasks):
            if task is not None:
                task.cancel()
        self._idle_sweeper = self._mailbox_sweeper = self._pinger = None
        self.front.shared = None
        if self.cluster is not None:
            await self.cluster.close()
            self.cluster = None
        loop = asyncio.get_running_loop()
        if loop.get_exception_handler() == self._loop_exception:
            loop.set_exception_handler(self._previous_handler)
        if self.listener is None:
            return
        listener, self.listener = self.listener, None
        await listener.close()

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio's error reports, with out-of-descriptor accept errors rate-limited: Python 3.11
        logs one per accept attempt, a hundred per loop pass, while the process is out of them."""
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            self.quiet_log.log(logging.ERROR, "accept", "cannot accept connections: %s", exc.strerror or exc)
            return
        if self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    async def serve_forever(self) -> None:
        if self.listener is None or self.listener.server is None:
            raise RuntimeError("call start() first")
        await self.listener.server.serve_forever()

    async def __aenter__(self) -> RelayServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def hosts_online(self) -> list[str]:
        return sorted(self.router.hosts)

    def _trouble(self) -> str | None:
        """What /healthz reports as wrong (None: nothing)."""
        if self.cluster is not None and self.cluster.trouble is not None:
            return f"cluster: {self.cluster.trouble}"
        return None

    def _metrics(self) -> str:
        """``/metrics`` in Prometheus' text format."""
        census = self.router.census()
        lines = [
            "# HELP tether_relay_connections Authenticated connections to this relay node.",
            "# TYPE tether_relay_connections gauge",
            f'tether_relay_connections{{role="host"}} {census["hosts"]}',
            f'tether_relay_connections{{role="device"}} {census["devices"]}',
            "# HELP tether_relay_channels Open channels, by where their ends are connected.",
            "# TYPE tether_relay_channels gauge",
            f'tether_relay_channels{{path="local"}} {census["channels_local"]}',
            f'tether_relay_channels{{path="to_other_node"}} {census["channels_to_other_nodes"]}',
            f'tether_relay_channels{{path="from_other_node"}} {census["channels_from_other_nodes"]}',
            "# HELP tether_relay_sockets TCP connections held, authenticated or not.",
            "# TYPE tether_relay_sockets gauge",
            f"tether_relay_sockets {self.sockets.open}",
            "# HELP tether_relay_keepalive_drops_total Connections dropped for answering no keepalive ping.",
            "# TYPE tether_relay_keepalive_drops_total counter",
            f"tether_relay_keepalive_drops_total {self.keepalive.dropped if self.keepalive else 0}",
            # a full collection (generation 2) stops the loop for every live object (collector.py)
            "# HELP python_gc_collections_total Garbage collections of this process, by generation.",
            "# TYPE python_gc_collections_total counter",
            *(f'python_gc_collections_total{{generation="{n}"}} {stats["collections"]}'
              for n, stats in enumerate(gc.get_stats())),
        ]
        if self.cluster is not None:
            lines += self.cluster.metrics()
        return "\n".join(lines) + "\n"

    @property
    def connections(self) -> list[Connection]:
        """The authenticated connections, in no order."""
        return [peer.link for peer in self.router.peers if isinstance(peer.link, Connection)]

    # --- one connection ---

    async def _handle(self, ws: RelaySocket) -> None:
        try:
            async with asyncio.timeout(self.limits.auth_timeout):
                conn = await self._admit(ws)
        except _Refused as refused:
            log.info("refused %s: %s", peer_name(ws), refused.message)
            await _refuse(ws, refused.code, refused.message)
            return
        except TimeoutError:
            self.quiet_log.log(
                logging.INFO, "auth timeout", "refused %s: no AUTH within %.1f s",
                peer_name(ws), self.limits.auth_timeout,
            )
            await _refuse(ws, CloseCode.AUTH_TIMEOUT, close_message(CloseCode.AUTH_TIMEOUT))
            return
        except ConnectionClosed:
            return

        log.info("%s connected from %s", conn.label, peer_name(ws))
        self.act()
        try:
            await self._read_loop(conn)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("internal error on %s", conn.label)
            conn.fail(CloseCode.PROTOCOL_ERROR, "internal relay error")
        finally:
            self.gone(conn)
            if conn.writer is not None:
                conn.writer.cancel()
            if conn.closer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(conn.closer), self.limits.close_timeout + 1)
            log.info("%s disconnected", conn.label)

    async def _admit(self, ws: RelaySocket) -> Connection:
        """HELLO → CHALLENGE → AUTH → WELCOME; the connection, registered with the router."""
        hello = _expect(await ws.recv(), Hello, "the relay expects HELLO as the first frame")
        if not OLDEST_PROTOCOL_VERSION <= hello.version <= PROTOCOL_VERSION:
            raise _Refused(
                CloseCode.UNSUPPORTED_VERSION,
                f"this relay speaks protocol version {PROTOCOL_VERSION}, the client {hello.version}; "
                "upgrade tether on the older side",
            )
        nonce = secrets.token_bytes(32)
        await send_one(ws, Challenge(nonce).encode())
        auth = _expect(await ws.recv(), Auth, "the relay expects AUTH after CHALLENGE")
        key = hello.identity_public
        if not verify_signature(key, auth.signature, auth_message(hello.role, nonce)):
            raise _Refused(CloseCode.AUTH_FAILED, close_message(CloseCode.AUTH_FAILED))
        id = derive_id(key)
        welcome = Welcome(id=id, max_frame_bytes=self.limits.max_frame_bytes).encode()
        if hello.role is Role.HOST:
            self._check_enrollment(auth, nonce, key)
            await send_one(ws, welcome)
        else:
            refusal = self.router.admit_device(key)
            if refusal is not None:
                raise _Refused(CloseCode.TOO_MANY_CONNECTIONS, refusal)
            try:
                await send_one(ws, welcome)
            except BaseException:
                self.router.release_device(key)
                raise
        conn = Connection(ws, self.limits, hello.version, self.gone)
        conn.peer = self.router.connect(conn, hello.role, key, id)
        if self.keepalive is not None:
            self.keepalive.add(conn)
        if self.cluster is not None and hello.role is Role.HOST:
            self.cluster.host_connected(id)
        return conn

    def _check_enrollment(self, auth: Auth, nonce: bytes, key: bytes) -> None:
        if self.enroll_key is None:
            return  # an open relay ignores a proof: a host may carry one everywhere
        if not auth.enrollment:
            raise _Refused(CloseCode.ENROLLMENT_REQUIRED, close_message(CloseCode.ENROLLMENT_REQUIRED))
        if not verify_enroll_proof(self.enroll_key, auth.enrollment, nonce, key):
            raise _Refused(
                CloseCode.ENROLLMENT_REQUIRED,
                "this relay only admits enrolled hosts, and the enrollment key this host passed "
                "(--enroll-key) is not this relay's; copy the relay's key file again",
            )

    def gone(self, conn: Connection) -> None:
        """``conn`` is closing or closed: the router lets it go (once)."""
        peer = conn.peer
        self.router.disconnect(peer)
        cluster = self.cluster
        if cluster is not None:
            if peer.role is Role.DEVICE:
                cluster.forget(conn)
            elif peer.id not in self.router.hosts:
                cluster.host_gone(peer.id)
        self.act()

    def act(self) -> None:
        """Carry out what the router decided, in order. Not re-entered: what an action makes the
        router decide (a receiver that overflows and fails, say) joins the same loop."""
        if self._acting:
            return
        self._acting = True
        router = self.router
        try:
            while router.outbox:
                for action in router.take():
                    if isinstance(action, Send):
                        action.peer.link.enqueue(action.frame, action.channel)
                    elif isinstance(action, Fail):
                        action.peer.link.fail(action.code, action.message)
                    elif isinstance(action, ToMailbox):
                        conn = action.peer.link
                        if isinstance(conn, Connection):
                            self._on_mailbox(conn, action.frame)
                    elif isinstance(action, AllowlistPublished):
                        host = action.host.link
                        if self.mailbox is not None and isinstance(host, Connection):
                            self._store_allowlist(host, action.keys)
                        if self.cluster is not None:
                            self.cluster.allowlist_published(action.host.id, action.keys)
                    elif self.cluster is None:
                        continue
                    elif isinstance(action, OpenElsewhere):
                        self.cluster.open_elsewhere(action.device, action.frame)
                    elif isinstance(action, ToNode):
                        self.cluster.to_node(action.device, action.node, action.frame)
                    elif isinstance(action, LeftNodes):
                        self.cluster.left_nodes(action.device, action.nodes)
                    elif isinstance(action, WatchElsewhere):
                        self.cluster.watch(action.device, action.host_ids)
                    elif isinstance(action, Reconsider):
                        self.cluster.reconsider(action.host_id)
        finally:
            self._acting = False

    async def _sweep_idle(self, idle: float) -> None:
        """Close device connections that hold no channel, watch no host and have sent nothing
        for ``idle`` seconds: an authenticated slow-loris. The last frame's time is the frame
        bucket's, so the read loop pays nothing for this."""
        every = min(30.0, idle / 4)
        message = close_message(CloseCode.IDLE_TIMEOUT)
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            for peer in list(self.router.peers):
                conn = peer.link
                if (
                    isinstance(conn, Connection)
                    and peer.role is Role.DEVICE
                    and not peer.channels
                    and not peer.watching
                    and not conn.closing
                    and now - conn.frames.last >= idle
                ):
                    conn.fail(CloseCode.IDLE_TIMEOUT, message)

    async def _sweep_mailbox(self, mailbox: Store) -> None:
        """Drop what is past its age in the mailbox, hourly."""
        while True:
            await asyncio.sleep(3600)
            try:
                await mailbox.sweep()
            except Exception:
                log.exception("sweeping the mailbox failed")

    # --- reading ---

    async def _read_loop(self, conn: Connection) -> None:
        recv = conn.ws.recv
        debit = conn.frames.debit
        peer = conn.peer
        router = self.router
        forward = router.forward
        limit = self.limits.channel_queue_bytes
        while True:
            try:
                message = await recv()
            except ConnectionClosedOK:
                return
            if conn.closing:
                # Keep reading (and discarding) until the socket closes: a peer that has filled
                # our receive buffer could otherwise never deliver its close frame.
                continue
            if isinstance(message, str):
                conn.fail(CloseCode.PROTOCOL_ERROR, "text messages are not part of the relay protocol")
                continue
            delay = debit()
            if delay > 0:
                # Backpressure: while this connection is over its rate, stop reading its socket.
                await asyncio.sleep(delay)
            try:
                if message and message[0] == _DATA:
                    # the hot path: no await unless the receiver's channel queue is full
                    target = forward(peer, message)
                    if target is None:
                        if peer.remote and self.cluster is not None:
                            self.cluster.from_device(conn, message)
                    else:
                        receiver, frame, channel = target
                        queued = receiver.link.channel_bytes.get(channel, 0)
                        if queued and queued + len(frame) > limit:
                            await self._forward_when_drained(peer, message)
                        else:
                            receiver.link.enqueue(frame, channel)
                else:
                    router.receive(peer, decode_frame(message))
                    self.act()
            except FrameError as err:
                conn.fail(CloseCode.PROTOCOL_ERROR, f"malformed frame: {err.message}")

    async def _forward_when_drained(self, peer: Peer[Link], message: bytes) -> None:
        """A DATA frame whose channel queue is full: wait up to ``slow_receiver_grace`` for it to
        drain, else close the channel with TOO_SLOW."""
        route = peer.channels.get(data_channel(message))
        target = self.router.forward(peer, message)
        if route is None or target is None:
            return
        receiver, frame, channel = target
        if not await self._wait_for_drain(receiver.link, channel, len(frame), route):
            if not route.closed:
                log.info("channel %s → %s closed: receiver too slow", peer.label, receiver.label)
                self.router.close_route(route, CloseCode.TOO_SLOW, close_message(CloseCode.TOO_SLOW))
                self.act()
            return
        receiver.link.enqueue(frame, channel)

    async def _wait_for_drain(self, receiver: Link, channel: int, size: int, route: Route[Link]) -> bool:
        grace = self.limits.slow_receiver_grace
        if grace <= 0:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        limit = self.limits.channel_queue_bytes
        while not route.closed and not receiver.closing:
            queued = receiver.channel_bytes.get(channel, 0)
            if not queued or queued + size <= limit:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await receiver.wait_progress(remaining)
        return False

    # --- the mailbox ---

    def _on_mailbox(self, conn: Connection, frame: HostRequest | DeviceRequest) -> None:
        if self.mailbox is None:
            conn.enqueue(MailboxError(frame.req, CloseCode.MAILBOX_OFF, close_message(CloseCode.MAILBOX_OFF)).encode())
            return
        lane = conn.lane = conn.lane or Lane()
        refused = lane.admit(frame)
        if refused is not None:
            conn.enqueue(refused.encode())
            return
        self._in_lane(conn, lane, self._answer_mailbox(conn, lane, self.mailbox, frame))

    async def _answer_mailbox(self, conn: Connection, lane: Lane, mailbox: Store,
                              frame: HostRequest | DeviceRequest) -> None:
        try:
            if isinstance(frame, MailboxDeposit | MailboxTake | MailboxAck):
                replies = await answer_host(mailbox, lane, conn.id, frame)
            else:
                replies, item = await answer_device(mailbox, conn.peer.key, frame)
                if item is not None:  # the host may be back: it need not ask
                    pushed = as_frame(0, item).encode()
                    if not self.push_item(frame.host_id, pushed) and self.cluster is not None:
                        self.cluster.mailbox_item(frame.host_id, pushed)
        except MailboxRefused as refused:
            replies = [MailboxError(frame.req, refused.code, refused.message)]
        except Exception:
            log.exception("mailbox request of %s failed", conn.label)
            replies = [MailboxError(frame.req, CloseCode.MAILBOX_OFF,
                                    "the relay's mailbox failed on this request; try again later")]
        finally:
            lane.pending -= 1
        for reply in replies:
            conn.enqueue(reply.encode())

    def push_item(self, host_id: str, frame: bytes) -> bool:
        """Send a queued item (MAILBOX_ITEM ``frame``) to its host if it is connected here and
        has taken its items; whether the host is connected here."""
        peer = self.router.hosts.get(host_id)
        host = peer.link if peer is not None else None
        if not isinstance(host, Connection):
            return False
        if host.lane is not None and host.lane.taking:
            host.enqueue(frame)
        return True

    def _store_allowlist(self, host: Connection, keys: frozenset[bytes]) -> None:
        """Keep the host's allowlist for while it is away (in its lane: before its next request).
        Lists published in a burst are stored once: the latest."""
        assert self.mailbox is not None
        lane = host.lane = host.lane or Lane()
        storing = lane.allowlist is not None
        lane.allowlist = lane.latest = keys
        if not storing:
            self._in_lane(host, lane, self._publish(host, lane, self.mailbox))

    async def _publish(self, host: Connection, lane: Lane, mailbox: Store) -> None:
        keys, lane.allowlist = lane.allowlist, None
        if keys is None:
            return
        try:
            await mailbox.publish(host.peer.id, keys)
        except MailboxRefused:
            # The store failed (a cluster's Redis; it said why). Stored again while the host is
            # here, unless a newer list comes first: a device it dropped must lose the mailbox.
            asyncio.get_running_loop().call_later(PUBLISH_RETRY_SECONDS, self._publish_again, host, keys)

    def _publish_again(self, host: Connection, keys: frozenset[bytes]) -> None:
        lane = host.lane
        if not host.closing and lane is not None and lane.latest is keys and self.mailbox is not None:
            self._store_allowlist(host, keys)

    def _in_lane(self, conn: Connection, lane: Lane, work: Coroutine[Any, Any, None]) -> None:
        async def run() -> None:
            async with lane.lock:
                try:
                    await work
                except Exception:
                    log.exception("mailbox request of %s failed", conn.label)

        task = asyncio.get_running_loop().create_task(run())
        self._mailbox_tasks.add(task)
        task.add_done_callback(self._mailbox_tasks.discard)

def _expect(message: str | bytes, kind: type[_T], refusal: str) -> _T:
    if isinstance(message, str):
        raise _Refused(CloseCode.PROTOCOL_ERROR, "text messages are not part of the relay protocol")
    try:
        frame = decode_frame(message)
    except FrameError as err:
        raise _Refused(CloseCode.PROTOCOL_ERROR, f"malformed frame: {err.message}") from None
    if not isinstance(frame, kind):
        raise _Refused(CloseCode.PROTOCOL_ERROR, refusal)
    return frame


async def _refuse(ws: RelaySocket, code: CloseCode, message: str) -> None:
    drain = asyncio.get_running_loop().create_task(_drain(ws))
    try:
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(1.0):
                await ws.send(Error(code, message).encode())
        await ws.close(1008, code.name.lower())
    finally:
        drain.cancel()


async def _drain(ws: RelaySocket) -> None:
    """Discard what a refused client still sends, so that its close frame gets through."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await ws.recv()


async def run_relay(
    listen: str,
    public_url: str | None = None,
    *,
    limits: RelayLimits | None = None,
    static_dir: Path | None = None,
    ready: asyncio.Future[int] | None = None,
    mailbox_path: Path | None = None,
) -> None:
    """Run a relay until cancelled (``tether relay --listen HOST:PORT``); with a mailbox in
    ``mailbox_path`` when given."""
    host, port = parse_listen(listen)
    if not logging.getLogger().handlers and not log.handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    if static_dir is None:
        static_dir = default_static_dir()
    mailbox = await Mailbox.open(mailbox_path) if mailbox_path is not None else None
    server = RelayServer(limits=limits, public_url=public_url, static_dir=static_dir, mailbox=mailbox)
    try:
        bound = await server.start(host, port)
    except OSError as err:
        raise UsageError(
            f"cannot listen on {listen}: {err.strerror or err}",
            hint="pick another port with --listen HOST:PORT",
        ) from None
    shown = f"[{host}]" if ":" in host else host
    log.info("relay listening on ws://%s:%d%s", shown, bound, WS_PATH)
    if public_url:
        log.info("public URL: %s", public_url)
    if ready is not None and not ready.done():
        ready.set_result(bound)
    try:
        await server.serve_forever()
    finally:
        await server.close()
        if mailbox is not None:
            await mailbox.close()
