"""Lean simulated relay clients for bench/cluster.py's part 3, cheap in CPU so that the load
generator does not decide the result on a small machine (real hosts and phones are other machines).

A connection is one ``asyncio.Protocol`` that drives websockets' sans-I/O client
(``websockets.client.ClientProtocol``: the opening handshake, framing, masking, answering the
relay's pings, the closing handshake) and speaks the relay protocol with tether's codec
(``tether.protocol.frames``) as ``RelayLink`` does: HELLO → CHALLENGE → AUTH (the Ed25519
signature of ``auth_message``) → WELCOME. No hand-written WebSocket code; no task, future or
keepalive timer per connection once it is made (the relay pings every connection, websockets
answers).

- :class:`LeanHost` / :class:`LeanFleet`: the simulated hosts. A host sends its allowlist as
  ``RelayLink.publish_allowlist`` does, echoes the first DATA of every channel, and reconnects as
  ``tether host`` does (``tether.backoff.Backoff`` after a connection that worked). What it leaves
  out against ``tether host``: pings of its own, the E2E (Noise) handshake on channels, the mailbox
  and offers.
- :class:`LeanDevice` / :class:`LeanProber`: the probing devices. A probe is what
  ``RelayLink.open`` + ``Channel.send`` / ``recv`` / ``close`` do: OPEN, wait for OPENED, one DATA,
  wait for its echo, CLOSE.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from typing import Any, cast

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import WebSocketURI, parse_uri

from tether.backoff import Backoff
from tether.crypto.keys import Identity
from tether.protocol.frames import (
    MAX_ALLOWLIST_CHUNK,
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
    Open,
    Opened,
    Role,
    Welcome,
    auth_message,
    data_channel,
    decode_frame,
    encode_data,
)
from tether.relay.link import websocket_url

DATA = int(FrameType.DATA)
OPEN_TIMEOUT = 10.0  # RelayLink.connect's bound on the relay's admission
PROBE = b"probe"


def relay_uri(url: str) -> WebSocketURI:
    return parse_uri(websocket_url(url))


class LeanLink(asyncio.Protocol):
    """One relay connection up to WELCOME; then every relay frame goes to :meth:`received`.
    Subclasses say what an attempt's outcome (:meth:`settled`), the WELCOME (:meth:`authenticated`)
    and the end of an authenticated connection (:meth:`lost`) mean to them."""

    __slots__ = ("hello", "identity", "loop", "reported", "role", "stage", "timer", "transport", "uri", "ws")

    def __init__(self, loop: asyncio.AbstractEventLoop, uri: WebSocketURI, identity: Identity, role: Role,
                 hello: bytes) -> None:
        self.loop = loop
        self.uri = uri
        self.identity = identity
        self.role = role
        self.hello = hello
        self.transport: asyncio.Transport | None = None
        self.ws: ClientProtocol | None = None
        self.stage = 0  # 0 opening handshake, 1 HELLO sent, 2 AUTH sent, 3 authenticated, 4 lost
        self.reported = False  # the attempt's outcome is known
        self.timer: asyncio.TimerHandle | None = loop.call_later(OPEN_TIMEOUT, self._timed_out)

    async def dial(self) -> None:
        try:
            await self.loop.create_connection(lambda: self, self.uri.host, self.uri.port)
        except OSError as exc:
            self._outcome(False, f"{type(exc).__name__}: {exc}")

    def send(self, message: bytes) -> None:
        if self.transport is not None and self.ws is not None:
            self.ws.send_binary(message)
            self._flush()

    # --- what a subclass makes of it

    def settled(self, ok: bool, why: str) -> None:
        raise NotImplementedError

    def authenticated(self) -> None:
        """WELCOME came (before ``settled(True)``)."""

    def received(self, message: bytes) -> None:
        """A relay frame after WELCOME."""

    def lost(self) -> None:
        """An authenticated connection ended."""

    # --- the attempt

    def _timed_out(self) -> None:
        self.timer = None
        self._fail(f"no WELCOME within {OPEN_TIMEOUT:g} s")

    def _outcome(self, ok: bool, why: str = "") -> None:
        if self.reported:
            return
        self.reported = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.settled(ok, why)

    def _fail(self, why: str) -> None:
        self._outcome(False, why)
        if self.transport is not None:
            self.transport.abort()

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self.reported:  # timed out while the TCP connection was being made
            transport.abort()
            return
        self.ws = ws = ClientProtocol(self.uri, max_size=1 << 20)
        request = ws.connect()
        request.headers["User-Agent"] = "tether"
        ws.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        assert ws is not None
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.BINARY:
                    if not event.fin:
                        self._fail("a fragmented message")  # the relay sends every message whole
                        return
                    self._message(bytes(event.data))  # bytes already: no copy
                # PING: websockets queued the PONG; CLOSE: its answer (both sent by _flush)
            elif ws.handshake_exc is not None:  # the answer to the opening handshake: a refusal
                self._fail(f"handshake: {ws.handshake_exc}")
                return
            else:
                ws.send_binary(self.hello)
                self.stage = 1
        self._flush()

    def eof_received(self) -> bool | None:
        if self.ws is not None:
            self.ws.receive_eof()
            self._flush()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.reported:
            self._outcome(False, f"connection lost during the handshake ({exc or 'EOF'})")
        elif self.stage == 3:
            self.stage = 4
            self.lost()

    def _flush(self) -> None:
        transport = self.transport
        if transport is None or self.ws is None:
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                transport.write(chunk)
            else:  # websockets' SEND_EOF: the closing handshake is done
                transport.close()
                return

    def _message(self, message: bytes) -> None:
        if self.stage >= 3:
            self.received(message)
            return
        try:
            frame = decode_frame(message)
        except FrameError as exc:
            self._fail(f"not the relay protocol: {exc}")
            return
        assert self.ws is not None
        if self.stage == 1 and isinstance(frame, Challenge):
            self.ws.send_binary(Auth(self.identity.sign(auth_message(self.role, frame.nonce))).encode())
            self.stage = 2
        elif self.stage == 2 and isinstance(frame, Welcome):
            self.stage = 3
            self.authenticated()
            self._outcome(True)
        else:
            self._fail(f"refused: {frame}" if isinstance(frame, Error) else
                       f"expected {'CHALLENGE' if self.stage == 1 else 'WELCOME'}, got {type(frame).__name__}")


class LeanHost(LeanLink):
    """One connection of a simulated host: its allowlist after WELCOME, then the first DATA of
    every channel echoed on that channel (the frame as it came: its header names this host's end
    of the channel). The host's state between its connections is in its :class:`LeanFleet`."""

    __slots__ = ("fleet", "i", "waiting")

    def __init__(self, fleet: LeanFleet, i: int, uri: WebSocketURI) -> None:
        super().__init__(fleet.loop, uri, fleet.idents[i], Role.HOST, fleet.hello[i])
        self.fleet = fleet
        self.i = i
        self.waiting: set[int] = set()  # channels opened whose first DATA has not come yet

    def settled(self, ok: bool, why: str) -> None:
        self.fleet.outcome(self.i, ok, why)

    def authenticated(self) -> None:
        for chunk in self.fleet.allowlist:  # the frames RelayLink.publish_allowlist sends
            self.send(chunk)

    def lost(self) -> None:
        self.fleet.lost(self.i)

    def received(self, message: bytes) -> None:
        if message[0] == DATA:
            channel = data_channel(message)
            if channel in self.waiting:
                self.waiting.discard(channel)
                self.send(message)
                self.fleet.echoes += 1
            return
        frame = decode_frame(message)
        if isinstance(frame, Incoming):
            self.waiting.add(frame.channel)
        elif isinstance(frame, Close):
            self.waiting.discard(frame.channel)


