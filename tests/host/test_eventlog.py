import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tether.host import projection
from tether.host.db import Database
from tether.host.eventlog import STEP_BYTES, Batch, Event, EventLog, Snapshot, Subscription, coalesce
from tether.protocol.events import EventType

OUT = EventType.SESSION_OUTPUT


@pytest.fixture
async def log(db: Database) -> AsyncIterator[EventLog]:
    """These tests use made-up event types ("a", "test.tick"): the shape check is the subject of
    tests/protocol/test_event_shapes.py, not of these."""
    event_log = await EventLog.open(db, checked=False)
    yield event_log
    await event_log.close()


def started(cols: int = 80) -> dict[str, object]:
    return {"agent": "pty", "workspace": "/w", "command": ["sh"], "title": "sh", "cols": cols, "rows": 24}


async def next_item(sub: Subscription, timeout: float = 5.0) -> Batch | Snapshot:
    return await asyncio.wait_for(sub.__anext__(), timeout)


async def test_seq_gap_free_under_concurrent_appends(log: EventLog) -> None:
    async def writer(n: int) -> list[int]:
        return [(await log.append(None, "test.tick", {"w": n, "i": i})).seq for i in range(200)]

    results = await asyncio.gather(*(writer(n) for n in range(20)))
    seqs = sorted(s for r in results for s in r)
    assert seqs == list(range(1, 4001))
    assert log.head == 4000
    for r in results:  # each writer saw its own appends in order
        assert r == sorted(r)
    stored = await log.db.run(lambda c: [r[0] for r in c.execute("SELECT seq FROM events ORDER BY seq")])
    assert stored == list(range(1, 4001))


async def test_an_append_whose_caller_is_cancelled_still_reaches_subscribers(log: EventLog) -> None:
    """An interrupted turn cancels its adapter mid-append: the write, once queued, is still
    published, so the head does not stop before its seq and later events keep flowing."""
    sub = log.subscribe(0, session=None)
    for _ in range(20):  # cancelled at different points of the write
        appending = asyncio.create_task(log.append(None, "test.cancelled", {}))
        await asyncio.sleep(0)
        appending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await appending
    after = await asyncio.wait_for(log.append(None, "test.after", {}), 5)
    assert after.seq == 21 and log.head == 21
    got: list[str] = []
    while len(got) < 21:
        item = await next_item(sub)
        assert isinstance(item, Batch)
        got.extend(e.type for e in item.events)
    assert got == ["test.cancelled"] * 20 + ["test.after"]


async def test_append_many_is_one_transaction(log: EventLog) -> None:
    events = await log.append_many([(None, "a", {"x": 1}, None), ("s1", "b", {}, "c-1")])
    assert [e.seq for e in events] == [1, 2]
    assert events[1].cid == "c-1"
    assert events[1].to_wire() == {"seq": 2, "session": "s1", "type": "b", "ts": events[1].ts, "data": {}, "cid": "c-1"}
    assert "cid" not in events[0].to_wire()
    with pytest.raises(TypeError):  # not JSON: nothing of the batch is stored
        await log.append_many([(None, "a", {}, None), (None, "b", {"bad": object()}, None)])
    assert log.head == 2
    assert (await log.append(None, "c", {})).seq == 3


async def test_ring_and_sqlite_agree(db: Database) -> None:
    log = await EventLog.open(db, ring_size=50, checked=False)
    await log.append_many([(None, "t", {"i": i}, None) for i in range(300)])
    from_ring = await log.read(250, 100)
    assert [e.seq for e in from_ring] == list(range(251, 301))
    from_db = await log.read(0, 1000)  # before the ring: served by SQLite
    assert [e.seq for e in from_db] == list(range(1, 301))
    assert from_db[250:] == from_ring
    assert await log.read(10, 5) == from_db[10:15]
    assert await log.read(300, 10) == []
    fresh = await EventLog.open(db, ring_size=50, checked=False)
    assert await fresh.read(0, 1000) == from_db


async def test_reopen_continues_seq(tmp_path: Path) -> None:
    path = tmp_path / "host.db"
    db = await Database.open(path)
    log = await EventLog.open(db, checked=False)
    await log.append_many([(None, "t", {"i": i}, None) for i in range(5)])
    await log.close()
    await db.close()
    db = await Database.open(path)
    try:
        log = await EventLog.open(db, checked=False)
        assert log.head == 5
        assert (await log.append(None, "t", {})).seq == 6
        assert [e.data.get("i") for e in await log.read(0, 10)] == [0, 1, 2, 3, 4, None]
    finally:
        await db.close()


async def test_subscribe_catch_up_then_live(log: EventLog) -> None:
    for i in range(3):
        await log.append(None, "t", {"i": i})
    sub = log.subscribe(1)
    batch = await next_item(sub)
    assert isinstance(batch, Batch)
    assert [e.seq for e in batch] == [2, 3]
    assert sub.cursor == 3
    waiting = asyncio.ensure_future(next_item(sub))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await log.append(None, "t", {"i": 3})
    live = await waiting
    assert isinstance(live, Batch) and [e.seq for e in live] == [4]
    await log.close()
    with pytest.raises(StopAsyncIteration):
        await next_item(sub)


