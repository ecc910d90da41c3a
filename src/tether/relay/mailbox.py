"""The relay's mailbox: sealed blobs it holds for hosts that are away (ARCHITECTURE §8b).

Per host: its last allowlist (so that the relay still knows, while the host is offline, which
devices may read and write its mailbox), one snapshot slot per device (sealed by the host for
that device) and a first-in-first-out list of items (sealed by a device for the host). The relay
cannot open any of them: it stores ciphertext, sizes and times. Everything is in one SQLite file
(:class:`tether.sqlite.Database`), so the mailbox survives a restart of the relay.

Bounds (:class:`MailboxLimits`): a host's bytes in all, a device's queued items and bytes per
host, the whole file's bytes, and ages. A snapshot that does not fit pushes out the host's
oldest snapshots (a new one replaces them anyway); a queued item never pushes anything out:
it is refused with MAILBOX_FULL, so that nothing a person queued is dropped in silence.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tether.protocol.frames import (
    CloseCode,
    Frame,
    MailboxAck,
    MailboxDeposit,
    MailboxError,
    MailboxGet,
    MailboxItem,
    MailboxOk,
    MailboxQueue,
    MailboxSnapshot,
    MailboxTake,
    close_message,
)
from tether.relay.limits import TokenBucket
from tether.sqlite import Database

MIGRATIONS = [
    """
    CREATE TABLE hosts (
        host_id   TEXT PRIMARY KEY,
        allowlist BLOB NOT NULL,              -- the device identity keys, 32 bytes each
        seen_at   REAL NOT NULL               -- when the host last published it
    );
    CREATE TABLE snapshots (
        host_id      TEXT NOT NULL,
        device_key   BLOB NOT NULL,
        sealed       BLOB NOT NULL,
        deposited_at REAL NOT NULL,
        PRIMARY KEY (host_id, device_key)
    );
    CREATE TABLE items (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: the host acks by id
        host_id    TEXT NOT NULL,
        device_key BLOB NOT NULL,
        sealed     BLOB NOT NULL,
        queued_at  REAL NOT NULL
    );
    CREATE INDEX items_by_host ON items (host_id, id);
    """,
]

KEY_LEN = 32


@dataclass(frozen=True)
class MailboxLimits:
    #: Bytes one host may have held (snapshots and queued items).
    host_bytes: int = 4 << 20
    #: Items one device may have queued for one host, and their bytes.
    device_items: int = 64
    device_bytes: int = 1 << 20
    #: Bytes the whole mailbox may hold; over it nothing new is taken.
    total_bytes: int = 1 << 30
    #: A queued item the host has not taken after this long is dropped (seconds).
    item_ttl: float = 7 * 86400
    #: A host not seen for this long is forgotten with everything it had (seconds).
    host_ttl: float = 30 * 86400


class MailboxRefused(Exception):
    """A mailbox request the relay says no to (MAILBOX_ERROR): a code and a sentence for people."""

    def __init__(self, code: CloseCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    # The refusals every store makes, in the same words (this one, and a cluster's in Redis).

    @classmethod
    def not_allowed(cls) -> MailboxRefused:
        return cls(CloseCode.NOT_ALLOWED, "that device is not on this host's allowlist")

    @classmethod
    def snapshot_too_large(cls, size: int, limit: int) -> MailboxRefused:
        return cls(CloseCode.TOO_LARGE, f"a snapshot of {size} bytes is over this relay's {limit} bytes per host")

    @classmethod
    def host_full(cls) -> MailboxRefused:
        return cls(CloseCode.MAILBOX_FULL, "the items queued for this host fill its mailbox")

    @classmethod
    def no_mailbox_for(cls) -> MailboxRefused:
        """A device that may not queue for the host: it learns no more than that the host is away."""
        return cls(CloseCode.HOST_OFFLINE, "the host is offline and keeps no mailbox here for this device")

    @classmethod
    def item_too_large(cls, size: int, limit: int) -> MailboxRefused:
        return cls(CloseCode.TOO_LARGE, f"the item is {size} bytes, over this relay's {limit}; shorten it")

    @classmethod
    def device_full(cls, count: int) -> MailboxRefused:
        return cls(CloseCode.MAILBOX_FULL,
                   f"this device has {count} items waiting for the host, its limit here; wait until the host is back")

    @classmethod
    def queue_full(cls) -> MailboxRefused:
        return cls(CloseCode.MAILBOX_FULL,
                   "the items queued for this host fill its mailbox here; wait until the host is back")


@dataclass(frozen=True)
class Item:
    id: int
    device_key: bytes
    queued_at: float
    sealed: bytes


class Store(Protocol):
    """What the relay asks of a mailbox: :class:`Mailbox` (one relay, SQLite) or a cluster's
    (``cluster/mailbox.py``, Redis). Each method is atomic; refusals raise :class:`MailboxRefused`."""

    async def close(self) -> None: ...

    async def sweep(self) -> None: ...

    async def publish(self, host_id: str, keys: frozenset[bytes]) -> None: ...

    async def deposit(self, host_id: str, device_key: bytes, sealed: bytes) -> None: ...

    async def snapshot(self, host_id: str, device_key: bytes) -> tuple[float, bytes] | None: ...

    async def queue(self, host_id: str, device_key: bytes, sealed: bytes) -> Item: ...

    async def items(self, host_id: str) -> list[Item]: ...

    async def ack(self, host_id: str, ids: tuple[int, ...]) -> None: ...


class MailboxDatabase(Database):
    migrations = MIGRATIONS


class Mailbox:
    """The mailbox of one relay process. Create with :meth:`open`; each method is one transaction."""

    def __init__(self, db: MailboxDatabase, limits: MailboxLimits) -> None:
        self.db = db
        self.limits = limits
        # Each host's allowlist, as last published: read on every device request, so in memory.
        self.allowed: dict[str, frozenset[bytes]] = {}

    @classmethod
    async def open(cls, path: Path, limits: MailboxLimits | None = None) -> Mailbox:
        db = await MailboxDatabase.open(path)
        mailbox = cls(db, limits or MailboxLimits())
        await mailbox.sweep()
        rows = await db.run(lambda c: c.execute("SELECT host_id, allowlist FROM hosts").fetchall(), write=False)
        mailbox.allowed = {host: _keys(blob) for host, blob in rows}
        return mailbox

    async def close(self) -> None:
        await self.db.close()

    def may_use(self, host_id: str, device_key: bytes) -> bool:
        """Whether the device was on the host's allowlist when the host last published it."""
        return device_key in self.allowed.get(host_id, ())

    async def publish(self, host_id: str, keys: frozenset[bytes]) -> None:
        """The host's allowlist now: devices that left it lose their slot and their queued items
        (a revoked device's prompts are never delivered)."""
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO hosts (host_id, allowlist, seen_at) VALUES (?, ?, ?) ON CONFLICT (host_id)"
                " DO UPDATE SET allowlist = excluded.allowlist, seen_at = excluded.seen_at",
                (host_id, b"".join(sorted(keys)), time.time()),
            )
            for table in ("snapshots", "items"):
                held = {bytes(k) for (k,) in conn.execute(
                    f"SELECT DISTINCT device_key FROM {table} WHERE host_id = ?", (host_id,))}
                for gone in held - keys:
                    conn.execute(f"DELETE FROM {table} WHERE host_id = ? AND device_key = ?", (host_id, gone))

        self.allowed[host_id] = keys
        await self.db.run(write)

    async def deposit(self, host_id: str, device_key: bytes, sealed: bytes) -> None:
        """The host's snapshot for one device (empty: none any more)."""
        if not self.may_use(host_id, device_key):
            raise MailboxRefused.not_allowed()
        lim = self.limits

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM snapshots WHERE host_id = ? AND device_key = ?", (host_id, device_key))
            if not sealed:
                return
            if len(sealed) > lim.host_bytes:
                raise MailboxRefused.snapshot_too_large(len(sealed), lim.host_bytes)
            self._check_total(conn, len(sealed))
            if not _make_room(conn, host_id, len(sealed), lim.host_bytes):
                raise MailboxRefused.host_full()
            conn.execute("INSERT INTO snapshots VALUES (?, ?, ?, ?)", (host_id, device_key, sealed, time.time()))

        await self.db.run(write)

    async def snapshot(self, host_id: str, device_key: bytes) -> tuple[float, bytes] | None:
        """(when it was deposited, the sealed snapshot) the host left for this device, if any."""
        if not self.may_use(host_id, device_key):
            return None  # as for a host that left nothing: an unknown device learns nothing

        def read(conn: sqlite3.Connection) -> tuple[float, bytes] | None:
            row = conn.execute("SELECT deposited_at, sealed FROM snapshots WHERE host_id = ? AND device_key = ?",
                               (host_id, device_key)).fetchone()
            return (float(row[0]), bytes(row[1])) if row else None

        return await self.db.run(read, write=False)

    async def queue(self, host_id: str, device_key: bytes, sealed: bytes) -> Item:
        """Hold a device's sealed item for the host; its id and time."""
        if not self.may_use(host_id, device_key):
            raise MailboxRefused.no_mailbox_for()
        lim = self.limits
        if len(sealed) > lim.device_bytes:
            raise MailboxRefused.item_too_large(len(sealed), lim.device_bytes)

        def write(conn: sqlite3.Connection) -> Item:
            count, size = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(sealed)), 0) FROM items WHERE host_id = ? AND device_key = ?",
                (host_id, device_key)).fetchone()
            if count >= lim.device_items or size + len(sealed) > lim.device_bytes:
                raise MailboxRefused.device_full(count)
            if not _make_room(conn, host_id, len(sealed), lim.host_bytes):  # (what it freed is rolled back)
                raise MailboxRefused.queue_full()
            self._check_total(conn, len(sealed))
            now = time.time()
            cursor = conn.execute("INSERT INTO items (host_id, device_key, sealed, queued_at) VALUES (?, ?, ?, ?)",
                                  (host_id, device_key, sealed, now))
            assert cursor.lastrowid is not None
            return Item(cursor.lastrowid, device_key, now, sealed)

        return await self.db.run(write)

    async def items(self, host_id: str) -> list[Item]:
        """What devices queued for the host, oldest first."""
        def read(conn: sqlite3.Connection) -> list[Item]:
            rows = conn.execute("SELECT id, device_key, queued_at, sealed FROM items WHERE host_id = ? ORDER BY id",
                                (host_id,)).fetchall()
            return [Item(int(r[0]), bytes(r[1]), float(r[2]), bytes(r[3])) for r in rows]

        return await self.db.run(read, write=False)

    async def ack(self, host_id: str, ids: tuple[int, ...]) -> None:
        """The host is done with these items (its own only)."""
        await self.db.run(lambda conn: conn.executemany(
            "DELETE FROM items WHERE host_id = ? AND id = ?", [(host_id, i) for i in ids]))

    async def sweep(self) -> None:
        """Drop what is past its age: items never taken, hosts long gone."""
        lim, now = self.limits, time.time()

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM items WHERE queued_at < ?", (now - lim.item_ttl,))
            gone = [h for (h,) in conn.execute("SELECT host_id FROM hosts WHERE seen_at < ?", (now - lim.host_ttl,))]
            for host_id in gone:
                for table in ("hosts", "snapshots", "items"):
                    conn.execute(f"DELETE FROM {table} WHERE host_id = ?", (host_id,))
                self.allowed.pop(host_id, None)

        await self.db.run(write)

    def _check_total(self, conn: sqlite3.Connection, adding: int) -> None:
        # The pages in use, not a scan of every blob: what the bound is about is the disk.
        used = conn.execute("SELECT (page_count - freelist_count) * page_size FROM pragma_page_count,"
                            " pragma_freelist_count, pragma_page_size").fetchone()[0]
        if used + adding > self.limits.total_bytes:
            raise MailboxRefused(CloseCode.MAILBOX_FULL, "this relay's mailbox is full; try again later")