class LeanFleet:
    """The lean hosts of one worker process (:class:`LeanHost`): their identities, what they send,
    their reconnection (``tether.backoff.Backoff`` after a connection that worked, at most
    ``inflight`` attempts at once; 0: no bound) and what part 3 counts. ``notes.add(h)`` is told
    of every host back (bench/cluster.py's ``BackNotes``)."""

    def __init__(self, idents: list[Identity], offset: int, probe_keys: list[bytes], after_urls: list[str],
                 inflight: int, deadline: float, notes: Any) -> None:
        self.loop = asyncio.get_running_loop()
        self.idents = idents
        self.hello = [Hello(Role.HOST, ident.identity_public).encode() for ident in idents]
        keys = list(dict.fromkeys(bytes(k) for k in probe_keys))
        chunks = [keys[i:i + MAX_ALLOWLIST_CHUNK] for i in range(0, len(keys), MAX_ALLOWLIST_CHUNK)] or [[]]
        self.allowlist = [Allowlist(tuple(c), first=i == 0, last=i == len(chunks) - 1).encode()
                          for i, c in enumerate(chunks)]
        self.after = [relay_uri(u) for u in after_urls]
        count = len(idents)
        self.offset = offset
        self.inflight = inflight
        self.deadline = deadline
        self.running = 0  # reconnection attempts in flight
        self.queue: collections.deque[int] = collections.deque()  # hosts waiting for a place in flight
        self.waiters: dict[int, asyncio.Future[bool]] = {}  # the first connections' outcomes
        self.backoff: list[Backoff | None] = [None] * count
        self.lost_at = [0.0] * count
        self.back_at = [0.0] * count
        self.attempts = [0] * count
        self.errors: list[str] = []
        self.lost_again = 0  # connections lost after the reconnection (none expected)
        self.echoes = 0
        self.remaining = 0
        self.progress: Any = None
        self.notes = notes
        self.tasks: set[asyncio.Task[Any]] = set()

    def dial(self, i: int, uri: WebSocketURI) -> None:
        task = self.loop.create_task(LeanHost(self, i, uri).dial())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def first(self, i: int, uri: WebSocketURI) -> bool:
        """Host ``i``'s first connection, to ``uri``: whether it was admitted."""
        self.waiters[i] = waiter = self.loop.create_future()
        self.dial(i, uri)
        return bool(await waiter)

    def outcome(self, i: int, ok: bool, why: str) -> None:
        waiter = self.waiters.pop(i, None)
        if waiter is not None:  # a first connection
            if not ok and len(self.errors) < 5:
                self.errors.append(f"first connect: {why}")
            waiter.set_result(ok)
            return
        self.running -= 1
        if ok:
            if not self.back_at[i]:
                self.back_at[i] = time.monotonic()
                self.notes.add(self.offset + i)
                self.remaining -= 1
                if self.remaining == 0:
                    self.progress.put(("back", self.offset))
        else:
            if len(self.errors) < 5:
                self.errors.append(f"reconnect: {why}")
            self._later(i)
        while self.queue and (not self.inflight or self.running < self.inflight):
            self._start(self.queue.popleft())

    def lost(self, i: int) -> None:
        """A connection that worked ended: reconnect as ``tether host`` does (a new Backoff)."""
        if self.lost_at[i]:
            self.lost_again += 1
        else:
            self.lost_at[i] = time.monotonic()
        self.backoff[i] = Backoff()
        self._later(i)

    def _later(self, i: int) -> None:
        backoff = self.backoff[i]
        if backoff is not None and self.loop.time() < self.deadline:
            self.loop.call_later(backoff.next_delay(), self._due, i)

    def _due(self, i: int) -> None:
        if self.loop.time() >= self.deadline:
            return
        self.attempts[i] += 1
        if not self.inflight or self.running < self.inflight:
            self._start(i)
        else:
            self.queue.append(i)

    def _start(self, i: int) -> None:
        self.running += 1
        self.dial(i, self.after[(self.offset + i) % len(self.after)])