async def test_slow_subscriber_gets_coalesced_output(log: EventLog) -> None:
    await log.append("s1", EventType.SESSION_STARTED, started())
    sub = log.subscribe(log.head)
    texts = [f"line {i}\n" for i in range(10_000)]
    for i in range(0, 10_000, 500):
        await log.append_many([("s1", OUT, {"stream": "pty", "data": t}, None) for t in texts[i : i + 500]])
    got: list[Event] = []
    while sub.cursor < log.head:
        item = await next_item(sub)
        assert isinstance(item, Batch)
        got.extend(item.events)
    assert "".join(e.data["data"] for e in got) == "".join(texts)
    seqs = [e.seq for e in got]
    assert seqs == sorted(set(seqs))
    assert seqs[-1] == log.head
    assert len(got) < 100  # fewer, bigger events
    assert got[0].data["first_seq"] == 2
    for prev, ev in itertools.pairwise(got):
        assert ev.data["first_seq"] == prev.seq + 1  # no gap, no overlap


async def test_fast_subscriber_gets_events_one_by_one(log: EventLog) -> None:
    await log.append("s1", EventType.SESSION_STARTED, started())
    sub = log.subscribe(log.head)
    for i in range(5):
        ev = await log.append("s1", OUT, {"stream": "pty", "data": f"{i}"})
        item = await next_item(sub)
        assert isinstance(item, Batch)
        assert [e.seq for e in item] == [ev.seq] and item.events[0].data == {"stream": "pty", "data": f"{i}"}


def test_coalesce_rules() -> None:
    def out(seq: int, text: str, session: str = "a", stream: str = "pty") -> Event:
        return Event(seq, session, OUT, float(seq), {"stream": stream, "data": text})

    events = [
        out(1, "a"),
        out(2, "b"),
        out(3, "c", stream="stdout"),
        out(4, "d", session="b"),
        Event(5, "a", EventType.SESSION_INPUT, 5.0, {"text": "x"}, "cid"),
        out(6, "e"),
        out(7, "f"),
    ]
    merged = coalesce(events)
    assert [(e.seq, e.data.get("data"), e.data.get("first_seq")) for e in merged] == [
        (2, "ab", 1),
        (3, "c", None),
        (4, "d", None),
        (5, None, None),
        (7, "ef", 6),
    ]
    capped = coalesce([out(i, "x" * 100) for i in range(1, 11)], max_chars=300)
    assert [len(e.data["data"]) for e in capped] == [300, 300, 300, 100]
    assert [e.seq for e in capped] == [3, 6, 9, 10]


async def test_snapshot_when_far_behind(log: EventLog) -> None:
    await log.append("s1", EventType.SESSION_STARTED, started())
    await log.append_many([("s1", OUT, {"stream": "pty", "data": f"{i}\n"}, None) for i in range(100)])
    await log.append("s2", EventType.SESSION_STARTED, started(cols=100))
    sub = log.subscribe(0, snapshot_after=50)
    snap = await next_item(sub)
    assert isinstance(snap, Snapshot)
    assert snap.seq == log.head == sub.cursor
    by_id = {s["id"]: s for s in snap.sessions}
    assert set(by_id) == {"s1", "s2"}
    assert by_id["s1"]["scrollback"].endswith("98\n99\n")
    assert by_id["s2"]["cols"] == 100
    tail = await log.append("s1", OUT, {"stream": "pty", "data": "more"})
    item = await next_item(sub)
    assert isinstance(item, Batch) and [e.seq for e in item] == [tail.seq]
    # Close enough: no snapshot, just the events.
    near = log.subscribe(log.head - 10, snapshot_after=50)
    assert isinstance(await next_item(near), Batch)
    # A cursor from another history (beyond head) is resynchronised with a snapshot.
    future = log.subscribe(log.head + 1000)
    assert isinstance(await next_item(future), Snapshot)


async def test_session_filter(db: Database) -> None:
    for ring in (4, 8192):  # filtered reads from SQLite and from the ring
        log = await EventLog.open(db, ring_size=ring, checked=False)
        base = log.head
        await log.append_many([(f"s{i % 3}", EventType.SESSION_INPUT, {"text": str(i)}, None) for i in range(30)])
        sub = log.subscribe(base, session="s1", batch=4)
        got: list[Event] = []
        while sub.cursor < log.head:
            item = await next_item(sub)
            assert isinstance(item, Batch)
            got.extend(item.events)
        assert [e.data["text"] for e in got] == [str(i) for i in range(1, 30, 3)]
        assert {e.session for e in got} == {"s1"}
        other = await log.append("s2", EventType.SESSION_INPUT, {"text": "x"})
        mine = await log.append("s1", EventType.SESSION_INPUT, {"text": "y"})
        item = await next_item(sub)
        assert isinstance(item, Batch) and [e.seq for e in item] == [mine.seq]
        assert other.seq < sub.cursor == mine.seq


