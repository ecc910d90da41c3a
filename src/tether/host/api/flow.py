"""Flow control of event streams: how much one subscription may have unacknowledged, and
notifications of a bounded size.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import msgspec

MAX_SUBSCRIPTIONS = 16
# Flow control of event streams: at most WINDOW bytes of notifications unacknowledged per
# subscription, each notification about NOTIFICATION_BYTES. Together they stay under the relay's
# per-channel queue (1 MiB), so a burst never gets a healthy reader's channel closed as too slow,
# and a slow reader costs the host nothing: the subscription just waits, holding only a cursor.
WINDOW = 512 * 1024
NOTIFICATION_BYTES = 128 * 1024
_event_encoder = msgspec.json.Encoder()


class Window:
    """Bytes sent on one subscription and not yet acknowledged by the client."""

    def __init__(self) -> None:
        self.sizes: collections.deque[int] = collections.deque()
        self.unacked = 0
        self.acked = asyncio.Event()

    async def wait_for_room(self) -> None:
        while self.unacked > WINDOW:
            self.acked.clear()
            await self.acked.wait()

    def sent(self, size: int) -> None:
        self.sizes.append(size)
        self.unacked += size

    def ack(self) -> None:
        if self.sizes:
            self.unacked -= self.sizes.popleft()
        self.acked.set()


def chunk_events(events: list[dict[str, Any]], limit: int = NOTIFICATION_BYTES) -> list[list[dict[str, Any]]]:
    """Split events (or sessions) into notifications of about ``limit`` bytes (one never splits)."""
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for event in events:
        n = len(_event_encoder.encode(event))
        if chunks[-1] and size + n > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(event)
        size += n
    return chunks
