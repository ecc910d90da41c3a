"""The relay's sockets, from TCP accept to close: an ``asyncio.Protocol`` per connection that
drives websockets' sans-I/O ``ServerProtocol`` (the opening handshake, framing, answering pings,
the closing handshake), and the listener that makes them.

websockets' own asyncio server wraps the same protocol object in a connection with a handshake
task, futures and timeouts of its own per connection; a node taking thousands of reconnecting
hosts spent a tenth of its CPU there (docs/benchmarks.md). Here a connection is one object with
slots and one task (the relay's handler, started once the request has come), and its timeouts
are timer handles:

- ``handshake_timeout`` from accept until the response to the request is written;
- ``close_timeout`` from when the protocol expects the TCP connection to end (a close frame
  sent or received, a refusal written) until it is aborted.

Incoming messages wait in a short queue; past ``MAX_QUEUE`` the socket is not read until the
relay has taken them down to ``MIN_QUEUE`` (so a connection over its frame rate, which the relay
stops reading from, pushes back on its peer through TCP). Writes go to the transport at once;
``drain`` waits while the transport holds more than ``WRITE_LIMIT`` bytes.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from tether.relay.http import BAD_REQUEST, peer_host, plain_response
from tether.relay.limits import address_key, is_trusted_proxy

if TYPE_CHECKING:
    from tether.relay.http import Front

log = logging.getLogger("tether.relay")

# incoming messages queued before the socket stops being read, and where it is read again
MAX_QUEUE = 16
MIN_QUEUE = 4
# bytes the transport may hold before drain() waits (websockets' default)
WRITE_LIMIT = 32 * 1024

Handler = Callable[["RelaySocket"], Awaitable[None]]


class Listener:
    """The listening socket and the connections made through it."""

    def __init__(self, front: Front, handler: Handler, ws_log: logging.Logger) -> None:
        self.front = front
        self.handler = handler
        self.ws_log = ws_log
        self.connections: set[RelaySocket] = set()
        self.tasks: set[asyncio.Task[None]] = set()  # one per connection past its request
        self.closing = False
        self.server: asyncio.Server | None = None

    async def listen(self, host: str, port: int, *, tls: ssl.SSLContext | None, backlog: int) -> None:
        # a TLS handshake is part of the upgrade: the same deadline (asyncio's default is 60 s)
        self.server = await asyncio.get_running_loop().create_server(
            lambda: RelaySocket(self), host, port, backlog=backlog, start_serving=False, ssl=tls,
            ssl_handshake_timeout=self.front.limits.handshake_timeout if tls else None,
        )

    async def close(self) -> None:
        """Stop listening; close every open connection with 1001 (going away), abort the others,
        and wait for the relay's handlers to return."""
        self.closing = True
        if self.server is not None:
            self.server.close()
        closes = []
        for sock in list(self.connections):
            if sock.protocol.state is State.OPEN:
                closes.append(asyncio.ensure_future(sock.close(1001)))
            elif sock.task is None:  # no request yet: nobody is waiting on it
                sock.transport.abort()
        if closes:
            await asyncio.wait(closes)
        if self.tasks:
            await asyncio.wait(self.tasks)


