"""What one relay connection may cost: sizes, rates and queue bounds (ARCHITECTURE §2, §9).

Every number is a knob on :class:`RelayLimits`; the defaults bound memory per connection and
per source address, and are generous enough for a carrier NAT. The loopback benchmark opens
10,000 connections from 127.0.0.1, so it runs the relay with ``exempt_loopback``.
"""

from __future__ import annotations

import functools
import ipaddress
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RelayLimits:
    #: Largest WebSocket message accepted; a Noise message is at most 65,535 bytes, plus a header.
    max_frame_bytes: int = 70_000
    #: Token bucket on frames read from one connection. When it is empty the relay stops reading
    #: that socket until tokens return (TCP backpressure); data frames are never dropped.
    frames_per_second: float = 100_000
    frames_burst: int = 200_000
    #: OPENs per connection per minute (bucket of this size refilled over a minute); over it, the
    #: OPEN is refused with RATE_LIMITED.
    opens_per_minute: int = 600
    #: Bytes queued towards one receiver for one channel; over it the channel is closed on both
    #: sides with TOO_SLOW (never grown without bound, never silently thinned). Bytes count until
    #: the receiver's socket has taken them (the writer's transport buffer counts too).
    channel_queue_bytes: int = 1 << 20
    #: How long a sender waits for a receiver's channel queue to drain below the bound before the
    #: channel is closed. 0 (the default) never blocks a sender's read loop: one slow receiver
    #: cannot stall the sender's other channels. A bulk-transfer benchmark may raise it to get
    #: backpressure instead of TOO_SLOW.
    slow_receiver_grace: float = 0.0
    #: Bytes queued towards one connection in all; over it the connection is closed.
    connection_queue_bytes: int = 8 << 20
    #: Seconds from TCP connect to a verified AUTH.
    auth_timeout: float = 10.0
    #: Seconds from TCP connect to a completed WebSocket upgrade: a slow-loris client that never
    #: finishes its HTTP request is dropped then (websockets' ``open_timeout``).
    handshake_timeout: float = 10.0
    #: A device connection with no channel and no watched host that sends nothing for this many
    #: seconds is closed with IDLE_TIMEOUT (checked every quarter of it, at most every 30 s).
    #: None: never. Hosts are never idle-closed: waiting for devices is their job.
    idle_timeout: float | None = 300.0
    #: Connections at once from one source address (an IPv4 address, or an IPv6 /64: one
    #: subscriber's share), counted from TCP accept to close, WebSocket or not; over it the
    #: request is answered HTTP 429. Generous because a carrier NAT puts many phones behind one
    #: address. 0: no limit.
    max_connections_per_ip: int = 256
    #: New connections from one source address: a token bucket of this burst, refilled at this
    #: rate; an empty bucket means HTTP 429. A rate of 0: no limit.
    connections_per_ip_per_second: float = 20.0
    connections_per_ip_burst: int = 256
    #: Loopback addresses skip the per-address limits. Never the default: only for a benchmark
    #: on 127.0.0.1 (``tether relay --exempt-loopback``).
    exempt_loopback: bool = False
    #: Behind a reverse proxy on this machine, a connection from a loopback address is counted
    #: against the last address of its X-Forwarded-For header (the client the proxy saw), not
    #: against the proxy. Only set it when the relay's port is reachable from loopback alone.
    trust_forwarded_for: bool = False
    #: Networks of reverse proxies on other machines (a cluster's load balancer) whose connections
    #: are counted like a loopback proxy's with ``trust_forwarded_for``: against the last
    #: X-Forwarded-For address. Only networks nobody else can send from.
    trusted_proxies: tuple[str, ...] = ()
    #: Authenticated connections at once with one device identity key; over it the new one is
    #: refused with TOO_MANY_CONNECTIONS. A host id has one connection: a second replaces it.
    max_connections_per_device: int = 8
    #: Channels open at once with one device identity key, over all its connections and hosts;
    #: over it OPEN is refused with TOO_MANY_CHANNELS. Well below a host's
    #: ``max_channels_per_connection`` so that one device at its cap leaves room for the others.
    max_channels_per_device: int = 256
    #: Channels open at once on one host through one pairing offer (by devices not on the
    #: allowlist). Pairing takes one; a link holder could otherwise fill the host with fresh keys.
    max_channels_per_offer: int = 8
    #: Sockets open at once in the whole relay, counted from TCP accept to close; over it the
    #: connection is answered HTTP 503 at once. None: derived at start from the open-files limit
    #: (:func:`connection_cap`), so the relay never runs out of descriptors. 0: no limit.
    max_connections: int | None = None
    max_allowlist: int = 10_000
    max_offers: int = 64
    max_watch: int = 1024
    max_channels_per_connection: int = 16_384
    #: WebSocket keepalive (keepalive.py): a peer that answers nothing is dropped ping_interval +
    #: ping_timeout after it last answered one.
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    close_timeout: float = 5.0


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (every socket is a descriptor; the soft
    limit is often 1,024). Returns (before, after); after == before when it cannot be raised."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # macOS reports an unlimited hard limit but refuses a soft limit above its kernel's cap.
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, target


