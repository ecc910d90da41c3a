"""The relay: a WebSocket server that hosts and devices dial out to (ARCHITECTURE §1, §4.2).

It authenticates every connection (HELLO → CHALLENGE → AUTH), routes channels between a device
and a host, enforces each host's allowlist and pairing offers, bounds every queue, and keeps
presence. Channel payloads are end-to-end Noise ciphertext: the relay forwards them, never
parses or logs them.

Shape of one connection::

    handler task:  admit (awaiting HELLO → challenged → authenticated) → read loop → unregister
    writer task:   only while frames are queued: writes everything queued in one transport
                   write per wake-up, awaits the drain, exits when the queue is empty

Senders never write to another connection's socket: they append to the receiver's queue, so a
slow receiver cannot block a sender's read loop or its other channels. Bytes queued per
(receiver, channel) are counted until the socket has taken them; past ``channel_queue_bytes``
that channel is closed on both sides with TOO_SLOW, past ``connection_queue_bytes`` the
receiver's whole connection is closed.

Before any of that, every TCP connection counts against its source address from accept to close
(``limits.AddressTable``: connections at once and new connections per second, refused with HTTP
429 before the upgrade), must finish its upgrade within ``handshake_timeout``, and a browser's
upgrade must come from the relay's own origin (``origin.py``, HTTP 403). After admission a
device identity key may hold ``max_connections_per_device`` connections, and a device connection
that holds no channel, watches no host and sends nothing is closed after ``idle_timeout``. With
an enrollment key (``enrollment.py``) only hosts that prove they hold it are admitted.

No party may use up what the others share: the relay holds at most ``max_connections`` sockets
(derived from the open-files limit; over it HTTP 503 at accept), a device key at most
``max_channels_per_device`` channels over all its connections, a pairing offer at most
``max_channels_per_offer``; an OPEN the relay will not route gets the answer an offline host gets,
whatever the reason, so strangers learn nothing of a host's presence; a request with a body is
answered 400 and not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import secrets
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable, Coroutine
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.http11 import Request, Response
from websockets.protocol import State

from tether.crypto.keys import derive_id, verify_signature
from tether.errors import ConfigError, UsageError
from tether.lograte import LogLimiter
from tether.protocol.frames import (
    OLDEST_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    Allowlist,
    Auth,
    Challenge,
    Close,
    CloseCode,
    Error,
    FrameError,
    FrameType,
    Hello,
    Incoming,
    MailboxAck,
    MailboxDeposit,
    MailboxError,
    MailboxGet,
    MailboxQueue,
    MailboxTake,
    Offers,
    Open,
    Opened,
    Presence,
    Role,
    Watch,
    Welcome,
    auth_message,
    close_message,
    data_channel,
    decode_frame,
    rechannel_data,
)
from tether.relay.enrollment import verify_enroll_proof
from tether.relay.limits import (
    AddressTable,
    RelayLimits,
    SocketCount,
    TokenBucket,
    address_key,
    connection_cap,
    is_loopback,
    raise_open_files_limit,
)
from tether.relay.mailbox import (
    DeviceRequest,
    HostRequest,
    Lane,
    Mailbox,
    MailboxRefused,
    answer_device,
    answer_host,
    as_frame,
)
from tether.relay.origin import OriginPolicy
from tether.relay.static import default_static_dir, static_response

__all__ = ["RelayLimits", "RelayServer", "default_static_dir", "parse_listen", "run_relay"]

_T = TypeVar("_T")
_K = TypeVar("_K")
_LoopHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]

log = logging.getLogger("tether.relay")

WS_PATH = "/ws"
# Host-side channel ids freed recently are not handed out again, so a frame the host sent on a
# channel the relay just closed can never land on a newer channel.
_RECENTLY_CLOSED = 4096
_DATA = int(FrameType.DATA)
# The one answer to an OPEN the relay will not route, whatever the reason, so that a device the
# host does not know cannot tell whether it is online (issue [6] item 12).
_UNREACHABLE = (
    "this device is not authorised on that host (unknown or revoked), or the host is offline: pair "
    "again with `tether pair` on the host, or start it with `tether host` (or `tether up`)"
)
_UNREACHABLE_OFFER = (
    "this pairing link is no longer valid (already used or expired), or the host is offline: run "
    "`tether pair` on the host for a new link, or start the host"
)
_HEAD_7 = struct.Struct("!BB")
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")


def _plain_response(status: int, reason: str, body: str, *extra: tuple[str, str]) -> bytes:
    """A whole HTTP response that ends the connection, for answers written to the transport."""
    data = body.encode()
    headers = Headers(
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(data))),
            ("Connection", "close"),
            ("Server", "tether-relay"),
            *extra,
        ]
    )
    return Response(status, reason, headers, data).serialize()


_BAD_REQUEST = _plain_response(
    400,
    "Bad Request",
    "bad request: the relay answers GET requests without a body only (a page, or a WebSocket upgrade at /ws)\n",
)


class _Socket(ServerConnection):
    """websockets' server connection, counted against its source address and against the
    relay's socket cap from TCP accept to close, so that connections which never finish their
    HTTP request count too.

    Each RelayServer makes a subclass that sets the class variables. Only the attributes that
    differ from the class defaults are stored on an instance.
    """

    addresses: ClassVar[AddressTable]
    sockets: ClassVar[SocketCount]
    limits: ClassVar[RelayLimits]
    quiet_log: ClassVar[LogLimiter]
    address: str | None = None
    refusal: str | None = None
    # Behind a trusted reverse proxy: counted once X-Forwarded-For shows who the client is.
    deferred: bool = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        host = _peer_host(transport.get_extra_info("peername"))
        if not self.sockets.add():
            # Over the relay's cap: answer at once rather than when (if ever) the request comes,
            # so this descriptor is free again within a few loop passes, before the process runs
            # out of them.
            cap = self.sockets.cap
            self.quiet_log.log(logging.WARNING, "503", "refused %s: %d connections at once, the relay's cap", host, cap)
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(
                _plain_response(
                    503,
                    "Service Unavailable",
                    f"the relay is at its limit of {cap} connections at once; retry in a few seconds\n",
                    ("Retry-After", "5"),
                )
            )
            transport.close()
            return
        if self.limits.trust_forwarded_for and is_loopback(host):
            self.deferred = True
            return
        self.count(address_key(host, self.limits))

    def count(self, key: str | None) -> None:
        if key is not None:
            self.address = key
            refusal = self.addresses.open(key)
            if refusal is not None:
                self.refusal = refusal

    def send_data(self) -> None:
        if self.request is None and self.protocol.handshake_exc is not None:
            self._answer_bad_request()
            return
        super().send_data()

    def _answer_bad_request(self) -> None:
        """websockets read no valid request: it carried a body (Content-Length, Transfer-Encoding),
        or bad syntax, or an over-long line. websockets would half-close, then read and discard
        whatever the client sends until it hangs up or handshake_timeout passes (29 GB in 10 s);
        answer and close at once instead, reading nothing more."""
        # websockets' own 414/431 answer when it made one; never its bare EOF
        pending = [data for data in self.protocol.data_to_send() if data]
        if self.transport.is_closing():
            return
        self.transport.writelines(pending or [_BAD_REQUEST])
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.protocol.parser_exc is not None and self.protocol.state is not State.CONNECTING:
            # The peer broke the framing (a message over max_frame_bytes, say). websockets would
            # keep reading and discarding its bytes for close_timeout, so a 100 MiB frame would be
            # read to the end; stop reading now. The close frame already queued still goes out.
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.sockets.remove()
        if self.address is not None:
            self.addresses.close(self.address)
            self.address = None
        super().connection_lost(exc)


def _peer_host(peer: object) -> str:
    if isinstance(peer, tuple) and peer and isinstance(peer[0], str):
        return peer[0]
    return ""


class _Refused(Exception):
    """Admission refused: sent to the client as ERROR(code, message), then the socket closes."""

    def __init__(self, code: CloseCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(eq=False)
class _Route:
    """One channel: a device's channel id and the host-side channel id it maps to."""

    device: _Connection
    device_channel: int
    host: _HostConnection
    host_channel: int
    device_key: bytes
    offer_id: str
    # admitted through a pairing offer, not the allowlist (counted per offer)
    via_offer: bool = False
    closed: bool = False

    def other(self, conn: _Connection) -> tuple[_Connection, int]:
        if conn is self.device:
            return self.host, self.host_channel
        return self.device, self.device_channel


