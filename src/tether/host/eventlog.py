"""The host's append-only event log (ARCHITECTURE §6).

Every change on the host is an :class:`Event` with a host-wide, gap-free ``seq``. The seq is
assigned inside the SQLite transaction that stores the event (one worker thread, one writer), and
the session projection is updated in that same transaction, so the log and the projection never
disagree.

Readers use a :class:`Subscription`: a cursor, not a queue. Each step reads what is after the
cursor (from an in-memory ring of recent events, else from SQLite) and coalesces streaming output,
so a slow reader costs no memory on the host and simply receives fewer, bigger events.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from tether.host import projection
from tether.host.db import Database
from tether.host.projection import EventType

# A coalesced output event never grows past this many characters of text.
# Small enough that one event, JSON-escaped, stays well under the relay's per-channel queue.
COALESCE_MAX_CHARS = 64 * 1024


@dataclass(frozen=True)
class Event:
    seq: int
    session: str | None
    type: str
    ts: float
    data: dict[str, Any]
    cid: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "seq": self.seq,
            "session": self.session,
            "type": self.type,
            "ts": self.ts,
            "data": self.data,
        }
        if self.cid is not None:
            wire["cid"] = self.cid
        return wire


@dataclass(frozen=True)
class Batch:
    """Events after a subscription's cursor, coalesced; ``cursor`` is where it now stands."""

    events: list[Event]
    cursor: int

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)


@dataclass(frozen=True)
class Snapshot:
    """The projection of every session (with scrollback) as of ``seq``; the tail follows."""

    seq: int
    sessions: list[dict[str, Any]] = field(default_factory=list)


AppendItem = tuple[str | None, str, dict[str, Any], str | None]


class EventLog:
    """Append and read events; create with :meth:`open`. Use from the loop that opened it."""

    def __init__(self, db: Database, ring_size: int, head: int, recent: list[Event]) -> None:
        self.db = db
        self.ring_size = max(1, ring_size)
        self.head = head
        # Recent events, contiguous, ending at head. Trimmed to ring_size in amortised chunks so
        # an append is O(1) and a read from the ring is a list slice.
        self._ring: list[Event] = recent
        # Appends committed but not yet visible because an earlier seq is still on its way back
        # to the loop: head only ever advances over a contiguous run of seqs.
        self._pending: dict[int, Event] = {}
        self._changed = asyncio.Event()
        self._closed = False

    @classmethod
    async def open(cls, db: Database, *, ring_size: int = 8192) -> EventLog:
        def load(conn: sqlite3.Connection) -> tuple[int, list[Event]]:
            head = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])
            return head, _select(conn, head - ring_size, head, ring_size)

        head, recent = await db.run(load, write=False)
        return cls(db, ring_size, head, recent)

    # -- writing -------------------------------------------------------------------------

    async def append(self, session: str | None, type: str, data: dict[str, Any], cid: str | None = None) -> Event:
        return (await self.append_many([(session, type, data, cid)]))[0]

    async def append_many(self, items: list[AppendItem]) -> list[Event]:
        """Append events in one transaction (all or none), applying the projection with them."""
        if not items:
            return []
        if self._closed:
            raise RuntimeError("the event log is closed")

        def write(conn: sqlite3.Connection) -> list[Event]:
            seq = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])
            ts = time.time()
            events: list[Event] = []
            rows = []
            for session, type_, data, cid in items:
                seq += 1
                # A copy: a caller that reuses its dict must not change what the ring holds.
                ev = Event(seq, session, str(type_), ts, dict(data), cid)
                events.append(ev)
                rows.append((seq, session, ev.type, ts, json.dumps(data, separators=(",", ":")), cid))
            conn.executemany("INSERT INTO events (seq, session, type, ts, data, cid) VALUES (?, ?, ?, ?, ?, ?)", rows)
            projection.apply_many(conn, events)
            return events

        events = await self.db.run(write)
        self._publish(events)
        return events

    def _publish(self, events: list[Event]) -> None:
        for ev in events:
            self._pending[ev.seq] = ev
        advanced = False
        while (nxt := self._pending.pop(self.head + 1, None)) is not None:
            self._ring.append(nxt)
            self.head = nxt.seq
            advanced = True
        if len(self._ring) > 2 * self.ring_size:
            del self._ring[: len(self._ring) - self.ring_size]
        if advanced:
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def close(self) -> None:
        """Stop accepting appends and end every subscription (after what it already has)."""
        self._closed = True
        self._wake()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- reading -------------------------------------------------------------------------

    async def read(self, since: int, limit: int) -> list[Event]:
        """Events with seq > since (at most ``limit``, ascending, never beyond head)."""
        events, _ = await self._read(since, limit, None)
        return events

    async def _read(self, since: int, limit: int, session: str | None) -> tuple[list[Event], int]:
        """Up to ``limit`` events after ``since`` (of ``session`` only, when given), and the seq
        up to which the log was scanned (the new cursor)."""
        head = self.head
        if since >= head or limit <= 0:
            return [], since
        ring = self._ring
        if ring and since + 1 >= ring[0].seq:
            start = since + 1 - ring[0].seq
            if session is None:
                chunk = ring[start : start + limit]
                return chunk, chunk[-1].seq
            out: list[Event] = []
            upto = head
            for ev in ring[start : head - ring[0].seq + 1]:
                if ev.session == session:
                    out.append(ev)
                    if len(out) == limit:
                        upto = ev.seq
                        break
            return out, upto

        def select(conn: sqlite3.Connection) -> list[Event]:
            return _select(conn, since, head, limit, session)

        events = await self.db.run(select, write=False)
        if session is None or len(events) == limit:
            return events, events[-1].seq if events else head
        return events, head

    async def snapshot(self, session: str | None = None) -> Snapshot:
        """The projection (with scrollback) and the seq it is exact at."""

        def take(conn: sqlite3.Connection) -> Snapshot:
            seq = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])
            if session is None:
                sessions = projection.list_sessions(conn, with_scrollback=True)
            else:
                one = projection.get_session(conn, session, with_scrollback=True)
                sessions = [one] if one is not None else []
            return Snapshot(seq, sessions)

        return await self.db.run(take, write=False)

    def subscribe(
        self,
        since: int,
        *,
        session: str | None = None,
        batch: int = 512,
        snapshot_after: int = 50_000,
    ) -> Subscription:
        if since < 0:
            raise ValueError("since must be >= 0")
        return Subscription(self, since, session=session, batch=batch, snapshot_after=snapshot_after)

    async def wait_for(self, seq: int) -> None:
        """Return once head >= seq (or the log is closed)."""
        while self.head < seq and not self._closed:
            await self._changed.wait()