class LeanDevice(LeanLink):
    """One probing device's connection: at most :attr:`LeanProber.PER_LINK` probes at once, the
    others queued."""

    __slots__ = ("channels", "connected", "prober", "queue")

    def __init__(self, prober: LeanProber, uri: WebSocketURI, identity: Identity) -> None:
        super().__init__(prober.loop, uri, identity, Role.DEVICE,
                         Hello(Role.DEVICE, identity.identity_public).encode())
        self.prober = prober
        self.connected: asyncio.Future[str] = prober.loop.create_future()  # "" or why it failed
        self.queue: collections.deque[int] = collections.deque()
        # channel → (host, the probe's deadline)
        self.channels: dict[int, tuple[int, asyncio.TimerHandle]] = {}

    def settled(self, ok: bool, why: str) -> None:
        if not self.connected.done():
            self.connected.set_result("" if ok else why)

    def lost(self) -> None:
        self.prober.error("a probing device's connection was lost")
        for channel in list(self.channels):
            self._failed(channel, "connection lost")

    def probe(self, h: int) -> None:
        if len(self.channels) < LeanProber.PER_LINK:
            self._open(h)
        else:
            self.queue.append(h)

    def _open(self, h: int) -> None:
        while True:  # random ids, as RelayLink's
            channel = self.prober.random.randint(1, 0xFFFFFFFF)
            if channel not in self.channels:
                break
        self.prober.opens += 1
        self.channels[channel] = (h, self.loop.call_later(LeanProber.TIMEOUT, self._failed, channel, "TimeoutError"))
        self.send(Open(channel, self.prober.host_ids[h]).encode())

    def received(self, message: bytes) -> None:
        if message[0] == DATA:
            channel = data_channel(message)
            entry = self.channels.pop(channel, None)
            if entry is None:
                return
            h, timer = entry
            timer.cancel()
            self.send(Close(channel).encode())
            if message[5:] == PROBE:
                self.prober.succeeded(h)
            else:
                self.prober.failed(h, "a wrong echo")
            self._next()
            return
        frame = decode_frame(message)
        if isinstance(frame, Opened) and frame.channel in self.channels:
            self.send(encode_data(frame.channel, PROBE))
        elif isinstance(frame, Close) and frame.channel in self.channels:
            code = frame.code
            self._failed(frame.channel, CloseCode(code).name if code in CloseCode._value2member_map_ else str(code),
                         answered=True)

    def _failed(self, channel: int, why: str, answered: bool = False) -> None:
        entry = self.channels.pop(channel, None)
        if entry is None:
            return
        h, timer = entry
        timer.cancel()
        if not answered:  # as RelayLink after its open timed out
            self.send(Close(channel, CloseCode.NORMAL, "open timed out").encode())
        self.prober.failed(h, why)
        self._next()

    def _next(self) -> None:
        while self.queue and len(self.channels) < LeanProber.PER_LINK:
            self._open(self.queue.popleft())