_NO_WATCH: frozenset[str] = frozenset()


class _Connection:
    """One authenticated connection (a device; hosts are :class:`_HostConnection`).

    Idle connections are the common case (ARCHITECTURE §9), so a connection holds only what every
    connection needs: no writer task while nothing is queued, no Event, ``__slots__``.
    """

    __slots__ = (
        "channel_bytes",
        "channels",
        "closer",
        "closing",
        "frames",
        "id",
        "key",
        "lane",
        "limits",
        "opens",
        "progress",
        "queue",
        "queued_bytes",
        "role",
        "server",
        "unregistered",
        "watching",
        "writer",
        "ws",
    )

    def __init__(self, ws: ServerConnection, server: RelayServer, role: Role, key: bytes, id: str) -> None:
        self.ws = ws
        self.server = server
        self.limits = limits = server.limits
        self.role = role
        self.key = key
        self.id = id
        self.channels: dict[int, _Route] = {}
        # outgoing queue: (frame, receiver channel or -1 for control frames); the writer task
        # takes the whole list at once
        self.queue: list[tuple[bytes, int]] = []
        # bytes queued and not yet written and drained, in all and per receiver channel
        self.queued_bytes = 0
        self.channel_bytes: dict[int, int] = {}
        # resolved whenever the writer has drained a batch (senders waiting out
        # slow_receiver_grace); created only while someone waits
        self.progress: asyncio.Future[None] | None = None
        # runs only while there is something to write
        self.writer: asyncio.Task[None] | None = None
        self.closer: asyncio.Task[None] | None = None
        self.closing = False
        self.unregistered = False
        self.frames = TokenBucket(limits.frames_per_second, limits.frames_burst)
        self.opens: TokenBucket | None = None  # device only, made at its first OPEN
        self.lane: Lane | None = None  # its mailbox requests, made at its first
        self.watching: AbstractSet[str] = _NO_WATCH  # device only

    @property
    def label(self) -> str:
        return f"{self.role.name.lower()} {self.id}"

    def take_open(self) -> bool:
        """One token of the OPEN rate limit."""
        if self.opens is None:
            per_minute = self.limits.opens_per_minute
            self.opens = TokenBucket(per_minute / 60.0, per_minute)
        return self.opens.try_take()

    # --- outgoing queue ---

    def enqueue(self, frame: bytes, channel: int = -1) -> bool:
        """Queue ``frame`` for this connection's writer; False if the connection is going away."""
        if self.closing:
            return False
        size = len(frame)
        queued = self.queued_bytes
        if queued and queued + size > self.limits.connection_queue_bytes:
            self.fail(CloseCode.TOO_SLOW, "this connection fell too far behind and was closed")
            return False
        self.queue.append((frame, channel))
        self.queued_bytes = queued + size
        if channel >= 0:
            counts = self.channel_bytes
            counts[channel] = counts.get(channel, 0) + size
        if self.writer is None:
            self.writer = self.ws.loop.create_task(self._write())
        return True

    async def _write(self) -> None:
        """Write everything queued, a batch per wake-up, until the queue is empty.

        A batch is serialized by websockets' own protocol object and handed to the transport
        with one ``writelines`` (one syscall), then the writer awaits the transport's drain: the
        bytes of a batch stay counted in ``queued_bytes``/``channel_bytes`` until the socket has
        taken them, so those bounds cover the transport's buffer too. This is what
        ``Connection.send`` does per message (state check, serialize, write, drain) without its
        per-message context manager and syscall. A connection that is no longer OPEN, or that
        is in the middle of a fragmented send (the relay never sends one), goes through
        ``ws.send``, which raises ConnectionClosed as it should.
        """
        ws = self.ws
        protocol = ws.protocol
        try:
            while self.queue and not self.closing:
                batch = self.queue
                self.queue = []
                try:
                    if (
                        protocol.state is State.OPEN
                        and ws.send_in_progress is None
                        and not protocol.expect_continuation_frame
                    ):
                        if not _write_batch(ws, batch):
                            return
                        await ws.drain()
                    else:
                        for frame, _ in batch:
                            await ws.send(frame)
                finally:
                    if not self.closing:
                        self._written(batch)
        except ConnectionClosed:
            pass
        except Exception as exc:  # the socket failed under us: the read loop ends the connection
            log.debug("write to %s failed: %r", self.label, exc)
        finally:
            self.writer = None

    def _written(self, batch: list[tuple[bytes, int]]) -> None:
        total = 0
        counts = self.channel_bytes
        for frame, channel in batch:
            size = len(frame)
            total += size
            if channel >= 0:
                left = counts.get(channel, 0) - size
                if left > 0:
                    counts[channel] = left
                else:
                    counts.pop(channel, None)
        self.queued_bytes -= total
        self._progressed()

    def _progressed(self) -> None:
        waiter = self.progress
        if waiter is not None:
            self.progress = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait_progress(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until the writer drains a batch or the connection fails."""
        waiter = self.progress
        if waiter is None:
            waiter = self.progress = self.ws.loop.create_future()
        await asyncio.wait((waiter,), timeout=timeout)

    def fail(self, code: CloseCode, message: str) -> None:
        """Close this connection with ERROR(code, message); queued frames are abandoned."""
        if self.closing:
            return
        self.closing = True
        log.info("closing %s: %s", self.label, message)
        self.queue = []
        self.queued_bytes = 0
        self.channel_bytes.clear()
        if self.writer is not None:
            self.writer.cancel()
        self._progressed()
        self.closer = self.ws.loop.create_task(self._send_error_and_close(code, message))
        self.server._unregister(self)

    async def _send_error_and_close(self, code: CloseCode, message: str) -> None:
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(1.0):
                await self.ws.send(Error(code, message).encode())
        await self.ws.close(1008 if code == CloseCode.PROTOCOL_ERROR else 1000, code.name.lower())


class _HostConnection(_Connection):
    """A host's connection: also its allowlist, pairing offers and channel id allocation."""

    __slots__ = (
        "allowlist",
        "next_channel",
        "offer_channels",
        "offers",
        "pending_allowlist",
        "recently_closed",
        "recently_closed_set",
    )

    def __init__(self, ws: ServerConnection, server: RelayServer, role: Role, key: bytes, id: str) -> None:
        super().__init__(ws, server, role, key, id)
        self.allowlist: set[bytes] = set()
        self.pending_allowlist: set[bytes] | None = None
        self.offers: set[str] = set()
        # channels open per offer id, by devices not on the allowlist (max_channels_per_offer)
        self.offer_channels: dict[str, int] = {}
        self.next_channel = 1
        self.recently_closed: deque[int] = deque()
        self.recently_closed_set: set[int] = set()

    # --- channel ids (host side) ---

    def allocate_channel(self, preferred: int) -> int:
        # Reusing the device's own id lets the relay forward DATA frames without rewriting them.
        if self._free(preferred):
            return preferred
        while not self._free(self.next_channel):
            self.next_channel = (self.next_channel + 1) & 0xFFFF_FFFF
        chosen = self.next_channel
        self.next_channel = (self.next_channel + 1) & 0xFFFF_FFFF
        return chosen

    def _free(self, channel: int) -> bool:
        return channel not in self.channels and channel not in self.recently_closed_set

    def forget_channel(self, channel: int) -> None:
        self.recently_closed.append(channel)
        self.recently_closed_set.add(channel)
        if len(self.recently_closed) > _RECENTLY_CLOSED:
            self.recently_closed_set.discard(self.recently_closed.popleft())


def binary_frame_header(size: int) -> bytes:
    """The RFC 6455 header of an unmasked, unfragmented binary frame of ``size`` bytes (what
    websockets' ``Frame(BINARY, data).serialize(mask=False)`` puts before the data)."""
    if size < 126:
        return _HEAD_7.pack(0x82, size)
    if size < 0x10000:
        return _HEAD_16.pack(0x82, 126, size)
    return _HEAD_64.pack(0x82, 127, size)


def _write_batch(ws: ServerConnection, batch: list[tuple[bytes, int]]) -> bool:
    """Write ``batch`` as binary messages with one transport write; False if that failed (then
    the connection is aborted, as websockets' own send path does). The connection is OPEN and
    not in a fragmented send.

    Without extensions (the relay never negotiates compression) and debug logging, a binary
    message is the fixed header plus the data as is, so the frames are framed here and joined
    with one copy; otherwise websockets' protocol object serializes them. Either way whatever
    the protocol object had pending goes first (websockets flushes it at once, so normally
    nothing).
    """
    protocol = ws.protocol
    try:
        if protocol.extensions or protocol.debug:
            send_binary = protocol.send_binary
            for frame, _ in batch:
                send_binary(frame)
            parts = protocol.data_to_send()
        else:
            parts = protocol.data_to_send()
            append = parts.append
            header = binary_frame_header
            for frame, _ in batch:
                append(header(len(frame)))
                append(frame)
        ws.transport.writelines(parts)
    except Exception as exc:
        ws.set_connection_exc(exc)
        ws.transport.abort()
        return False
    return True


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server TLS context from PEM files, or a ConfigError saying which file is wrong."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for what, path in (("certificate", cert), ("key", key)):
        if not path.is_file():
            raise ConfigError(f"TLS {what} file {path} does not exist", hint="pass --tls-cert and --tls-key PEM files")
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            f"cannot use {cert} and {key} for TLS ({exc.__class__.__name__}: {getattr(exc, 'reason', None) or exc})",
            hint="both must be PEM files, and the key must match the certificate",
        ) from None
    return context


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
        mailbox: Mailbox | None = None,
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
        self._server: Server | None = None
        self._hosts: dict[str, _HostConnection] = {}
        self._watchers: dict[str, set[_Connection]] = {}
        self._connections: set[_Connection] = set()
        # authenticated connections per device identity key (max_connections_per_device)
        self._device_connections: dict[bytes, int] = {}
        # channels open per device identity key, over all its connections (max_channels_per_device)
        self._device_channels: dict[bytes, int] = {}
        # asyncio's exception handler before start() put _loop_exception in its place
        self._previous_handler: _LoopHandler | None = None
        self._idle_sweeper: asyncio.Task[None] | None = None
        self._mailbox_sweeper: asyncio.Task[None] | None = None
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
        # websockets says "connection open/closed" for every socket: a flood's worth of lines.
        ws_log = log.getChild("websockets")
        if ws_log.level == logging.NOTSET and not log.isEnabledFor(logging.DEBUG):
            ws_log.setLevel(logging.WARNING)

        # a TLS handshake is part of the upgrade: the same deadline (asyncio's default is 60 s)
        tls_options: dict[str, Any] = {"ssl_handshake_timeout": lim.handshake_timeout} if self.tls else {}

        class Socket(_Socket):
            pass

        Socket.addresses = self.addresses
        Socket.sockets = self.sockets
        Socket.limits = lim
        Socket.quiet_log = self.quiet_log
        self._server = await serve(
            self._handle,
            host,
            port,
            create_connection=Socket,
            process_request=self._process_request,
            open_timeout=lim.handshake_timeout,
            compression=None,
            max_size=lim.max_frame_bytes,
            ping_interval=lim.ping_interval,
            ping_timeout=lim.ping_timeout,
            close_timeout=lim.close_timeout,
            server_header="tether-relay",
            ssl=self.tls,
            logger=ws_log,
            # asyncio accepts up to this many sockets per loop pass (connection_cap)
            backlog=batch,
            **tls_options,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        if lim.idle_timeout:
            self._idle_sweeper = asyncio.get_running_loop().create_task(self._sweep_idle(lim.idle_timeout))
        if self.mailbox is not None:
            self._mailbox_sweeper = asyncio.get_running_loop().create_task(self._sweep_mailbox(self.mailbox))
        return self.port

    async def close(self) -> None:
        """Stop listening and close every connection (clients see the relay going away)."""
        for task in (self._idle_sweeper, self._mailbox_sweeper, *self._mailbox_tasks):
            if task is not None:
                task.cancel()
        self._idle_sweeper = self._mailbox_sweeper = None
        loop = asyncio.get_running_loop()
        if loop.get_exception_handler() == self._loop_exception:
            loop.set_exception_handler(self._previous_handler)
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None

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
        if self._server is None:
            raise RuntimeError("call start() first")
        await self._server.serve_forever()

    async def __aenter__(self) -> RelayServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def hosts_online(self) -> list[str]:
        return sorted(self._hosts)

    # --- HTTP on the same port ---

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if isinstance(connection, _Socket):
            if connection.deferred:
                connection.deferred = False
                connection.count(self._forwarded_key(connection, request))
            if connection.refusal is not None:
                self.quiet_log.log(logging.INFO, "429", "refused %s: %s", _peer(connection), connection.refusal)
                refused = connection.respond(429, connection.refusal + "\n")
                refused.headers["Retry-After"] = "5"
                return refused
        path = urlsplit(request.path).path
        # A request with a body never gets here (_Socket answers it 400); methods other than GET
        # have nothing to do on a relay, but HEAD gets what GET would get (never an upgrade).
        allowed = ("GET",) if path == WS_PATH else ("GET", "HEAD")
        if request.method != "GET":
            if request.method in allowed:
                response = await self._page(connection, path)
            else:
                response = connection.respond(
                    405, f"method not allowed: the relay answers {' and '.join(allowed)} here\n"
                )
                response.headers["Allow"] = ", ".join(allowed)
            return replace(response, body=b"") if request.method == "HEAD" else response
        if path == WS_PATH:
            origins = request.headers.get_all("Origin")
            hosts = request.headers.get_all("Host")
            if not self.origins.admits(origins, hosts[0] if len(hosts) == 1 else None):
                shown = origins[0][:100] if origins else ""
                log.info("refused %s: cross-origin upgrade from %r", _peer(connection), shown)
                return connection.respond(
                    403,
                    f"cross-origin WebSocket refused: a page at {shown!r} is not this relay's; "
                    "open the web client from the relay's own address (its --public-url)\n",
                )
            return None
        return await self._page(connection, path)

    async def _page(self, connection: ServerConnection, path: str) -> Response:
        if path == "/healthz":
            return connection.respond(200, "ok\n")
        if self.static_dir is not None:
            response = await static_response(self.static_dir, path)
            if response is not None:
                return response
        return connection.respond(404, "not found\n")

    def _forwarded_key(self, connection: ServerConnection, request: Request) -> str | None:
        """The address to count a connection from a trusted reverse proxy against: the last
        X-Forwarded-For entry (the client the proxy itself saw), else the proxy."""
        forwarded = request.headers.get_all("X-Forwarded-For")
        if forwarded:
            key = address_key(forwarded[-1].rsplit(",", 1)[-1].strip(), self.limits)
            if key is not None:
                return key
        addr = connection.remote_address
        return address_key(_peer_host(addr), self.limits)

    # --- one connection ---

    async def _handle(self, ws: ServerConnection) -> None:
        try:
            async with asyncio.timeout(self.limits.auth_timeout):
                conn = await self._admit(ws)
        except _Refused as refused:
            log.info("refused %s: %s", _peer(ws), refused.message)
            await _refuse(ws, refused.code, refused.message)
            return
        except TimeoutError:
            self.quiet_log.log(
                logging.INFO, "auth timeout", "refused %s: no AUTH within %.1f s", _peer(ws), self.limits.auth_timeout
            )
            await _refuse(ws, CloseCode.AUTH_TIMEOUT, close_message(CloseCode.AUTH_TIMEOUT))
            return
        except ConnectionClosed:
            return

        self._register(conn)
        try:
            await self._read_loop(conn)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("internal error on %s", conn.label)
            conn.fail(CloseCode.PROTOCOL_ERROR, "internal relay error")
        finally:
            self._unregister(conn)
            if conn.writer is not None:
                conn.writer.cancel()
            if conn.closer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(conn.closer), self.limits.close_timeout + 1)
            log.info("%s disconnected", conn.label)

    async def _admit(self, ws: ServerConnection) -> _Connection:
        hello = _expect(await ws.recv(), Hello, "the relay expects HELLO as the first frame")
        if not OLDEST_PROTOCOL_VERSION <= hello.version <= PROTOCOL_VERSION:
            raise _Refused(
                CloseCode.UNSUPPORTED_VERSION,
                f"this relay speaks protocol version {PROTOCOL_VERSION}, the client {hello.version}; "
                "upgrade tether on the older side",
            )
        nonce = secrets.token_bytes(32)
        await ws.send(Challenge(nonce).encode())
        auth = _expect(await ws.recv(), Auth, "the relay expects AUTH after CHALLENGE")
        key = hello.identity_public
        if not verify_signature(key, auth.signature, auth_message(hello.role, nonce)):
            raise _Refused(CloseCode.AUTH_FAILED, close_message(CloseCode.AUTH_FAILED))
        if hello.role is Role.HOST:
            self._check_enrollment(auth, nonce, key)
            conn: _Connection = _HostConnection(ws, self, hello.role, key, derive_id(key))
            await ws.send(Welcome(id=conn.id, max_frame_bytes=self.limits.max_frame_bytes).encode())
            return conn
        # Counted only once the key is proven: nobody can lock a device out by claiming its key.
        counts = self._device_connections
        held = counts.get(key, 0)
        cap = self.limits.max_connections_per_device
        if cap and held >= cap:
            raise _Refused(
                CloseCode.TOO_MANY_CONNECTIONS,
                f"this device already has {held} connections to the relay, its limit; "
                "close some (is a program reconnecting in a loop?)",
            )
        counts[key] = held + 1
        try:
            conn = _Connection(ws, self, hello.role, key, derive_id(key))
            await ws.send(Welcome(id=conn.id, max_frame_bytes=self.limits.max_frame_bytes).encode())
        except BaseException:
            self._release_device(key)
            raise
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

    def _release_device(self, key: bytes) -> None:
        _uncount(self._device_connections, key)

    def _register(self, conn: _Connection) -> None:
        self._connections.add(conn)
        log.info("%s connected from %s", conn.label, _peer(conn.ws))
        if not isinstance(conn, _HostConnection):
            return
        old = self._hosts.get(conn.id)
        self._hosts[conn.id] = conn
        if old is not None:
            # Same identity key, proven again: the new connection inherits the published state so
            # devices see no gap in admission.
            conn.allowlist = old.allowlist
            conn.offers = old.offers
            old.fail(
                CloseCode.REPLACED,
                "another connection for this host id took over; is the host running twice?",
            )
        else:
            self._announce(conn, online=True)

    def _unregister(self, conn: _Connection) -> None:
        if conn.unregistered:
            return
        conn.unregistered = True
        self._connections.discard(conn)
        gone = "the host disconnected" if conn.role is Role.HOST else "the device disconnected"
        for route in list(conn.channels.values()):
            self._close_route(route, CloseCode.PEER_GONE, gone, initiator=conn)
        if isinstance(conn, _HostConnection):
            if self._hosts.get(conn.id) is conn:
                del self._hosts[conn.id]
                self._announce(conn, online=False)
        else:
            self._release_device(conn.key)
            for host_id in conn.watching:
                watchers = self._watchers.get(host_id)
                if watchers is not None:
                    watchers.discard(conn)
                    if not watchers:
                        del self._watchers[host_id]
            conn.watching = _NO_WATCH

    async def _sweep_idle(self, idle: float) -> None:
        """Close device connections that hold no channel, watch no host and have sent nothing
        for ``idle`` seconds: an authenticated slow-loris. The last frame's time is the frame
        bucket's, so the read loop pays nothing for this."""
        every = min(30.0, idle / 4)
        message = close_message(CloseCode.IDLE_TIMEOUT)
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            for conn in list(self._connections):
                if (
                    conn.role is Role.DEVICE
                    and not conn.channels
                    and not conn.watching
                    and not conn.closing
                    and now - conn.frames.last >= idle
                ):
                    conn.fail(CloseCode.IDLE_TIMEOUT, message)

    async def _sweep_mailbox(self, mailbox: Mailbox) -> None:
        """Drop what is past its age in the mailbox, hourly."""
        while True:
            await asyncio.sleep(3600)
            try:
                await mailbox.sweep()
            except Exception:
                log.exception("sweeping the mailbox failed")

    # --- reading ---

    async def _read_loop(self, conn: _Connection) -> None:
        recv = conn.ws.recv
        debit = conn.frames.debit
        forward = self._forward
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
                    if not forward(conn, message):
                        await self._forward_when_drained(conn, message)
                else:
                    self._on_frame(conn, decode_frame(message))
            except FrameError as err:
                conn.fail(CloseCode.PROTOCOL_ERROR, f"malformed frame: {err.message}")

    def _forward(self, conn: _Connection, message: bytes) -> bool:
        """Queue a DATA frame for the other side of its channel (the hot path, no await).

        False when the receiver's queue for the channel is full: then the caller goes through
        :meth:`_forward_when_drained`.
        """
        channel = data_channel(message)
        route = conn.channels.get(channel)
        if route is None:
            return True  # the channel was closed while this frame was in flight
        if conn is route.device:
            peer: _Connection = route.host
            peer_channel = route.host_channel
        else:
            peer, peer_channel = route.device, route.device_channel
        frame = message if peer_channel == channel else rechannel_data(message, peer_channel)
        queued = peer.channel_bytes.get(peer_channel, 0)
        if queued and queued + len(frame) > self.limits.channel_queue_bytes:
            return False
        peer.enqueue(frame, peer_channel)
        return True

    async def _forward_when_drained(self, conn: _Connection, message: bytes) -> None:
        """A DATA frame whose channel queue is full: wait up to ``slow_receiver_grace`` for it to
        drain, else close the channel with TOO_SLOW."""
        channel = data_channel(message)
        route = conn.channels.get(channel)
        if route is None:
            return
        peer, peer_channel = route.other(conn)
        frame = message if peer_channel == channel else rechannel_data(message, peer_channel)
        limit = self.limits.channel_queue_bytes
        queued = peer.channel_bytes.get(peer_channel, 0)
        if queued and queued + len(frame) > limit:
            if not await self._wait_for_drain(peer, peer_channel, len(frame), route):
                if not route.closed:
                    log.info("channel %s → %s closed: receiver too slow", conn.label, peer.label)
                    self._close_route(route, CloseCode.TOO_SLOW, close_message(CloseCode.TOO_SLOW))
                return
        peer.enqueue(frame, peer_channel)

    async def _wait_for_drain(self, peer: _Connection, channel: int, size: int, route: _Route) -> bool:
        grace = self.limits.slow_receiver_grace
        if grace <= 0:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        limit = self.limits.channel_queue_bytes
        while not route.closed and not peer.closing:
            queued = peer.channel_bytes.get(channel, 0)
            if not queued or queued + size <= limit:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await peer.wait_progress(remaining)
        return False

    def _on_frame(self, conn: _Connection, frame: object) -> None:
        host = conn if isinstance(conn, _HostConnection) else None
        match frame:
            case Close(channel=channel, code=code, reason=reason):
                route = conn.channels.get(channel)
                if route is not None:
                    self._close_route(route, code, reason, initiator=conn)
            case Allowlist() if host is not None:
                self._on_allowlist(host, frame)
            case Offers(offer_ids=offer_ids) if host is not None:
                if len(offer_ids) > self.limits.max_offers:
                    conn.fail(
                        CloseCode.PROTOCOL_ERROR,
                        f"at most {self.limits.max_offers} pairing offers can be open at once",
                    )
                    return
                host.offers = set(offer_ids)
            case Open() if host is None:
                self._on_open(conn, frame)
            case Watch(host_ids=host_ids) if host is None:
                self._on_watch(conn, host_ids)
            case MailboxDeposit() | MailboxTake() | MailboxAck() if host is not None:
                self._on_mailbox(conn, frame)
            case MailboxGet() | MailboxQueue() if host is None:
                self._on_mailbox(conn, frame)
            case _:
                name = type(frame).__name__.upper()
                conn.fail(
                    CloseCode.PROTOCOL_ERROR,
                    f"a {conn.role.name.lower()} may not send {name} frames after authentication",
                )

    def _on_allowlist(self, host: _HostConnection, frame: Allowlist) -> None:
        if frame.first:
            host.pending_allowlist = set()
        pending = host.pending_allowlist
        if pending is None:
            host.fail(CloseCode.PROTOCOL_ERROR, "ALLOWLIST continuation without a first chunk")
            return
        pending.update(frame.keys)
        if len(pending) > self.limits.max_allowlist:
            host.fail(
                CloseCode.PROTOCOL_ERROR,
                f"the allowlist has more than {self.limits.max_allowlist} keys, this relay's limit",
            )
            return
        if not frame.last:
            return
        host.pending_allowlist = None
        old = host.allowlist
        host.allowlist = pending
        if self.mailbox is not None:
            self._store_allowlist(host, frozenset(pending))
        revoked = old - pending
        if revoked:
            for route in list(host.channels.values()):
                if route.device_key in revoked:
                    self._close_route(route, CloseCode.REVOKED, close_message(CloseCode.REVOKED))
        # Presence is visible only to allowlisted devices, so it changes with the allowlist.
        for watcher in list(self._watchers.get(host.id, ())):
            was, now = watcher.key in old, watcher.key in pending
            if was != now:
                watcher.enqueue(Presence(host.id, online=now).encode())

    def _on_open(self, device: _Connection, frame: Open) -> None:
        channel = frame.channel
        if channel in device.channels:
            device.fail(CloseCode.PROTOCOL_ERROR, f"channel {channel} is already open on this connection")
            return

        def refuse(code: CloseCode, reason: str | None = None) -> None:
            device.enqueue(Close(channel, code, reason or close_message(code)).encode())

        lim = self.limits
        if not device.take_open():
            refuse(CloseCode.RATE_LIMITED)
            return
        if len(device.channels) >= lim.max_channels_per_connection:
            refuse(CloseCode.TOO_MANY_CHANNELS)
            return
        held = self._device_channels.get(device.key, 0)
        if lim.max_channels_per_device and held >= lim.max_channels_per_device:
            refuse(
                CloseCode.TOO_MANY_CHANNELS,
                f"this device has {held} channels open through the relay, its limit; close some and retry",
            )
            return
        host = self._hosts.get(frame.host_id)
        via_offer = host is not None and device.key not in host.allowlist
        # A device the host does not know learns nothing about it: whether it is connected, not
        # allowed, or the offer is gone, the answer is the one an offline host gets.
        if host is None or host.closing or (via_offer and (not frame.offer_id or frame.offer_id not in host.offers)):
            refuse(CloseCode.HOST_OFFLINE, _UNREACHABLE_OFFER if frame.offer_id else _UNREACHABLE)
            return
        if via_offer and host.offer_channels.get(frame.offer_id, 0) >= lim.max_channels_per_offer:
            refuse(CloseCode.TOO_MANY_CHANNELS, "this pairing link already has channels open; close them and retry")
            return
        if len(host.channels) >= lim.max_channels_per_connection:
            refuse(CloseCode.TOO_MANY_CHANNELS, "the host has too many open channels; retry later")
            return
        host_channel = host.allocate_channel(channel)
        route = _Route(device, channel, host, host_channel, device.key, frame.offer_id, via_offer)
        device.channels[channel] = route
        host.channels[host_channel] = route
        self._device_channels[device.key] = held + 1
        if via_offer:
            host.offer_channels[frame.offer_id] = host.offer_channels.get(frame.offer_id, 0) + 1
        log.debug("channel %s ↔ %s opened", device.label, host.label)
        device.enqueue(Opened(channel).encode())
        host.enqueue(Incoming(host_channel, device.key, frame.offer_id).encode())

    def _on_watch(self, device: _Connection, host_ids: tuple[str, ...]) -> None:
        if len(host_ids) > self.limits.max_watch:
            device.fail(CloseCode.PROTOCOL_ERROR, f"a device can watch at most {self.limits.max_watch} hosts")
            return
        wanted = set(host_ids)
        for host_id in device.watching - wanted:
            watchers = self._watchers.get(host_id)
            if watchers is not None:
                watchers.discard(device)
                if not watchers:
                    del self._watchers[host_id]
        device.watching = wanted
        for host_id in host_ids:
            self._watchers.setdefault(host_id, set()).add(device)
            host = self._hosts.get(host_id)
            online = host is not None and device.key in host.allowlist
            device.enqueue(Presence(host_id, online=online).encode())

    # --- the mailbox ---

    def _on_mailbox(self, conn: _Connection, frame: HostRequest | DeviceRequest) -> None:
        if self.mailbox is None:
            conn.enqueue(MailboxError(frame.req, CloseCode.MAILBOX_OFF, close_message(CloseCode.MAILBOX_OFF)).encode())
            return
        lane = conn.lane = conn.lane or Lane()
        refused = lane.admit(frame)
        if refused is not None:
            conn.enqueue(refused.encode())
            return
        self._in_lane(conn, lane, self._answer_mailbox(conn, lane, self.mailbox, frame))

    async def _answer_mailbox(self, conn: _Connection, lane: Lane, mailbox: Mailbox,
                              frame: HostRequest | DeviceRequest) -> None:
        try:
            if isinstance(frame, MailboxDeposit | MailboxTake | MailboxAck):
                replies = await answer_host(mailbox, lane, conn.id, frame)
            else:
                replies, item = await answer_device(mailbox, conn.key, frame)
                host = self._hosts.get(frame.host_id) if item is not None else None
                if item is not None and host is not None and host.lane is not None and host.lane.taking:
                    host.enqueue(as_frame(0, item).encode())  # the host is back: it need not ask
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

    def _store_allowlist(self, host: _HostConnection, keys: frozenset[bytes]) -> None:
        """Keep the host's allowlist for while it is away (in its lane: before its next request).
        Lists published in a burst are stored once: the latest."""
        assert self.mailbox is not None
        lane = host.lane = host.lane or Lane()
        storing = lane.allowlist is not None
        lane.allowlist = keys
        if not storing:
            self._in_lane(host, lane, self._publish(host.id, lane, self.mailbox))

    async def _publish(self, host_id: str, lane: Lane, mailbox: Mailbox) -> None:
        keys, lane.allowlist = lane.allowlist, None
        if keys is not None:
            await mailbox.publish(host_id, keys)

    def _in_lane(self, conn: _Connection, lane: Lane, work: Coroutine[Any, Any, None]) -> None:
        async def run() -> None:
            async with lane.lock:
                try:
                    await work
                except Exception:
                    log.exception("mailbox request of %s failed", conn.label)

        task = asyncio.get_running_loop().create_task(run())
        self._mailbox_tasks.add(task)
        task.add_done_callback(self._mailbox_tasks.discard)

    # --- channels and presence ---

    def _close_route(self, route: _Route, code: int, reason: str, *, initiator: _Connection | None = None) -> None:
        """End a channel; every side but ``initiator`` gets CLOSE(code, reason) at once."""
        if route.closed:
            return
        route.closed = True
        if route.device.channels.get(route.device_channel) is route:
            del route.device.channels[route.device_channel]
        if route.host.channels.get(route.host_channel) is route:
            del route.host.channels[route.host_channel]
            route.host.forget_channel(route.host_channel)
        _uncount(self._device_channels, route.device_key)
        if route.via_offer:
            _uncount(route.host.offer_channels, route.offer_id)
        for side, channel in ((route.device, route.device_channel), (route.host, route.host_channel)):
            if side is not initiator:
                side.enqueue(Close(channel, code, reason).encode())

    def _announce(self, host: _HostConnection, *, online: bool) -> None:
        for watcher in list(self._watchers.get(host.id, ())):
            if watcher.key in host.allowlist:
                watcher.enqueue(Presence(host.id, online=online).encode())


def _uncount(counts: dict[_K, int], key: _K) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


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


async def _refuse(ws: ServerConnection, code: CloseCode, message: str) -> None:
    drain = asyncio.get_running_loop().create_task(_drain(ws))
    try:
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(1.0):
                await ws.send(Error(code, message).encode())
        await ws.close(1008, code.name.lower())
    finally:
        drain.cancel()


async def _drain(ws: ServerConnection) -> None:
    """Discard what a refused client still sends, so that its close frame gets through."""
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


def _peer(ws: ServerConnection) -> str:
    addr = ws.remote_address
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` → (host, port); UsageError otherwise. No host (``:8765``)
    means loopback: listening on every interface is said out loud (``0.0.0.0:8765``)."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"bad listen address {listen!r}",
                         hint="use HOST:PORT, e.g. 127.0.0.1:8765 (0.0.0.0:8765 for every interface)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "127.0.0.1", int(port_text)


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