def _make_room(conn: sqlite3.Connection, host_id: str, size: int, limit: int) -> bool:
    """Drop the host's oldest snapshots (each is replaced by the next anyway) until ``size`` more
    bytes fit in its ``limit``; False when they do not even with none left (its queued items, which
    are never dropped, fill it)."""
    while _host_bytes(conn, host_id) + size > limit:
        oldest = conn.execute("SELECT rowid FROM snapshots WHERE host_id = ? ORDER BY deposited_at LIMIT 1",
                              (host_id,)).fetchone()
        if oldest is None:
            return False
        conn.execute("DELETE FROM snapshots WHERE rowid = ?", oldest)
    return True


def _host_bytes(conn: sqlite3.Connection, host_id: str) -> int:
    return int(sum(conn.execute(f"SELECT COALESCE(SUM(LENGTH(sealed)), 0) FROM {table} WHERE host_id = ?",
                                (host_id,)).fetchone()[0] for table in ("snapshots", "items")))


def _keys(blob: bytes) -> frozenset[bytes]:
    return frozenset(blob[i : i + KEY_LEN] for i in range(0, len(blob), KEY_LEN))


# -- requests ---------------------------------------------------------------------------------------

# Mailbox requests of one connection waiting or running at once; more are refused (RATE_LIMITED).
MAX_PENDING = 16
# Writes (deposits, queued items, acks) per connection per minute, in a bucket of that size.
WRITES_PER_MINUTE = 600