class LeanProber:
    """The probing devices of one process, one :class:`LeanDevice` per identity, on one relay node.
    ``probe(h)`` gets host ``h`` a channel, one message and its echo; a refusal or no echo within
    :attr:`TIMEOUT` is tried again :attr:`RETRY` s later (``once``: not tried again), as the
    RelayLink probes of part 3 did (then a 0.2 s sleep). 64 at once per link, not the RelayLink
    probes' 16: with every host back within a few seconds, 400 probes in flight left hosts found
    present waiting for a probe for 2 s (docs/benchmarks.md, session 17)."""

    PER_LINK = 64
    RETRY = 0.2
    TIMEOUT = 10.0

    def __init__(self, url: str, identities: list[Identity], host_ids: dict[int, str], deadline: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.random = random.Random()
        self.host_ids = host_ids
        self.deadline = deadline
        uri = relay_uri(url)
        self.links = [LeanDevice(self, uri, ident) for ident in identities]
        self.link_of = {h: self.links[k % len(self.links)] for k, h in enumerate(host_ids)}
        self.ok_at: dict[int, float] = {}
        self.once: dict[int, asyncio.Future[bool]] = {}
        self.all_ok = asyncio.Event()
        self.opens = self.failures = 0
        self.codes: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []

    async def connect(self) -> None:
        for link in self.links:
            await link.dial()
            why = await link.connected
            if why:
                raise RuntimeError(f"a probing device could not connect: {why}")

    def probe(self, h: int) -> None:
        self.link_of[h].probe(h)

    async def probe_once(self, h: int) -> bool:
        self.once[h] = done = self.loop.create_future()
        self.probe(h)
        return bool(await done)

    def succeeded(self, h: int) -> None:
        once = self.once.pop(h, None)
        if once is not None:
            once.set_result(True)
            return
        self.ok_at.setdefault(h, time.monotonic())
        if len(self.ok_at) == len(self.host_ids):
            self.all_ok.set()

    def failed(self, h: int, why: str) -> None:
        self.failures += 1
        self.codes[why] += 1
        once = self.once.pop(h, None)
        if once is not None:
            once.set_result(False)
        elif self.loop.time() < self.deadline:
            self.loop.call_later(self.RETRY, self.probe, h)

    def error(self, why: str) -> None:
        if len(self.errors) < 5:
            self.errors.append(why)
