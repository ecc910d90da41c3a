"""What relay nodes send each other through Redis: batches of records (one wire format).

One batch is one Redis message, from one node to one other::

    batch:  version u8 (2) | sender's node id str8 | epoch u64 | sequence u64 | record*
    record: kind u8 | handle u64 | body length u32 | body

``epoch`` is drawn at random when the sender starts; ``sequence`` counts the sender's batches to
that receiver from 1. A receiver that sees a number skipped knows batches were lost (Redis drops
what it cannot deliver, silently to the sender) and closes the channels they may have carried.

``handle`` names a device connection on the node where that device is connected (the node that
made it up); records about a host name it by id in their body. Bodies carry relay frames as they
are on the wire (``protocol/frames.py``), so each frame is checked by the one codec there.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from tether.errors import TetherError

VERSION = 2
MAX_NODE_ID = 64
_RECORD = struct.Struct(">BQI")
_COUNTERS = struct.Struct(">QQ")
#: a batch's number, after the prefix (``batch_prefix``)
NUMBER = struct.Struct(">Q")
KEY_LEN = 32


class BusError(TetherError):
    """A malformed batch from another node. The only exception :func:`decode_batch` raises."""

    code = "cluster_bus"


class Kind(IntEnum):
    # device node → host node: body = device identity key [32] + the device's OPEN frame
    OPEN = 1
    # device node → host node: body = a DATA or CLOSE frame the device sent on a channel there
    FROM_DEVICE = 2
    # host node → device node: body = an OPENED, CLOSE or DATA frame for the device
    TO_DEVICE = 3
    # device node → host node: the device's connection ended (its channels there close); no body
    DEVICE_GONE = 4
    # host node → device node: close the device's connection: body = code u16 + message (UTF-8)
    FAIL_DEVICE = 5
    # new host node → old host node: a newer connection of this host took over; body = host id
    TAKEOVER = 6
    # host node → every node: these hosts connected, left or changed their allowlists (watchers
    # of them elsewhere look again); body = host ids, separated by spaces
    HOST_CHANGED = 7
    # device node → host node: a device queued an item in the cluster's mailbox for a host
    # connected there (sent to it at once if it has taken its items); body = host id, a space,
    # the MAILBOX_ITEM frame
    MAILBOX_ITEM = 8


@dataclass(frozen=True, slots=True)
class Record:
    kind: Kind
    handle: int
    body: bytes

    def encode(self) -> bytes:
        if not 0 <= self.handle <= 0xFFFF_FFFF_FFFF_FFFF:
            raise BusError(f"handle {self.handle} does not fit in 64 bits")
        return _RECORD.pack(self.kind, self.handle, len(self.body)) + self.body


def check_node_id(node_id: str) -> str:
    """``node_id`` if it can name a node (printable ASCII without spaces, 1–64 characters)."""
    if not 0 < len(node_id) <= MAX_NODE_ID or not node_id.isascii() or not node_id.isprintable() or " " in node_id:
        raise BusError(f"a node id is 1 to {MAX_NODE_ID} printable ASCII characters without spaces, not {node_id!r}")
    return node_id


@dataclass(frozen=True, slots=True)
class Batch:
    sender: str
    epoch: int
    sequence: int
    records: list[Record]


def batch_prefix(sender: str, epoch: int) -> bytes:
    """What every batch from ``sender`` in ``epoch`` starts with; its number follows (``NUMBER``)."""
    raw = check_node_id(sender).encode("ascii")
    return bytes([VERSION, len(raw)]) + raw + NUMBER.pack(epoch)


def batch_head(sender: str, epoch: int, sequence: int) -> bytes:
    """What a batch from ``sender`` starts with; records follow, each ``Record.encode()``."""
    return batch_prefix(sender, epoch) + NUMBER.pack(sequence)


def decode_batch(data: bytes) -> Batch:
    """One batch; :class:`BusError` on anything malformed."""
    if len(data) < 2:
        raise BusError("batch too short")
    if data[0] != VERSION:
        raise BusError(f"batch version {data[0]}, this node speaks {VERSION}: run one tether version on every node")
    end = 2 + data[1]
    if end + _COUNTERS.size > len(data):
        raise BusError("batch too short")
    try:
        sender = check_node_id(data[2:end].decode("ascii"))
    except UnicodeDecodeError:
        raise BusError("a node id is ASCII") from None
    epoch, sequence = _COUNTERS.unpack_from(data, end)
    records = []
    pos = end + _COUNTERS.size
    size = len(data)
    while pos < size:
        if pos + _RECORD.size > size:
            raise BusError("record too short")
        kind, handle, length = _RECORD.unpack_from(data, pos)
        pos += _RECORD.size
        if pos + length > size:
            raise BusError("record body runs past the batch")
        try:
            records.append(Record(Kind(kind), handle, data[pos:pos + length]))
        except ValueError:
            raise BusError(f"unknown record kind {kind}") from None
        pos += length
    return Batch(sender, epoch, sequence, records)
