"""What one relay connection may cost: sizes, rates and queue bounds (ARCHITECTURE §2, §9).

Every number is a knob on :class:`RelayLimits`; the defaults are generous enough for a loopback
benchmark and still bound memory per connection.
"""

from __future__ import annotations

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
    max_allowlist: int = 10_000
    max_offers: int = 64
    max_watch: int = 1024
    max_channels_per_connection: int = 16_384
    #: WebSocket keepalive: a dead peer is noticed within ping_interval + ping_timeout.
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    close_timeout: float = 5.0


class TokenBucket:
    """A classic token bucket; ``debit`` may go into debt and says how long to wait it off."""

    __slots__ = ("_clock", "_last", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._clock = clock
        self._last = clock()

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
