"""The host's append-only event log (ARCHITECTURE §6).

Every change on the host is an :class:`Event` with a host-wide, gap-free ``seq``. The seq is
assigned inside the SQLite transaction that stores the event (one worker thread, one writer), and
the session projection is updated in that same transaction, so the log and the projection never
disagree.

Readers use a :class:`Subscription`: a cursor, not a queue. Each step reads what is after the
cursor (from an in-memory ring of recent events, else from SQLite) and coalesces streaming output,
so a slow reader costs no memory on the host and simply receives fewer, bigger events. A step
reads a bounded amount (events or one page of a snapshot), never the whole log or the whole state.

Retention (:meth:`EventLog.forget`) drops old events; the seq of the newest dropped one is the log's
``floor``. Events after the floor are all there; a reader whose cursor is below it gets a snapshot.
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
from tether.host.event import Event as Event  # re-exported: the log's readers take it from here
from tether.protocol.events import EventType, check_data

# A coalesced output event never grows past this many characters of text.
# Small enough that one event, JSON-escaped, stays well under the relay's per-channel queue.
COALESCE_MAX_CHARS = 64 * 1024
# One step of a subscription reads at most this much stored event data (and one snapshot page about
# this many characters): what a subscriber waiting for its client can hold at most. An output event
# is up to 64 Ki characters, so 512 of them unbounded were 32 MiB per subscription.
STEP_BYTES = 256 * 1024
SNAPSHOT_PAGE_CHARS = 128 * 1024
# Events retention may drop when the database is over its size, oldest first: streamed output
# (the projection keeps its scrollback), events of ended sessions, and host-wide events except
# the host links (the linked hosts are folded from them, whatever their age).
_DROPPABLE = (
    f"(type IN ('{EventType.SESSION_OUTPUT.value}', '{EventType.ITEM_DELTA.value}')"
    f" OR session IN (SELECT id FROM sessions WHERE status IN {projection.TERMINAL_SQL})"
    f" OR (session IS NULL AND type NOT IN ('{EventType.HOST_LINKED.value}', '{EventType.HOST_UNLINKED.value}')))"
)
# Rows deleted per transaction by retention, so other work on the database interleaves.
_FORGET_CHUNK = 2000


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
    """One page of the projection of every session (with scrollback) as of ``seq``; ``last`` on
    the final page, then the tail follows. Every page of one snapshot carries the same ``seq``."""

    seq: int
    sessions: list[dict[str, Any]] = field(default_factory=list)
    last: bool = True


AppendItem = tuple[str | None, str, dict[str, Any], str | None]


class EventLog:
    """Append and read events; create with :meth:`open`. Use from the loop that opened it."""

    def __init__(
        self, db: Database, ring_size: int, head: int, recent: list[Event], floor: int = 0, *, checked: bool = True
    ) -> None:
        self.db = db
        # Every event's data is checked against its declared shape (protocol/events.py) before it
        # is written; only the log's own unit tests, which use made-up types, turn that off.
        self.checked = checked
        self.ring_size = max(1, ring_size)
        self.head = head
        # Every event after the floor is in the log; some at or before it were dropped (retention).
        self.floor = floor
        # Recent events, contiguous, ending at head. Trimmed to ring_size in amortised chunks so
        # an append is O(1) and a read from the ring is a list slice.
        self._ring: list[Event] = recent
        # Appends committed but not yet visible because an earlier seq is still on its way back
        # to the loop: head only ever advances over a contiguous run of seqs.
        self._pending: dict[int, Event] = {}
        self._changed = asyncio.Event()
        self._closed = False

    @classmethod
    async def open(cls, db: Database, *, ring_size: int = 8192, checked: bool = True) -> EventLog:
        def load(conn: sqlite3.Connection) -> tuple[int, int, list[Event]]:
            head, floor = _head(conn), _floor(conn)
            recent, _ = _select(conn, max(head - ring_size, floor), head, ring_size)
            return head, floor, recent

        head, floor, recent = await db.run(load, write=False)
        return cls(db, ring_size, head, recent, floor, checked=checked)

    # -- writing -------------------------------------------------------------------------

    async def append(self, session: str | None, type: str, data: dict[str, Any], cid: str | None = None) -> Event:
        return (await self.append_many([(session, type, data, cid)]))[0]

    async def append_many(self, items: list[AppendItem]) -> list[Event]:
        """Append events in one transaction (all or none), applying the projection with them."""
        if not items:
            return []
        if self._closed:
            raise RuntimeError("the event log is closed")
        if self.checked:
            for _, type_, data, _ in items:
                check_data(type_, data)

        def write(conn: sqlite3.Connection) -> list[Event]:
            seq = _head(conn)
            ts = time.time()
            events: list[Event] = []
            rows = []
            for session, type_, data, cid in items:
                seq += 1
                stored = json.dumps(data, separators=(",", ":"))
                # A copy: a caller that reuses its dict must not change what the ring holds.
                ev = Event(seq, session, str(type_), ts, dict(data), cid, len(stored))
                events.append(ev)
                rows.append((seq, session, ev.type, ts, stored, cid))
            conn.executemany("INSERT INTO events (seq, session, type, ts, data, cid) VALUES (?, ?, ?, ?, ?, ?)", rows)
            projection.apply_many(conn, events)
            return events

        async def commit() -> list[Event]:
            events = await self.db.run(write)
            self._publish(events)
            return events

        # Once queued the write happens: it is published even if the caller is cancelled meanwhile
        # (an interrupted turn), or the head would stop before its seq and nothing after it would
        # ever reach a subscriber.
        return await asyncio.shield(commit())

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

    # -- retention -----------------------------------------------------------------------

    async def forget(self, *, ended_before: float, older_than: float, max_db_bytes: int | None) -> int:
        """Drop sessions that ended before ``ended_before`` (their events and projection rows) and
        host-wide events older than ``older_than``; then, while the database is over
        ``max_db_bytes``, the oldest droppable events (see ``_DROPPABLE``). Returns how many events
        were dropped; the floor becomes the newest dropped seq, and readers behind it get a
        snapshot. Events of live sessions other than their streamed output are never dropped."""

        def by_age(conn: sqlite3.Connection) -> tuple[int, int]:
            dropped, newest = 0, 0
            for sid in projection.forget_ended(conn, ended_before):
                row = conn.execute("SELECT COUNT(*), MAX(seq) FROM events WHERE session = ?", (sid,)).fetchone()
                conn.execute("DELETE FROM events WHERE session = ?", (sid,))
                dropped, newest = dropped + row[0], max(newest, row[1] or 0)
            row = conn.execute(
                "SELECT COUNT(*), MAX(seq) FROM events WHERE session IS NULL AND ts < ? AND type NOT IN (?, ?)",
                (older_than, EventType.HOST_LINKED.value, EventType.HOST_UNLINKED.value),
            ).fetchone()
            conn.execute(
                "DELETE FROM events WHERE session IS NULL AND ts < ? AND type NOT IN (?, ?)",
                (older_than, EventType.HOST_LINKED.value, EventType.HOST_UNLINKED.value),
            )
            return dropped + row[0], _raise_floor(conn, max(newest, row[1] or 0))

        def by_size(conn: sqlite3.Connection) -> tuple[int, int]:
            if max_db_bytes is None or _used_bytes(conn) <= max_db_bytes:
                return 0, _floor(conn)
            seqs = [r[0] for r in conn.execute(
                f"SELECT seq FROM events WHERE {_DROPPABLE} ORDER BY seq LIMIT ?", (_FORGET_CHUNK,)
            )]
            if not seqs:
                return 0, _floor(conn)
            conn.execute(f"DELETE FROM events WHERE seq <= ? AND {_DROPPABLE}", (seqs[-1],))
            return len(seqs), _raise_floor(conn, seqs[-1])

        dropped, self.floor = await self.db.run(by_age)
        while True:
            n, self.floor = await self.db.run(by_size)
            if not n:
                return dropped
            dropped += n

    async def delete_session(self, session: str) -> int:
        """Forget one session: its events, approvals and projection row leave the database, and
        the disk (secure_delete, then a WAL checkpoint). Returns how many events went."""
        def forget(conn: sqlite3.Connection) -> int:
            # Seqs are never handed out twice, even when the newest events were this session's.
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('events.head', ?)", (_head(conn),))
            return projection.delete_session(conn, session)

        removed = await self.db.run(forget)
        # The ring of recent events assumes no holes: it starts again from the next append.
        self._ring.clear()
        await self.db.checkpoint()
        return removed

    # -- reading -------------------------------------------------------------------------

    async def read(self, since: int, limit: int, max_bytes: int | None = None) -> list[Event]:
        """Events with seq > since (and past the floor): at most ``limit``, ascending, never
        beyond head, and no more than ``max_bytes`` of stored data (but always one)."""
        events, _ = await self._read(max(since, self.floor), limit, None, max_bytes)
        return events

    async def _read(
        self, since: int, limit: int, session: str | None, max_bytes: int | None
    ) -> tuple[list[Event], int]:
        """Up to ``limit`` events (``max_bytes`` of data) after ``since`` (of ``session`` only,
        when given), and the seq up to which the log was scanned (the new cursor)."""
        head = self.head
        if since >= head or limit <= 0:
            return [], since
        ring = self._ring
        if ring and since + 1 >= ring[0].seq:
            start = since + 1 - ring[0].seq
            if session is None:
                chunk = _within(ring[start : start + limit], max_bytes)
                return chunk, chunk[-1].seq
            out: list[Event] = []
            upto, size = head, 0
            for ev in ring[start : head - ring[0].seq + 1]:
                if ev.session == session:
                    if out and max_bytes is not None and size + ev.size > max_bytes:
                        upto = out[-1].seq
                        break
                    out.append(ev)
                    size += ev.size
                    if len(out) == limit:
                        upto = ev.seq
                        break
            return out, upto

        def select(conn: sqlite3.Connection) -> tuple[list[Event], bool]:
            return _select(conn, since, head, limit, session, max_bytes)

        events, full = await self.db.run(select, write=False)
        return events, events[-1].seq if full else head

    async def tail(self, session: str, limit: int, skip: tuple[str, ...] = ()) -> list[Event]:
        """The latest ``limit`` events of ``session`` (not of the types in ``skip``), oldest first."""
        marks = ", ".join("?" * len(skip))

        def select(conn: sqlite3.Connection) -> list[Event]:
            rows = conn.execute(
                "SELECT seq, session, type, ts, data, cid FROM events WHERE session = ?"
                f" AND type NOT IN ({marks}) ORDER BY seq DESC LIMIT ?", (session, *skip, limit),
            ).fetchall()
            return [Event(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], len(r[4])) for r in reversed(rows)]

        return await self.db.run(select, write=False)

    async def snapshot_page(
        self, session: str | None, after: tuple[float, str] | None, max_chars: int = SNAPSHOT_PAGE_CHARS
    ) -> tuple[int, list[dict[str, Any]], bool]:
        """Sessions (with scrollback; only ``session`` when given) after the key ``after`` in
        snapshot order, about ``max_chars`` of them; with the seq they are exact at, and whether
        more follow."""

        def take(conn: sqlite3.Connection) -> tuple[int, list[dict[str, Any]], bool]:
            return _head(conn), *projection.session_page(conn, after, max_chars, only=session)

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
    """An async iterator of :class:`Batch` and :class:`Snapshot` pages after a cursor.

    It holds only a cursor: nothing is queued for a subscriber that does not read, and one that
    reads late gets what accumulated, coalesced. Each step reads a bounded amount, so a subscriber
    whose client does not keep up holds at most one step. Ends when the log is closed or on
    :meth:`close`.

    A snapshot is read page by page, each when the subscriber asks for it. Pages read later are
    exact at a later seq than the first, whose seq the snapshot carries: the events in between
    of a session sent in a later page are already in it, so the tail leaves them out (``_skip``,
    at most one entry per session that changed while the snapshot was read).
    """

    def __init__(self, log: EventLog, since: int, *, session: str | None, batch: int, snapshot_after: int) -> None:
        self.log = log
        self.cursor = since
        self.session = session
        self.batch = max(1, batch)
        self.snapshot_after = snapshot_after
        self._first = True
        self._closed = False
        self._page_after: tuple[float, str] | None = None  # the next page starts after this key
        self._paging = False
        self._skip: dict[str, int] = {}  # session -> seq up to which the snapshot already has it

    def __aiter__(self) -> AsyncIterator[Batch | Snapshot]:
        return self

    def close(self) -> None:
        self._closed = True

    def _behind(self) -> bool:
        log = self.log
        if self._first:
            self._first = False
            # A cursor past the head belongs to another history (a reset host): resync too.
            if log.head - self.cursor > self.snapshot_after or self.cursor > log.head:
                return True
        # Retention dropped events this cursor has not seen.
        return self.cursor < log.floor

    async def __anext__(self) -> Batch | Snapshot:
        log = self.log
        if not self._paging and self._behind():
            self._restart()
        if self._paging and not self._closed:
            return await self._next_page()
        while True:
            if self._closed:
                raise StopAsyncIteration
            if log.head <= self.cursor:
                if log.closed:
                    raise StopAsyncIteration
                waiter = log._changed
                await waiter.wait()
                continue
            events, upto = await log._read(self.cursor, self.batch, self.session, STEP_BYTES)
            if self.cursor < log.floor:
                # Retention ran while this read waited for the database: what it read may have gaps.
                self._restart()
                return await self._next_page()
            self.cursor = max(self.cursor, upto)
            if self._skip:
                events = [e for e in events if e.seq > self._skip.get(e.session or "", 0)]
                if self.cursor >= max(self._skip.values()):
                    self._skip = {}
            if events:
                return Batch(coalesce(events), self.cursor)

    def _restart(self) -> None:
        """Send a snapshot next, from its first page."""
        self._paging, self._page_after, self._skip = True, None, {}

    async def _next_page(self) -> Snapshot:
        seq, sessions, more = await self.log.snapshot_page(self.session, self._page_after)
        if self._page_after is None:
            self.cursor = seq  # the snapshot's seq, and where its tail starts
        else:
            for s in sessions:
                if s["last_seq"] > self.cursor:
                    self._skip[s["id"]] = s["last_seq"]
        if sessions:
            self._page_after = (sessions[-1]["created"], sessions[-1]["id"])
        self._paging = more
        return Snapshot(self.cursor, sessions, last=not more)


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
            out.append(Event(last.seq, last.session, last.type, last.ts, data, None, sum(e.size for e in run)))
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


def _head(conn: sqlite3.Connection) -> int:
    """The last seq assigned: never below the floor, even when retention dropped every event, nor
    below the head a deleted session left (its events may have been the newest)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'events.head'").fetchone()
    kept = int(row[0]) if row else 0
    return max(int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]), _floor(conn), kept)