class RelaySocket(asyncio.Protocol):
    """One TCP connection: counted against its source address and the relay's socket cap from
    accept to close (so that connections which never finish their request count too), then a
    WebSocket once the relay's front admits the upgrade."""

    __slots__ = (
        "_drained",
        "_fragments",
        "_lost",
        "_messages",
        "_reader",
        "_reading_paused",
        "_text",
        "_timer",
        "_writing_paused",
        "address",
        "closed",
        "deferred",
        "listener",
        "loop",
        "pongs",
        "protocol",
        "refusal",
        "request",
        "task",
        "transport",
    )

    transport: asyncio.Transport

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.loop = asyncio.get_running_loop()
        self.protocol = ServerProtocol(max_size=listener.front.limits.max_frame_bytes, logger=listener.ws_log)
        self.request: Request | None = None
        self.task: asyncio.Task[None] | None = None
        # the address key it counts against (None: not counted, or no longer)
        self.address: str | None = None
        # why its upgrade is refused (over its address's limits), said once the request is read
        self.refusal: str | None = None
        # behind a trusted reverse proxy: counted once X-Forwarded-For shows who the client is
        self.deferred = False
        self.closed = False  # connection_lost came
        # pongs that came: the keepalive's sign that the peer reads what the relay sends (keepalive.py)
        self.pongs = 0
        self._messages: collections.deque[bytes | str] = collections.deque()
        self._fragments: list[bytes] | None = None  # a fragmented message's frames so far
        self._text = False  # ... and whether it is a text message
        self._reader: asyncio.Future[None] | None = None  # recv() waiting for a message
        self._reading_paused = False
        self._writing_paused = False
        self._drained: asyncio.Future[None] | None = None  # drain() waiting
        self._lost: asyncio.Future[None] | None = None  # someone waiting for connection_lost
        self._timer: asyncio.TimerHandle | None = None

    # --- what the relay uses ---

    @property
    def remote_address(self) -> object:
        return self.transport.get_extra_info("peername")

    def respond(self, status: int, text: str) -> Response:
        """A plain-text HTTP response to the request (not an upgrade)."""
        return self.protocol.reject(status, text)

    async def recv(self) -> bytes | str:
        """The next message; raises ConnectionClosed (OK or Error, from the close codes) once the
        connection is closed and every message before it was taken."""
        messages = self._messages
        while not messages:
            if self.closed:
                raise self.protocol.close_exc
            self._reader = reader = self.loop.create_future()
            try:
                await reader
            finally:
                self._reader = None
        message = messages.popleft()
        if self._reading_paused and len(messages) <= MIN_QUEUE:
            self._reading_paused = False
            self.transport.resume_reading()
        return message

    async def send(self, message: bytes) -> None:
        """Send one binary message and wait for the transport to take it; ConnectionClosed if the
        connection is not open (once it has closed)."""
        if self.protocol.state is not State.OPEN:
            await self._closed_then_raise()
        self.protocol.send_binary(message)
        if not self.send_data():
            await self._closed_then_raise()
        await self.drain()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """The closing handshake (when open), then wait until the TCP connection is gone (at most
        ``close_timeout``: it is aborted then)."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self.send_data()
        self._expect_close()
        await self.wait_closed()

    async def wait_closed(self) -> None:
        if self.closed:
            return
        if self._lost is None:
            self._lost = self.loop.create_future()
        await asyncio.shield(self._lost)

    async def drain(self) -> None:
        """Wait while the transport holds more than ``WRITE_LIMIT`` bytes."""
        if self.transport.is_closing():
            await asyncio.sleep(0)  # let connection_lost come
        if self._writing_paused and not self.closed:
            if self._drained is None:
                self._drained = self.loop.create_future()
            await asyncio.shield(self._drained)

    def send_data(self) -> bool:
        """Write what the protocol object has to send; its end-of-data marker half-closes (TCP)
        or closes (TLS) the connection. False if the transport refused (a write after its EOF):
        the connection is aborted then."""
        transport = self.transport
        try:
            for data in self.protocol.data_to_send():
                if data:
                    transport.write(data)
                elif transport.can_write_eof():
                    transport.write_eof()
                else:
                    transport.close()
        except Exception:
            transport.abort()
            return False
        return True

    async def _closed_then_raise(self) -> None:
        self._expect_close()
        await self.wait_closed()
        raise self.protocol.close_exc

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        listener = self.listener
        front = listener.front
        host = peer_host(transport.get_extra_info("peername"))
        if not front.sockets.add():  # counted until connection_lost, even when refused
            # Over the relay's cap: answer at once rather than when (if ever) the request comes,
            # so this descriptor is free again within a few loop passes, before the process runs
            # out of them.
            cap = front.sockets.cap
            front.quiet_log.log(logging.WARNING, "503", "refused %s: %d connections at once, the relay's cap",
                                host, cap)
            transport.write(plain_response(
                503, "Service Unavailable",
                f"the relay is at its limit of {cap} connections at once; retry in a few seconds\n",
                ("Retry-After", "5"),
            ))
            transport.close()
            return
        listener.connections.add(self)
        transport.set_write_buffer_limits(WRITE_LIMIT)
        self._timer = self.loop.call_later(front.limits.handshake_timeout, self._handshake_timed_out)
        if is_trusted_proxy(host, front.limits):
            self.deferred = True
        else:
            self.count(address_key(host, front.limits))

    def count(self, key: str | None) -> None:
        """Count against address ``key``; past its limits the upgrade is refused (HTTP 429)."""
        if key is not None:
            self.address = key
            refusal = self.listener.front.addresses.open(key)
            if refusal is not None:
                self.refusal = refusal

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        protocol.receive_data(data)
        events = protocol.events_received()
        if self._bad_request() or not self.send_data():  # pongs, the answer to a close frame
            return
        if protocol.close_expected():
            self._expect_close()
        for event in events:
            if isinstance(event, Frame):
                self._frame(event)
            elif self.request is None and isinstance(event, Request):
                self.request = event
                self.task = task = self.loop.create_task(self._run())
                self.listener.tasks.add(task)
                task.add_done_callback(self.listener.tasks.discard)
        if protocol.parser_exc is not None and protocol.state is not State.CONNECTING:
            # The peer broke the framing (a message over max_frame_bytes, say): stop reading now
            # rather than read and discard its bytes for close_timeout. The close frame the
            # protocol queued still goes out.
            self.transport.close()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        if not self._bad_request():
            self.send_data()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        listener = self.listener
        listener.connections.discard(self)
        listener.front.sockets.remove()
        if self.address is not None:
            listener.front.addresses.close(self.address)
            self.address = None
        self.protocol.receive_eof()  # idempotent; the protocol's state is CLOSED from here
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for waiter in (self._reader, self._drained, self._lost):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self._drained = None

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        waiter, self._drained = self._drained, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- inside ---

    def _bad_request(self) -> bool:
        """websockets read no valid request: it carried a body (Content-Length,
        Transfer-Encoding), or bad syntax, or an over-long line. Answer and close at once,
        reading nothing more (websockets would half-close, then read and discard whatever the
        client sends until it hangs up)."""
        if self.request is not None or self.protocol.handshake_exc is None:
            return False
        # websockets' own 414/431 answer when it made one; never its bare EOF
        pending = [data for data in self.protocol.data_to_send() if data]
        if not self.transport.is_closing():
            self.transport.writelines(pending or [BAD_REQUEST])
            self.transport.close()
        return True

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.BINARY or opcode is Opcode.TEXT:
            data = bytes(frame.data)  # bytes already: no copy
            if not frame.fin:
                self._fragments = [data]
                self._text = opcode is Opcode.TEXT
                return
            message: bytes | str = data if opcode is Opcode.BINARY else data.decode(errors="replace")
        elif opcode is Opcode.CONT:
            fragments = self._fragments
            assert fragments is not None  # the protocol object checks the order of fragments
            fragments.append(bytes(frame.data))
            if not frame.fin:
                return
            self._fragments = None
            data = b"".join(fragments)
            message = data.decode(errors="replace") if self._text else data
        else:
            if opcode is Opcode.PONG:
                self.pongs += 1
            return  # a PING was answered by the protocol object; a CLOSE too
        messages = self._messages
        messages.append(message)
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)
        if len(messages) >= MAX_QUEUE and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self.protocol.state is State.CONNECTING:
            self.transport.abort()

    def _expect_close(self) -> None:
        """Abort the connection if it is not gone within ``close_timeout`` (unless a timer for
        that already runs)."""
        if not self.closed and self._timer is None:
            self._timer = self.loop.call_later(self.listener.front.limits.close_timeout, self.transport.abort)

    async def _run(self) -> None:
        """Answer the request; once upgraded, the relay's handler, then the closing handshake."""
        listener = self.listener
        protocol = self.protocol
        request = self.request
        assert request is not None
        try:
            try:
                response = await listener.front.process_request(self, request)
            except Exception:
                log.error("answering a request failed", exc_info=True)
                response = protocol.reject(500, "the relay failed on this request; see its log\n")
            if response is None:
                response = protocol.accept(request)
            if response.status_code == 101 and listener.closing:
                response = protocol.reject(503, "the relay is shutting down; retry in a few seconds\n")
            if self.closed or protocol.state is not State.CONNECTING:
                return
            response.headers["Server"] = "tether-relay"
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            protocol.send_response(response)
            if not self.send_data():
                return
            if response.status_code != 101:  # not upgraded
                self._expect_close()  # the client hangs up, or is cut off after close_timeout
                return
            await listener.handler(self)
            await self.close()
        except ConnectionClosed:
            pass
        except Exception:
            log.error("connection handler failed", exc_info=True)
            self.transport.abort()