def connection_cap(open_files: int) -> tuple[int, int]:
    """(connections at once, accept batch) for a process that may hold ``open_files`` descriptors.

    A connection over the cap is still accepted (it takes a descriptor until it has its 503),
    and asyncio accepts up to a batch per listening socket per loop pass; such a socket lives
    about four passes. The headroom covers that, plus the process's own files; were it too small,
    accept() would fail with EMFILE, and Python 3.11's loop logs that a hundred times a pass.
    """
    headroom = max(64, open_files // 10)
    batch = max(8, min(100, headroom // 6))
    return max(1, open_files - headroom), batch


class SocketCount:
    """Sockets open at once in the whole relay, against ``cap`` (0: no limit)."""

    __slots__ = ("cap", "open")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open = 0

    def add(self) -> bool:
        """Count one more socket; False when it is over the cap (it still counts until removed)."""
        self.open += 1
        return not self.cap or self.open <= self.cap

    def remove(self) -> None:
        self.open -= 1


class TokenBucket:
    """A classic token bucket; ``debit`` may go into debt and says how long to wait it off."""

    __slots__ = ("_clock", "_last", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._clock = clock
        self._last = clock()

    @property
    def last(self) -> float:
        """When tokens were last taken (or the bucket made): the relay's idle clock."""
        return self._last

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = now

    def debit(self, n: float = 1) -> float:
        """Take ``n`` tokens; return the seconds to wait before the balance is back to zero."""
        self._refill()
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def try_take(self, n: float = 1) -> bool:
        """Take ``n`` tokens if there are that many."""
        self._refill()
        if self.tokens < n:
            return False
        self.tokens -= n
        return True


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_loopback(host: str) -> bool:
    ip = _ip(host)
    return ip is not None and ip.is_loopback


def is_trusted_proxy(host: str, limits: RelayLimits) -> bool:
    """Whether ``host`` is a reverse proxy whose X-Forwarded-For says who the client is."""
    ip = _ip(host)
    if ip is None:
        return False
    if limits.trust_forwarded_for and ip.is_loopback:
        return True
    return any(ip in net for net in _networks(limits.trusted_proxies))


@functools.lru_cache(maxsize=16)
def _networks(texts: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(text, strict=False) for text in texts)


def address_key(host: str, limits: RelayLimits) -> str | None:
    """What per-address limits count a peer as, or None when they do not apply to it.

    IPv6 peers count by /64: one subscriber usually gets a whole /64, so counting single
    addresses would let one client take 2**64 shares. Unix sockets and loopback (only when
    ``exempt_loopback``) are not counted.
    """
    ip = _ip(host)
    if ip is None:
        return None
    if limits.exempt_loopback and ip.is_loopback:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class _Address:
    __slots__ = ("connections", "last", "tokens")

    def __init__(self, tokens: float, now: float) -> None:
        self.connections = 0
        self.tokens = tokens
        self.last = now


class AddressTable:
    """Connections at once and new connections per second, per source address.

    One small entry per address with a live connection or a recent burst, never per
    connection. Entries with no connection and a full bucket are dropped in a sweep that runs
    when the table has doubled since the last one (amortized O(1) per connection).
    """

    def __init__(self, limits: RelayLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._clock = clock
        self._table: dict[str, _Address] = {}
        self._sweep_at = 1024

    def __len__(self) -> int:
        return len(self._table)

    def connections(self, key: str) -> int:
        entry = self._table.get(key)
        return 0 if entry is None else entry.connections

    def open(self, key: str) -> str | None:
        """Count a new connection from ``key``. Returns why it must be refused, or None.

        A refused connection still counts until :meth:`close`: it holds a socket too.
        """
        lim = self._limits
        now = self._clock()
        table = self._table
        entry = table.get(key)
        if entry is None:
            if len(table) >= self._sweep_at:
                self._sweep(now)
            entry = table[key] = _Address(lim.connections_per_ip_burst, now)
        entry.connections += 1
        cap = lim.max_connections_per_ip
        if cap and entry.connections > cap:
            return f"too many connections from {key}: at most {cap} at once; close some and retry"
        rate = lim.connections_per_ip_per_second
        if rate > 0:
            entry.tokens = min(lim.connections_per_ip_burst, entry.tokens + (now - entry.last) * rate)
            entry.last = now
            if entry.tokens < 1:
                return f"too many new connections from {key}; retry in a few seconds"
            entry.tokens -= 1
        return None

    def close(self, key: str) -> None:
        entry = self._table.get(key)
        if entry is not None and entry.connections > 0:
            entry.connections -= 1

    def _sweep(self, now: float) -> None:
        lim = self._limits
        rate, burst = lim.connections_per_ip_per_second, lim.connections_per_ip_burst
        for key, entry in list(self._table.items()):
            full = rate <= 0 or entry.tokens + (now - entry.last) * rate >= burst
            if entry.connections <= 0 and full:
                del self._table[key]
        self._sweep_at = max(1024, 2 * len(self._table))