async def test_subscription_holds_no_queue(log: EventLog) -> None:
    sub = log.subscribe(0)
    await log.append_many([(None, "t", {"i": i}, None) for i in range(1000)])
    # A cursor and the snapshot's place; _skip has one seq per session changed while a snapshot
    # was read, and is empty otherwise.
    assert vars(sub).keys() <= {"log", "cursor", "session", "batch", "snapshot_after", "_first", "_closed",
                                "_paging", "_page_after", "_skip"}
    assert not sub._skip
    item = await next_item(sub)
    assert isinstance(item, Batch) and len(item) == 512
    assert sub.cursor == 512


async def test_a_snapshot_is_read_page_by_page_and_stays_exact(log: EventLog) -> None:
    """Pages are read one at a time (each about SNAPSHOT_PAGE_CHARS), later ones at a later seq:
    the tail leaves out what a later page already holds, and keeps what an earlier page lacks."""
    screen = "x" * 60_000
    for i in range(6):
        await log.append(f"s{i}", EventType.SESSION_STARTED, started())
        await log.append(f"s{i}", OUT, {"stream": "pty", "data": screen})
    sub = log.subscribe(log.head + 5)  # a cursor from another history
    first = await next_item(sub)
    assert isinstance(first, Snapshot) and not first.last
    assert [s["id"] for s in first.sessions] == ["s0", "s1", "s2"]  # 60,000 + 512 characters each
    seq = first.seq
    early = await log.append("s0", OUT, {"stream": "pty", "data": "after page one"})
    late = await log.append("s5", OUT, {"stream": "pty", "data": "before page two"})
    second = await next_item(sub)
    assert isinstance(second, Snapshot) and second.last and second.seq == seq
    assert [s["id"] for s in second.sessions] == ["s3", "s4", "s5"]
    assert second.sessions[-1]["scrollback"].endswith("before page two")
    assert sub._skip == {"s5": late.seq}
    tail = await log.append("s5", OUT, {"stream": "pty", "data": "tail"})
    item = await next_item(sub)
    assert isinstance(item, Batch)
    # s0's event is not in page one (read before it), s5's first one is in page two already.
    assert [e.seq for e in item] == [early.seq, tail.seq]
    assert sub._skip == {}
    # One session's snapshot is one page.
    one = await next_item(log.subscribe(log.head + 5, session="s1"))
    assert isinstance(one, Snapshot) and one.last and [s["id"] for s in one.sessions] == ["s1"]


async def test_a_step_reads_a_bounded_amount(db: Database) -> None:
    for ring in (4, 8192):  # from SQLite and from the ring
        log = await EventLog.open(db, ring_size=ring, checked=False)
        base = log.head
        await log.append_many([("s9", OUT, {"stream": "pty", "data": "y" * 60_000}, None) for _ in range(40)])
        sub = log.subscribe(base)
        item = await next_item(sub)
        assert isinstance(item, Batch)
        assert sum(len(e.data["data"]) for e in item) <= STEP_BYTES
        assert sub.cursor == base + 4  # 4 × 60,000 characters (and their JSON) fit, 5 do not
        page = await log.read(base, 1000, max_bytes=100)
        assert [e.seq for e in page] == [base + 1]  # always one, however big


async def test_retention_drops_old_sessions_and_readers_behind_get_a_snapshot(db: Database) -> None:
    log = await EventLog.open(db, checked=False)
    await log.append("old", EventType.SESSION_STARTED, started())
    await log.append("old", OUT, {"stream": "pty", "data": "old output"})
    await log.append("old", EventType.SESSION_EXITED, {"exit_code": 0, "signal": None, "reason": None})
    link = await log.append(None, EventType.HOST_LINKED, {"host_id": "h1", "name": "r"})
    await log.append(None, "test.tick", {})
    await log.append("live", EventType.SESSION_STARTED, started())
    kept = await log.append("live", OUT, {"stream": "pty", "data": "live output"})
    behind = log.subscribe(2)
    now = time.time() + 1
    assert await log.forget(ended_before=now, older_than=now, max_db_bytes=None) == 4  # old's 3, the tick
    assert log.floor == 5 and log.head == 7
    stored = await db.run(lambda c: [r[0] for r in c.execute("SELECT seq FROM events ORDER BY seq")])
    assert stored == [link.seq, 6, kept.seq]  # the host link and the live session stay
    assert [s["id"] for s in await db.run(projection.list_sessions)] == ["live"]
    assert [e.seq for e in await log.read(0, 100)] == [6, 7]  # nothing from before the floor
    snap = await next_item(behind)
    assert isinstance(snap, Snapshot) and [s["id"] for s in snap.sessions] == ["live"]
    assert snap.seq == 7
    # Over a size, the oldest output goes first, even a live session's (its scrollback stays).
    assert await log.forget(ended_before=0, older_than=0, max_db_bytes=0) == 1
    assert log.floor == kept.seq
    [live] = await db.run(lambda c: projection.list_sessions(c, with_scrollback=True), write=False)
    assert live["scrollback"] == "live output"
    # Seqs go on from the head even when every event before it is gone.
    await log.close()
    fresh = await EventLog.open(db, checked=False)
    assert (fresh.head, fresh.floor) == (7, 7)
    assert (await fresh.append(None, "test.tick", {})).seq == 8