HostRequest = MailboxDeposit | MailboxTake | MailboxAck
DeviceRequest = MailboxGet | MailboxQueue


class Lane:
    """One connection's mailbox requests, answered one at a time in the order they came (an
    allowlist the host published is stored before the TAKE it sent next is answered)."""

    __slots__ = ("allowlist", "latest", "lock", "pending", "taking", "writes")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.pending = 0
        self.writes = TokenBucket(WRITES_PER_MINUTE / 60.0, WRITES_PER_MINUTE)
        self.allowlist: frozenset[bytes] | None = None  # a host's, waiting to be stored
        self.latest: frozenset[bytes] | None = None  # the last one it published
        self.taking = False  # a host that sent TAKE: items queued later are sent to it at once

    def admit(self, frame: HostRequest | DeviceRequest) -> MailboxError | None:
        """Refuse a request over this connection's share, else count it as pending."""
        if self.pending >= MAX_PENDING or (
            not isinstance(frame, MailboxGet | MailboxTake) and not self.writes.try_take()
        ):
            return MailboxError(frame.req, CloseCode.RATE_LIMITED, close_message(CloseCode.RATE_LIMITED))
        self.pending += 1
        return None


async def answer_host(mailbox: Store, lane: Lane, host_id: str, frame: HostRequest) -> list[Frame]:
    """The relay's answer to a host's mailbox request (its own mailbox only)."""
    match frame:
        case MailboxDeposit(req=req, device_identity=device, sealed=sealed):
            await mailbox.deposit(host_id, device, sealed)
            return [MailboxOk(req)]
        case MailboxAck(req=req, items=ids):
            await mailbox.ack(host_id, ids)
            return [MailboxOk(req)]
        case MailboxTake(req=req):
            lane.taking = True
            items = await mailbox.items(host_id)
            return [*(as_frame(req, i) for i in items), MailboxOk(req, len(items))]


async def answer_device(mailbox: Store, device_key: bytes, frame: DeviceRequest) -> tuple[list[Frame], Item | None]:
    """The relay's answer to a device's mailbox request, and the item it queued (if it did)."""
    match frame:
        case MailboxGet(req=req, host_id=host_id):
            held = await mailbox.snapshot(host_id, device_key)
            at, sealed = held if held is not None else (0.0, b"")
            return [MailboxSnapshot(req, int(at * 1000), sealed)], None
        case MailboxQueue(req=req, host_id=host_id, sealed=sealed):
            item = await mailbox.queue(host_id, device_key, sealed)
            return [MailboxOk(req, item.id)], item


def as_frame(req: int, item: Item) -> MailboxItem:
    return MailboxItem(req, item.id, item.device_key, int(item.queued_at * 1000), item.sealed)