class Subscription:
    """An async iterator of :class:`Batch` (first maybe a :class:`Snapshot`) after a cursor.

    It holds only a cursor: nothing is queued for a subscriber that does not read, and one that
    reads late gets what accumulated, coalesced. Ends when the log is closed or on :meth:`close`.
    """

    def __init__(self, log: EventLog, since: int, *, session: str | None, batch: int, snapshot_after: int) -> None:
        self.log = log
        self.cursor = since
        self.session = session
        self.batch = max(1, batch)
        self.snapshot_after = snapshot_after
        self._first = True
        self._closed = False

    def __aiter__(self) -> AsyncIterator[Batch | Snapshot]:
        return self

    def close(self) -> None:
        self._closed = True

    async def __anext__(self) -> Batch | Snapshot:
        log = self.log
        if self._first:
            self._first = False
            # A cursor past the head belongs to another history (a reset host): resync too.
            if log.head - self.cursor > self.snapshot_after or self.cursor > log.head:
                snap = await log.snapshot(self.session)
                self.cursor = snap.seq
                return snap
        while True:
            if self._closed:
                raise StopAsyncIteration
            if log.head <= self.cursor:
                if log.closed:
                    raise StopAsyncIteration
                waiter = log._changed
                await waiter.wait()
                continue
            events, upto = await log._read(self.cursor, self.batch, self.session)
            self.cursor = max(self.cursor, upto)
            if events:
                return Batch(coalesce(events), self.cursor)


_STREAMED = frozenset({EventType.SESSION_OUTPUT, EventType.ITEM_DELTA})


def coalesce(events: list[Event], max_chars: int = COALESCE_MAX_CHARS) -> list[Event]:
    """Merge consecutive streamed-text events (``session.output`` of one session and stream, or
    ``item.delta`` of one item and stream) into one event: text concatenated, ``seq``/``ts`` of
    the last, ``data.first_seq`` of the first."""
    out: list[Event] = []
    run: list[Event] = []
    run_chars = 0

    def flush() -> None:
        if not run:
            return
        if len(run) == 1:
            out.append(run[0])
        else:
            first, last = run[0], run[-1]
            data = dict(last.data)
            data["data"] = "".join(str(e.data.get("data", "")) for e in run)
            data["first_seq"] = first.data.get("first_seq", first.seq)
            out.append(Event(last.seq, last.session, last.type, last.ts, data, None))
        run.clear()

    for ev in events:
        if ev.type not in _STREAMED:
            flush()
            run_chars = 0
            out.append(ev)
            continue
        text_len = len(str(ev.data.get("data", "")))
        if run and (
            run[-1].session != ev.session
            or run[-1].type != ev.type
            or run[-1].data.get("item") != ev.data.get("item")
            or run[-1].data.get("stream") != ev.data.get("stream")
            or run_chars + text_len > max_chars
        ):
            flush()
            run_chars = 0
        run.append(ev)
        run_chars += text_len
    flush()
    return out


def _select(conn: sqlite3.Connection, since: int, upto: int, limit: int, session: str | None = None) -> list[Event]:
    if session is None:
        rows = conn.execute(
            "SELECT seq, session, type, ts, data, cid FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (since, upto, limit),
        )
    else:
        rows = conn.execute(
            "SELECT seq, session, type, ts, data, cid FROM events WHERE session = ? AND seq > ?"
            " AND seq <= ? ORDER BY seq LIMIT ?",
            (session, since, upto, limit),
        )
    return [Event(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]
