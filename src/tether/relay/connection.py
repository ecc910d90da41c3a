"""One authenticated connection's outgoing side: a bounded queue and a writer task that runs only
while something is queued (ARCHITECTURE §9: idle connections are the common case).

Senders never write to another connection's socket: they append to the receiver's queue, so a
slow receiver cannot block a sender's read loop or its other channels. Bytes queued per
(receiver, channel) are counted until the socket has taken them; past ``channel_queue_bytes``
the shell closes that channel with TOO_SLOW, past ``connection_queue_bytes`` the receiver's whole
connection is closed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable
from typing import Protocol

from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.protocol import State

from tether.protocol.frames import CloseCode, Error
from tether.relay.limits import RelayLimits, TokenBucket
from tether.relay.mailbox import Lane
from tether.relay.router import Peer
from tether.relay.websocket import RelaySocket

log = logging.getLogger("tether.relay")

_HEAD_7 = struct.Struct("!BB")
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")


class Link(Protocol):
    """What the shell sends a peer's frames through: a connection here (:class:`Connection`), or
    a device connected to another node of a cluster (``cluster/node.py``)."""

    closing: bool
    # bytes queued per receiver channel and not yet written (empty when nothing is counted)
    channel_bytes: dict[int, int]

    @property
    def label(self) -> str: ...

    def enqueue(self, frame: bytes, channel: int = -1) -> bool: ...

    def fail(self, code: CloseCode, message: str) -> None: ...

    async def wait_progress(self, timeout: float) -> None: ...


class Connection:
    """The shell's side of one authenticated connection; the router's side is ``peer``."""

    __slots__ = (
        "__weakref__",  # the keepalive's queues hold it weakly (keepalive.py)
        "channel_bytes",
        "closer",
        "closing",
        "frames",
        "gone",
        "handle",
        "lane",
        "limits",
        "peer",
        "progress",
        "queue",
        "queued_bytes",
        "version",
        "writer",
        "ws",
    )

    peer: Peer[Link]

    def __init__(self, ws: RelaySocket, limits: RelayLimits, version: int,
                 gone: Callable[[Connection], None]) -> None:
        self.ws = ws
        self.version = version  # of the protocol, from its HELLO
        self.limits = limits
        # told once the connection is closing (the shell lets the router know)
        self.gone = gone
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
        self.frames = TokenBucket(limits.frames_per_second, limits.frames_burst)
        self.lane: Lane | None = None  # its mailbox requests, made at its first
        self.handle = 0  # a device's name on the cluster's bus, from its first channel to another node

    @property
    def id(self) -> str:
        return self.peer.id

    @property
    def label(self) -> str:
        return self.peer.label

    def pongs(self) -> int:
        """Pongs its peer sent: unchanged since a ping, it did not answer it."""
        return self.ws.pongs

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

        A batch is framed and handed to the transport with one ``writelines`` (one syscall), then
        the writer awaits the transport's drain: the bytes of a batch stay counted in
        ``queued_bytes``/``channel_bytes`` until the socket has taken them, so those bounds cover
        the transport's buffer too. A connection that is no longer OPEN goes through ``ws.send``,
        which raises ConnectionClosed as it should.
        """
        ws = self.ws
        try:
            while self.queue and not self.closing:
                batch = self.queue
                self.queue = []
                try:
                    if writable_now(ws):
                        if not write_batch(ws, batch):
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
        self.gone(self)

    async def _send_error_and_close(self, code: CloseCode, message: str) -> None:
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(1.0):
                await self.ws.send(Error(code, message).encode())
        await self.ws.close(1008 if code == CloseCode.PROTOCOL_ERROR else 1000, code.name.lower())


def binary_frame_header(size: int) -> bytes:
    """The RFC 6455 header of an unmasked, unfragmented binary frame of ``size`` bytes (what
    websockets' ``Frame(BINARY, data).serialize(mask=False)`` puts before the data)."""
    if size < 126:
        return _HEAD_7.pack(0x82, size)
    if size < 0x10000:
        return _HEAD_16.pack(0x82, 126, size)
    return _HEAD_64.pack(0x82, 127, size)


def writable_now(ws: RelaySocket) -> bool:
    """Whether frames may be written past ``ws.send``: the connection is OPEN."""
    return ws.protocol.state is State.OPEN


async def send_one(ws: RelaySocket, frame: bytes) -> None:
    """Send one small frame (admission's CHALLENGE and WELCOME) with one transport write and no
    drain, as the writer does. Raises ConnectionClosed as ``ws.send`` does."""
    if not writable_now(ws):
        await ws.send(frame)  # raises ConnectionClosed as it should
    elif not write_batch(ws, [(frame, -1)]):
        raise ConnectionClosedError(None, None)


def send_ping(ws: RelaySocket) -> bool:
    """A keepalive ping (empty), written at once; False if the connection cannot take one (it is
    closing, or the write failed: then it is aborted, as in write_batch)."""
    if not writable_now(ws):
        return False
    protocol = ws.protocol

    def ping() -> list[bytes]:
        protocol.send_ping(b"")
        return protocol.data_to_send()

    return _write(ws, ping)


def write_batch(ws: RelaySocket, batch: list[tuple[bytes, int]]) -> bool:
    """Write ``batch`` as binary messages with one transport write; False if that failed (then
    the connection is aborted). The connection is OPEN.

    Without extensions (the relay never negotiates compression) and debug logging, a binary
    message is the fixed header plus the data as is, so the frames are framed here and joined
    with one copy; otherwise websockets' protocol object serializes them. Either way whatever
    the protocol object had pending goes first (it is flushed at once, so normally nothing).
    """
    protocol = ws.protocol

    def frames() -> list[bytes]:
        if protocol.extensions or protocol.debug:
            send_binary = protocol.send_binary
            for frame, _ in batch:
                send_binary(frame)
            return protocol.data_to_send()
        parts = protocol.data_to_send()
        append = parts.append
        header = binary_frame_header
        for frame, _ in batch:
            append(header(len(frame)))
            append(frame)
        return parts

    return _write(ws, frames)


def _write(ws: RelaySocket, serialize: Callable[[], list[bytes]]) -> bool:
    """Hand what ``serialize`` makes to the transport in one write; False if either failed (the
    connection is then aborted)."""
    try:
        ws.transport.writelines(serialize())
    except Exception:
        ws.transport.abort()
        return False
    return True
