"""What the relay's mailbox holds, once opened (ARCHITECTURE §8b): a host's snapshot for one
device, and an item a device queued for its host. Both travel sealed (:mod:`tether.crypto.seal`)
with :func:`context` as the Noise prologue, so a blob sealed for one direction or one host does not
open as another.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

SNAPSHOT: Final = b"S"  # host → device
ITEM: Final = b"I"  # device → host

#: What a device may queue for a host that is away: a prompt, an approval, an answer.
QueueableMethod = Literal["sessions.send", "sessions.approve", "sessions.answer"]


def context(kind: bytes, host_id: str) -> bytes:
    """The prologue a sealed mailbox blob of ``kind`` for or from ``host_id`` is bound to."""
    return b"tether-mailbox/1\x00" + kind + host_id.encode("ascii")


class Snapshot(msgspec.Struct, frozen=True):
    """What a host last told one device: its sessions (as ``sessions.list`` gives them, the ones
    the device may see) and the latest events of each live one, at ``taken_at``."""

    host_id: str
    host_name: str
    taken_at: float  # unix seconds
    head: int  # the log's seq when it was taken
    sessions: list[dict[str, Any]]
    events: dict[str, list[dict[str, Any]]]  # session id → its latest events (wire form), oldest first
    truncated: bool = False  # events (or sessions) were left out to fit one sealed message


class Queued(msgspec.Struct, frozen=True):
    """One request a device queued while its host was away; the host applies it once, in order.
    ``n`` counts the device's queued items for this host (1, 2, …): a replayed or reordered one
    is refused; ``params`` carry a ``cid``, as every command does."""

    host_id: str
    n: int
    queued_at: float  # unix seconds, the device's clock
    method: QueueableMethod
    params: dict[str, Any]


def encode(value: Snapshot | Queued) -> bytes:
    return msgspec.json.encode(value)


def decode_snapshot(data: bytes) -> Snapshot:
    return msgspec.json.decode(data, type=Snapshot)


def decode_queued(data: bytes) -> Queued:
    return msgspec.json.decode(data, type=Queued)
