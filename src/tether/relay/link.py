"""The dialing side of the relay: one authenticated connection carrying many channels.

Host daemons use a host link (publish the allowlist and offers, ``accept`` channels); devices,
tokens and the CLI use a device link (``open`` channels to a host, ``watch`` presence). Payloads
are opaque here too: the Noise layer above encrypts them.

Reconnection is the caller's job (with jittered backoff, then a new link). What the link does
promise: a dead connection is noticed within the keepalive interval, and every pending ``recv``,
``accept``, ``open`` and ``wait_presence_change`` is woken with an error when it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import struct
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from tether.crypto.keys import Identity
from tether.errors import UsageError
from tether.protocol.frames import (
    DATA_HEADER_LEN,
    MAX_ACK,
    MAX_ALLOWLIST_CHUNK,
    MAX_CHANNEL,
    MAX_OFFERS,
    Allowlist,
    Auth,
    Challenge,
    Close,
    CloseCode,
    Data,
    Error,
    Frame,
    FrameError,
    FrameType,
    Hello,
    Incoming,
    MailboxAck,
    MailboxDeposit,
    MailboxError,
    MailboxGet,
    MailboxItem,
    MailboxOk,
    MailboxQueue,
    MailboxSnapshot,
    MailboxTake,
    Offers,
    Open,
    Opened,
    Presence,
    Redirect,
    Role,
    Watch,
    Welcome,
    auth_message,
    close_message,
    decode_frame,
    encode_data,
    is_valid_id,
)
from tether.protocol.transport import ChannelClosed
from tether.relay.enrollment import enroll_proof
from tether.relay.errors import MailboxRefusal, RelayError

__all__ = ["Channel", "ChannelClosed", "RelayError", "RelayLink", "http_url", "websocket_url"]

log = logging.getLogger("tether.relay.link")

_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}
_REACH_HINT = "check the relay URL and that the relay is running (`tether relay` or `tether up`)"
#: What one channel may hold unread before it is closed with TOO_SLOW (the link never blocks).
DEFAULT_INBOX_FRAMES = 4096
DEFAULT_INBOX_BYTES = 4 << 20
#: Incoming channels a host has not accepted yet.
MAX_ACCEPT_BACKLOG = 1024
# The read loop's test for DATA and its channel id, as plain ints (no enum lookup per frame).
_DATA = int(FrameType.DATA)
_DATA_CHANNEL = struct.Struct(">xI")


def _tls_kwargs(tls: ssl.SSLContext | None) -> dict[str, Any]:
    # websockets takes ``ssl`` only for wss:// URLs; without a context it uses the system's.
    return {} if tls is None else {"ssl": tls}


def websocket_url(relay_url: str) -> str:
    """The relay's WebSocket endpoint for a URL a person typed (ws, wss, http or https)."""
    text = relay_url.strip()
    parts = urlsplit(text)
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise UsageError(
            f"{relay_url!r} is not a relay URL",
            hint="use https://relay.example.com (or ws://127.0.0.1:8765 for a local relay)",
        )
    path = parts.path.rstrip("/")
    if not path.endswith("/ws"):
        path += "/ws"
    # The fragment of a pairing link holds secrets: it never goes on the wire.
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def http_url(relay_url: str) -> str:
    """The relay's web address (for pairing links) from its ws/wss/http/https URL."""
    parts = urlsplit(relay_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    path = path.removesuffix("/ws")
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class Channel:
    """One end-to-end channel through the relay. Payloads are bytes, delivered in order."""

    def __init__(
        self,
        link: RelayLink,
        channel_id: int,
        *,
        peer_identity: bytes | None = None,
        offer_id: str | None = None,
    ) -> None:
        self.id = channel_id
        self.peer_identity = peer_identity
        self.offer_id = offer_id
        self._link = link
        self._header = encode_data(channel_id, b"")  # the 5 bytes every frame this channel sends starts with
        self._inbox: deque[bytes] = deque()
        self._inbox_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._end: tuple[int, str, str | None] | None = None  # close code, reason, hint

    def __repr__(self) -> str:
        return f"Channel(id={self.id}, closed={self.closed})"

    @property
    def closed(self) -> bool:
        return self._end is not None

    @property
    def close_code(self) -> int | None:
        return None if self._end is None else self._end[0]

    def _error(self) -> ChannelClosed:
        assert self._end is not None
        code, reason, hint = self._end
        return ChannelClosed(code, reason, hint=hint)

    async def send(self, payload: bytes | bytearray | memoryview) -> None:
        """Send one payload; raises ChannelClosed once the channel is closed."""
        if self._end is not None:
            raise self._error()
        limit = self._link.max_frame_bytes - DATA_HEADER_LEN
        if len(payload) > limit:
            raise ValueError(f"a payload is at most {limit} bytes on this relay, not {len(payload)}")
        try:
            await self._link._send(self._header + payload)
        except RelayError as err:
            self._finish(CloseCode.PEER_GONE, f"the relay connection was lost: {err.message}")
            raise self._error() from None

    async def recv(self) -> bytes:
        """The next payload; raises ChannelClosed (with the reason) once closed and drained."""
        while True:
            if self._inbox:
                payload = self._inbox.popleft()
                self._inbox_bytes -= len(payload)
                return payload
            if self._end is not None:
                raise self._error()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close the channel; the peer gets CLOSE(code, reason) through the relay."""
        if self._end is not None:
            return
        self._finish(code, reason or "this side closed the channel")
        self._link._forget(self)
        with contextlib.suppress(RelayError):
            await self._link._send(Close(self.id, code, reason).encode())

    # --- fed by the link's reader ---

    def _feed(self, payload: bytes) -> bool:
        """Queue an inbound payload; False when the inbox is full (the reader is too slow)."""
        link = self._link
        if len(self._inbox) >= link.inbox_frames or self._inbox_bytes + len(payload) > link.inbox_bytes:
            return False
        self._inbox.append(payload)
        self._inbox_bytes += len(payload)
        self._wake()
        return True

    def _finish(self, code: int, reason: str, hint: str | None = None) -> None:
        if self._end is None:
            self._end = (code, reason or close_message(code), hint)
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class RelayLink:
    """An authenticated connection to a relay, as a host or as a device."""

    def __init__(
        self,
        ws: ClientConnection,
        identity: Identity,
        role: Role,
        relay_url: str,
        welcome: Welcome,
        *,
        inbox_frames: int = DEFAULT_INBOX_FRAMES,
        inbox_bytes: int = DEFAULT_INBOX_BYTES,
    ) -> None:
        self.identity = identity
        self.role = role
        self.relay_url = relay_url
        self.id = welcome.id
        self.max_frame_bytes = welcome.max_frame_bytes
        self.inbox_frames = inbox_frames
        self.inbox_bytes = inbox_bytes
        self.presence: dict[str, bool] = {}
        #: host id → the relay node that holds it, where a cluster's node said to reconnect
        self.redirects: dict[str, str] = {}
        self.close_reason = ""
        self.close_code: int | None = None
        self._ws = ws
        self._channels: dict[int, Channel] = {}
        self._opening: dict[int, tuple[asyncio.Future[None], Channel]] = {}
        self._incoming: deque[Channel] = deque()
        self._waiters: set[asyncio.Future[None]] = set()
        self._presence_waiters: set[asyncio.Future[None]] = set()
        self._publish_lock = asyncio.Lock()
        # Mailbox requests waiting for their answer, by id: the items a TAKE got so far, and the
        # answer once it comes.
        self._requests: dict[int, tuple[list[MailboxItem], asyncio.Future[MailboxOk | MailboxSnapshot]]] = {}
        self._next_request = 1
        #: Items devices queued while this host is connected and has taken its mailbox once.
        self.mailbox_items: asyncio.Queue[MailboxItem] = asyncio.Queue()
        self._closed = False
        self._background: set[asyncio.Task[None]] = set()  # strong refs to fire-and-forget sends
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def connect(
        cls,
        relay_url: str,
        identity: Identity,
        role: Literal["host", "device"],
        *,
        open_timeout: float = 10,
        ping_interval: float | None = 20,
        ping_timeout: float | None = 20,
        inbox_frames: int = DEFAULT_INBOX_FRAMES,
        inbox_bytes: int = DEFAULT_INBOX_BYTES,
        enroll_key: bytes | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> RelayLink:
        """Dial the relay and authenticate (HELLO → CHALLENGE → AUTH → WELCOME).

        ``enroll_key``: a host's copy of the relay's enrollment key (``tether host --enroll-key``),
        for relays that admit enrolled hosts only; devices never send one. ``tls``: a TLS context
        for ``wss://`` other than the system's default (e.g. ``tether up`` dialing its own relay).
        """
        url = websocket_url(relay_url)
        wire_role = Role.HOST if role == "host" else Role.DEVICE
        try:
            ws = await connect(
                url,
                compression=None,
                open_timeout=open_timeout,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                close_timeout=5,
                max_size=1 << 20,
                user_agent_header="tether",
                **_tls_kwargs(tls),
            )
        except InvalidStatus as err:
            status = err.response.status_code
            raise RelayError(
                f"the relay at {relay_url} refused the connection: {_describe(err)}",
                hint=_status_hint(status),
                # too many connections from this address, or the relay full: a while later it may
                # well admit it (clients retry with backoff); any other answer is a refusal
                code="relay_busy" if status in (429, 503) else "relay_refused",
            ) from None
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as err:
            raise RelayError(f"cannot reach the relay at {relay_url}: {_describe(err)}", hint=_REACH_HINT) from None
        try:
            async with asyncio.timeout(open_timeout):
                await ws.send(Hello(wire_role, identity.identity_public).encode())
                challenge = _expect(await ws.recv(), Challenge)
                signature = identity.sign(auth_message(wire_role, challenge.nonce))
                proof = b""
                if enroll_key is not None and wire_role is Role.HOST:
                    proof = enroll_proof(enroll_key, challenge.nonce, identity.identity_public)
                await ws.send(Auth(signature, proof).encode())
                welcome = _expect(await ws.recv(), Welcome)
        except _Refusal as refusal:
            await ws.close()
            raise RelayError(
                f"the relay at {relay_url} refused the connection: {refusal.message}",
                hint=close_message(refusal.code) if refusal.message != close_message(refusal.code) else None,
                code="relay_refused",
            ) from None
        except TimeoutError:
            await ws.close()
            raise RelayError(
                f"the relay at {relay_url} did not complete authentication within {open_timeout:g} s",
                hint=_REACH_HINT,
            ) from None
        except ConnectionClosed as err:
            raise RelayError(
                f"the relay at {relay_url} closed the connection during authentication: {_describe(err)}",
                hint=_REACH_HINT,
            ) from None
        except FrameError as err:
            await ws.close()
            raise RelayError(
                f"{relay_url} does not speak the tether relay protocol ({err.message})",
                hint="is this the URL of a tether relay, and is it the same version?",
            ) from None
        return cls(ws, identity, wire_role, relay_url, welcome, inbox_frames=inbox_frames, inbox_bytes=inbox_bytes)

    async def __aenter__(self) -> RelayLink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # --- host side ---

    async def publish_allowlist(self, identities: Iterable[bytes]) -> None:
        """Replace the set of identity keys allowed to open channels to this host."""
        self._require(Role.HOST, "publish_allowlist")
        keys = list(dict.fromkeys(bytes(k) for k in identities))
        if any(len(k) != 32 for k in keys):
            raise ValueError("identity keys are 32 bytes")
        chunks = [keys[i : i + MAX_ALLOWLIST_CHUNK] for i in range(0, len(keys), MAX_ALLOWLIST_CHUNK)] or [[]]
        async with self._publish_lock:
            for i, chunk in enumerate(chunks):
                frame = Allowlist(tuple(chunk), first=i == 0, last=i == len(chunks) - 1)
                await self._send(frame.encode())

    async def publish_offers(self, offer_ids: Iterable[str]) -> None:
        """Replace the set of open pairing offers (ids only; secrets never reach the relay)."""
        self._require(Role.HOST, "publish_offers")
        ids = tuple(dict.fromkeys(offer_ids))
        if len(ids) > MAX_OFFERS:
            raise UsageError(f"at most {MAX_OFFERS} pairing offers can be open at once")
        await self._send(Offers(ids).encode())

    async def accept(self) -> Channel:
        """The next channel a device opened; RelayError once the link is closed."""
        self._require(Role.HOST, "accept")
        while True:
            if self._incoming:
                return self._incoming.popleft()
            await self._wait(self._waiters)

    # --- device side ---

    async def open(self, host_id: str, offer_id: str | None = None, timeout: float = 10) -> Channel:
        """Open a channel to ``host_id``; ChannelClosed carries the relay's refusal reason."""
        self._require(Role.DEVICE, "open")
        if not is_valid_id(host_id):
            raise UsageError(f"{host_id!r} is not a host id")
        if offer_id is not None and not is_valid_id(offer_id):
            raise UsageError(f"{offer_id!r} is not a pairing offer id")
        self._check_open()
        channel_id = self._new_channel_id()
        channel = Channel(self, channel_id, offer_id=offer_id)
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._opening[channel_id] = (opened, channel)
        try:
            await self._send(Open(channel_id, host_id, offer_id or "").encode())
            async with asyncio.timeout(timeout):
                await opened
        except TimeoutError:
            self._opening.pop(channel_id, None)
            with contextlib.suppress(RelayError):
                await self._send(Close(channel_id, CloseCode.NORMAL, "open timed out").encode())
            raise RelayError(
                f"the relay did not answer within {timeout:g} s when opening a channel to {host_id}",
                hint=_REACH_HINT,
            ) from None
        finally:
            self._opening.pop(channel_id, None)
        return channel

    async def watch(self, host_ids: Iterable[str]) -> None:
        """Follow these hosts' presence (replaces the watched set); see ``presence``."""
        self._require(Role.DEVICE, "watch")
        ids = tuple(dict.fromkeys(host_ids))
        for host_id in ids:
            if not is_valid_id(host_id):
                raise UsageError(f"{host_id!r} is not a host id")
        for gone in set(self.presence) - set(ids):
            del self.presence[gone]
        await self._send(Watch(ids).encode())

    async def wait_presence_change(self) -> None:
        """Return after the next PRESENCE frame; RelayError once the link is closed."""
        self._check_open()
        await self._wait(self._presence_waiters)

    # --- the mailbox (hosts that are away) ---

    async def deposit(self, device_identity: bytes, sealed: bytes) -> None:
        """Leave ``sealed`` (a snapshot sealed for that device) in the relay's mailbox; b"" clears it."""
        self._require(Role.HOST, "deposit")
        await self._mailbox(lambda req: MailboxDeposit(req, device_identity, sealed))

    async def take(self) -> list[MailboxItem]:
        """What devices queued for this host while it was away, oldest first; items queued later
        arrive on :attr:`mailbox_items` while this link lasts."""
        self._require(Role.HOST, "take")
        items, _ = await self._mailbox(MailboxTake)
        return items

    async def ack(self, items: Iterable[int]) -> None:
        """Done with these items: the relay forgets them."""
        self._require(Role.HOST, "ack")
        ids = tuple(items)
        for start in range(0, len(ids), MAX_ACK):
            part = ids[start : start + MAX_ACK]
            await self._mailbox(lambda req: MailboxAck(req, part))  # noqa: B023 - awaited at once

    async def snapshot(self, host_id: str) -> tuple[float, bytes] | None:
        """(when it was deposited, unix seconds; the sealed snapshot) the host left for this
        device, or None."""
        self._require(Role.DEVICE, "snapshot")
        _, answer = await self._mailbox(lambda req: MailboxGet(req, host_id))
        assert isinstance(answer, MailboxSnapshot)
        return (answer.deposited_at_ms / 1000, answer.sealed) if answer.sealed else None

    async def queue(self, host_id: str, sealed: bytes) -> int:
        """Hold ``sealed`` (an item sealed for the host) until the host takes it; its id."""
        self._require(Role.DEVICE, "queue")
        _, answer = await self._mailbox(lambda req: MailboxQueue(req, host_id, sealed))
        assert isinstance(answer, MailboxOk)
        return answer.value

    async def _mailbox(self, make: Callable[[int], Frame], timeout: float = 30) -> tuple[
            list[MailboxItem], MailboxOk | MailboxSnapshot]:
        self._check_open()
        req = self._next_request
        self._next_request = req % MAX_CHANNEL + 1
        answer: asyncio.Future[MailboxOk | MailboxSnapshot] = asyncio.get_running_loop().create_future()
        items: list[MailboxItem] = []
        self._requests[req] = (items, answer)
        try:
            await self._send(make(req).encode())
            async with asyncio.timeout(timeout):
                return items, await answer
        except TimeoutError:
            raise RelayError(f"the relay did not answer a mailbox request within {timeout:g} s",
                             hint=_REACH_HINT) from None
        finally:
            self._requests.pop(req, None)

    def _answered(self, req: int, answer: MailboxOk | MailboxSnapshot | BaseException) -> None:
        pending = self._requests.get(req)
        if pending is None or pending[1].done():
            return
        if isinstance(answer, BaseException):
            pending[1].set_exception(answer)
        else:
            pending[1].set_result(answer)

    # --- closing ---

    async def close(self) -> None:
        """Close the connection; every channel and waiter is woken with an error."""
        if not self.close_reason:
            self.close_reason = "the link was closed by this side"
        await self._ws.close()
        await self.wait_closed()

    async def wait_closed(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._reader)

    # --- internals ---

    def _require(self, role: Role, what: str) -> None:
        if self.role is not role:
            raise UsageError(f"{what}() is for {role.name.lower()} links, this one is a {self.role.name.lower()}")

    def _check_open(self) -> None:
        if self._closed:
            raise RelayError(f"the relay connection is closed: {self.close_reason}")

    def _new_channel_id(self) -> int:
        # Random ids: a stale frame for an old channel can never land on a new one, and the relay
        # can usually keep the same id on the host side and forward frames untouched.
        while True:
            candidate = random.randint(1, MAX_CHANNEL)
            if candidate not in self._channels and candidate not in self._opening:
                return candidate

    async def _send(self, frame: bytes) -> None:
        self._check_open()
        try:
            await self._ws.send(frame)
        except ConnectionClosed as err:
            raise RelayError(f"the relay connection is closed: {self.close_reason or _describe(err)}") from None

    def _forget(self, channel: Channel) -> None:
        if self._channels.get(channel.id) is channel:
            del self._channels[channel.id]

    async def _wait(self, waiters: set[asyncio.Future[None]]) -> None:
        self._check_open()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.add(fut)
        try:
            await fut
        finally:
            waiters.discard(fut)

    @staticmethod
    def _wake_all(waiters: set[asyncio.Future[None]], error: BaseException | None = None) -> None:
        for fut in list(waiters):
            if not fut.done():
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(error)

    async def _read_loop(self) -> None:
        try:
            async for message in self._ws:
                if isinstance(message, str):
                    self.close_reason = "the relay sent a text message; it is not a tether relay"
                    break
                # The hot path: channel data is routed by its header alone, without building a
                # frame object (it is most of the traffic, and the payload is opaque anyway).
                if len(message) >= DATA_HEADER_LEN and message[0] == _DATA:
                    channel = self._channels.get(_DATA_CHANNEL.unpack_from(message)[0])
                    if channel is not None and not channel._feed(message[DATA_HEADER_LEN:]):
                        self._too_slow(channel)
                    continue
                try:
                    frame = decode_frame(message)
                except FrameError as err:
                    self.close_reason = f"the relay sent a malformed frame ({err.message})"
                    break
                if not self._dispatch(frame):
                    break
        except ConnectionClosed as err:
            if not self.close_reason:
                self.close_reason = _describe(err)
        except Exception as err:  # never leave waiters hanging on a bug
            log.exception("relay link reader failed")
            self.close_reason = f"internal error: {err}"
        finally:
            if not self.close_reason:
                self.close_reason = _describe_close(self._ws)
            self._die()
            with contextlib.suppress(Exception):
                await self._ws.close()

    def _dispatch(self, frame: Frame) -> bool:
        match frame:
            case Data(channel=channel_id, payload=payload):
                channel = self._channels.get(channel_id)
                if channel is not None and not channel._feed(payload):
                    self._too_slow(channel)
            case Opened(channel=channel_id):
                pending = self._opening.pop(channel_id, None)
                if pending is not None:
                    opened, channel = pending
                    if not opened.done():
                        self._channels[channel_id] = channel
                        opened.set_result(None)
            case Close(channel=channel_id, code=code, reason=reason):
                pending = self._opening.pop(channel_id, None)
                if pending is not None:
                    if not pending[0].done():
                        pending[0].set_exception(ChannelClosed(code, reason or close_message(code)))
                    return True
                channel = self._channels.pop(channel_id, None)
                if channel is not None:
                    channel._finish(code, reason)
            case Incoming(channel=channel_id, device_identity=key, offer_id=offer_id) if self.role is Role.HOST:
                channel = Channel(self, channel_id, peer_identity=key, offer_id=offer_id or None)
                self._channels[channel_id] = channel
                if len(self._incoming) >= MAX_ACCEPT_BACKLOG:
                    self._too_slow(channel)
                else:
                    self._incoming.append(channel)
                    self._wake_all(self._waiters)
            case Presence(host_id=host_id, online=online) if self.role is Role.DEVICE:
                self.presence[host_id] = online
                self._wake_all(self._presence_waiters)
            case Redirect(host_id=host_id, url=url) if self.role is Role.DEVICE:
                self.redirects[host_id] = url
            case MailboxItem(req=0) if self.role is Role.HOST:
                self.mailbox_items.put_nowait(frame)
            case MailboxItem(req=req) if self.role is Role.HOST:
                taking = self._requests.get(req)
                if taking is not None:
                    taking[0].append(frame)
            case MailboxOk(req=req) | MailboxSnapshot(req=req):
                self._answered(req, frame)
            case MailboxError(req=req, code=code, message=message):
                self._answered(req, MailboxRefusal(code, message))
            case Error(code=code, message=message):
                self.close_code = code
                self.close_reason = message
                return False
            case _:
                self.close_reason = f"the relay sent an unexpected {type(frame).__name__.upper()} frame"
                return False
        return True

    def _too_slow(self, channel: Channel) -> None:
        """The application is not reading this channel: close it rather than stall the link."""
        channel._finish(CloseCode.TOO_SLOW, "this program did not read the channel fast enough, so it was closed")
        self._forget(channel)
        frame = Close(channel.id, CloseCode.TOO_SLOW, close_message(CloseCode.TOO_SLOW)).encode()
        task = asyncio.get_running_loop().create_task(self._send_quietly(frame))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _send_quietly(self, frame: bytes) -> None:
        with contextlib.suppress(RelayError):
            await self._send(frame)

    def _die(self) -> None:
        if self._closed:
            return
        self._closed = True
        reason = self.close_reason
        log.info("relay link %s closed: %s", self.relay_url, reason)
        for channel in list(self._channels.values()):
            channel._finish(CloseCode.PEER_GONE, f"the relay connection was lost: {reason}")
        self._channels.clear()
        for opened, _channel in list(self._opening.values()):
            if not opened.done():
                opened.set_exception(RelayError(f"the relay connection was lost: {reason}", hint=_REACH_HINT))
        self._opening.clear()
        for incoming in self._incoming:
            incoming._finish(CloseCode.PEER_GONE, f"the relay connection was lost: {reason}")
        error = RelayError(f"the relay connection is closed: {reason}", hint=_REACH_HINT)
        for _items, answer in self._requests.values():
            if not answer.done():
                answer.set_exception(error)
        self._wake_all(self._waiters, error)
        self._wake_all(self._presence_waiters, error)


_F = TypeVar("_F")


class _Refusal(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _expect(message: str | bytes, kind: type[_F]) -> _F:
    if isinstance(message, str):
        raise FrameError("a text message")
    frame = decode_frame(message)
    if isinstance(frame, Error):
        raise _Refusal(frame.code, frame.message)
    if not isinstance(frame, kind):
        raise FrameError(f"expected {kind.__name__.upper()}, got {type(frame).__name__.upper()}")
    return frame


def _status_hint(status: int) -> str | None:
    if status == 429:
        return "too many connections from this address; wait a moment and retry"
    if status == 403:
        return "the relay refused this origin; open the web client from the relay's own address"
    if status == 503:
        return "the relay is at its limit of connections; wait a moment and retry"
    return _REACH_HINT


def _describe(err: BaseException) -> str:
    if isinstance(err, InvalidStatus):
        # The relay's refusals explain themselves in a short plain-text body.
        response = err.response
        body = bytes(response.body or b"")[:300].decode("utf-8", "replace").strip()
        return f"HTTP {response.status_code}" + (f": {body}" if body else "")
    if isinstance(err, ConnectionClosed):
        close = err.rcvd or err.sent
        return _describe_close_codes(close.code if close else None, close.reason if close else "")
    text = str(err) or type(err).__name__
    return text


def _describe_close(ws: ClientConnection) -> str:
    return _describe_close_codes(ws.close_code, ws.close_reason or "")


def _describe_close_codes(code: int | None, reason: str) -> str:
    if code is None:
        return "the connection to the relay was lost"
    if code == 1001:
        return "the relay is shutting down"
    if code == 1009:
        return "a frame was larger than the relay accepts"
    if code == 1011 and "keepalive" in reason:
        return "the relay stopped answering (keepalive timeout)"
    return f"the relay closed the connection ({code}{' ' + reason if reason else ''})"