def _floor(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'events.floor'").fetchone()
    return int(row[0]) if row else 0


def _raise_floor(conn: sqlite3.Connection, seq: int) -> int:
    floor = max(_floor(conn), seq)
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('events.floor', ?)", (floor,))
    return floor


def _used_bytes(conn: sqlite3.Connection) -> int:
    # Pages in use: the file's size less its free pages, which SQLite reuses before growing it.
    def pragma(name: str) -> int:
        return int(conn.execute(f"PRAGMA {name}").fetchone()[0])

    return (pragma("page_count") - pragma("freelist_count")) * pragma("page_size")


def _within(events: list[Event], max_bytes: int | None) -> list[Event]:
    """The longest prefix of ``events`` with at most ``max_bytes`` of data (at least one event)."""
    if max_bytes is None:
        return events
    size = 0
    for i, ev in enumerate(events):
        size += ev.size
        if size > max_bytes and i:
            return events[:i]
    return events


def _select(
    conn: sqlite3.Connection, since: int, upto: int, limit: int, session: str | None = None,
    max_bytes: int | None = None,
) -> tuple[list[Event], bool]:
    """Events in (since, upto] (of ``session`` only, when given), at most ``limit`` and
    ``max_bytes`` of data (but one at least), and whether a limit cut the list short."""
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
    events: list[Event] = []
    size = 0
    # Rows are fetched one by one: stopping at the budget leaves the rest unread.
    for r in rows:
        if events and max_bytes is not None and size + len(r[4]) > max_bytes:
            return events, True
        events.append(Event(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], len(r[4])))
        size += len(r[4])
    return events, len(events) == limit
