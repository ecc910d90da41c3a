import asyncio
import os
from pathlib import Path

import pytest

from tether.errors import TetherError
from tether.host.config import Limits
from tether.host.eventlog import Batch, Event, EventLog
from tether.host.principal import Principal
from tether.host.sessions import SessionError, SessionManager
from tether.protocol.events import EventType


async def events_until_exit(log: EventLog, sid: str, timeout: float = 20.0) -> list[Event]:
    """Every event of the session, from the start, until session.exited."""

    async def go() -> list[Event]:
        got: list[Event] = []
        async for item in log.subscribe(0, session=sid):
            assert isinstance(item, Batch)
            got.extend(item.events)
            if got and got[-1].type == EventType.SESSION_EXITED:
                return got
        raise AssertionError("log closed")

    return await asyncio.wait_for(go(), timeout)


def output(events: list[Event]) -> str:
    return "".join(e.data["data"] for e in events if e.type == EventType.SESSION_OUTPUT)


async def wait_output(log: EventLog, sid: str, needle: str, timeout: float = 10.0) -> None:
    text = ""

    async def go() -> None:
        nonlocal text
        async for item in log.subscribe(0, session=sid):
            assert isinstance(item, Batch)
            text += output(item.events)
            if needle in text:
                return

    try:
        await asyncio.wait_for(go(), timeout)
    except TimeoutError:
        raise AssertionError(f"{needle!r} not in the output {text!r}") from None


async def test_echo_session(manager: SessionManager, log: EventLog, tmp_path: Path) -> None:
    sid = await manager.start_session(agent="pty", workspace=tmp_path, command=["echo", "hi"], cid="c-1")
    assert sid.startswith("s_") and len(sid) == 12
    events = await events_until_exit(log, sid)
    assert events[0].type == EventType.SESSION_STARTED and events[0].cid == "c-1"
    assert events[0].data["command"] == ["echo", "hi"] and events[0].data["title"] == "echo hi"
    assert output(events) == "hi\r\n"
    assert events[-1].data == {"exit_code": 0, "signal": None, "reason": None}
    await asyncio.sleep(0.05)
    session = await manager.get(sid)
    assert session is not None and session["status"] == "finished" and session["exit_code"] == 0
    assert session["last_seq"] == events[-1].seq
    assert [s["id"] for s in await manager.list()] == [sid]
    with_sb = await manager.get(sid, with_scrollback=True)
    assert with_sb is not None and with_sb["scrollback"] == "hi\r\n"


async def test_exit_code_fails_session(manager: SessionManager, log: EventLog, tmp_path: Path) -> None:
    sid = await manager.start_session(agent="pty", workspace=tmp_path, command=["sh", "-c", "exit 3"])
    events = await events_until_exit(log, sid)
    assert events[-1].data["exit_code"] == 3
    session = await manager.get(sid)
    assert session is not None and session["status"] == "failed"


async def test_ten_thousand_lines_in_order_exactly_once(manager: SessionManager, log: EventLog, tmp_path: Path) -> None:
    sid = await manager.start_session(agent="pty", workspace=tmp_path, command=["seq", "1", "10000"])
    events = await events_until_exit(log, sid, timeout=60)
    lines = output(events).split("\r\n")
    assert lines[-1] == ""
    assert lines[:-1] == [str(i) for i in range(1, 10001)]
    assert events[-1].data["exit_code"] == 0
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs))


async def test_utf8_split_across_reads(manager: SessionManager, log: EventLog, tmp_path: Path) -> None:
    cmd = ["sh", "-c", r"printf '\303'; sleep 0.2; printf '\251\342\202'; sleep 0.2; printf '\254\n'"]
    sid = await manager.start_session(agent="pty", workspace=tmp_path, command=cmd)
    events = await events_until_exit(log, sid)
    assert output(events) == "é€\r\n"
    assert len([e for e in events if e.type == EventType.SESSION_OUTPUT]) >= 2


async def test_input_interrupt_resize(manager: SessionManager, log: EventLog, tmp_path: Path) -> None:
    sid = await manager.start_session(
        agent="pty", workspace=tmp_path, command=["sh"], cols=90, rows=20, env={**os.environ, "PS1": "$ "}
    )
    ev = await manager.send_input(sid, "echo size $(stty size)\n", cid="in-1")
    assert ev.type == EventType.SESSION_INPUT and ev.cid == "in-1" and ev.data == {"text": "echo size $(stty size)\n"}
    await wait_output(log, sid, "size 20 90")
    resized = await manager.resize(sid, 120, 50)
    assert resized.data == {"cols": 120, "rows": 50}
    await manager.send_input(sid, "echo size $(stty size)\n")
    await wait_output(log, sid, "size 50 120")
    # Interrupt only once sleep runs: a ^C that reached the shell first would leave sleep to run.
    await manager.send_input(sid, "echo sleep-$((1+1)); sleep 30\n")
    await wait_output(log, sid, "sleep-2")
    await asyncio.sleep(0.3)
    intr = await manager.interrupt(sid, cid="i-1")
    assert intr.type == EventType.SESSION_INTERRUPTED and intr.cid == "i-1"
    await manager.send_input(sid, "echo after-$((2+3))\n")
    await wait_output(log, sid, "after-5")  # the shell survived, sleep did not
    await manager.send_input(sid, "exit 0\n")
    events = await events_until_exit(log, sid)
    assert events[-1].data["exit_code"] == 0
    session = await manager.get(sid)
    assert session is not None and (session["cols"], session["rows"]) == (120, 50)


async def test_interrupt_ends_sleep(manager: SessionManager, log: EventLog, tmp_path: Path) -> None:
    sid = await manager.start_session(agent="pty", workspace=tmp_path, command=["sleep", "30"])
    await asyncio.sleep(0.2)
    await manager.interrupt(sid)
    events = await events_until_exit(log, sid, timeout=5)
    assert events[-1].data == {"exit_code": None, "signal": 2, "reason": "killed by SIGINT"}


async def test_errors(manager: SessionManager, log: EventLog, tmp_path: Path) -> None:
    with pytest.raises(SessionError, match="no such session") as info:
        await manager.send_input("s_nope", "x")
    assert info.value.code == "no_such_session"
    sid = await manager.start_session(agent="pty", workspace=tmp_path, command=["true"])
    await events_until_exit(log, sid)
    await asyncio.sleep(0.05)
    with pytest.raises(SessionError, match="has finished"):
        await manager.send_input(sid, "x")
    with pytest.raises(SessionError, match="has finished"):
        await manager.interrupt(sid)
    head = log.head
    with pytest.raises(SessionError, match="command not found") as info:
        await manager.start_session(agent="pty", workspace=tmp_path, command=["no-such-program-tether"])
    assert info.value.code == "command_not_found"
    with pytest.raises(SessionError, match="not a directory"):
        await manager.start_session(agent="pty", workspace=tmp_path / "missing", command=["true"])
    with pytest.raises(SessionError):
        await manager.start_session(agent="pty", workspace=tmp_path, command=[])
    with pytest.raises(SessionError):
        await manager.start_session(agent="pty", workspace=tmp_path, command=["true"], cols=0)
    assert log.head == head  # nothing recorded for a session that never started


async def test_status_transitions(manager: SessionManager, log: EventLog, tmp_path: Path) -> None:
    sid = await manager.start_session(agent="pty", workspace=tmp_path, command=["sleep", "30"])
    await manager.set_status(sid, "waiting-for-approval")
    await manager.set_status(sid, "running")
    with pytest.raises(SessionError, match="cannot go from running to running"):
        await manager.set_status(sid, "running")
    with pytest.raises(SessionError, match="ends only"):
        await manager.set_status(sid, "finished")
    await manager.interrupt(sid)
    await events_until_exit(log, sid)
    await asyncio.sleep(0.05)
    with pytest.raises(SessionError, match="already failed") as info:
        await manager.set_status(sid, "idle")
    assert info.value.code == "illegal_transition"


async def test_restart_closes_orphans_and_close_terminates(log: EventLog, tmp_path: Path) -> None:
    first = SessionManager(log, log.db)
    await first.start()
    sid = await first.start_session(agent="pty", workspace=tmp_path, command=["sh", "-c", "trap '' INT; sleep 30"])
    # A session the log says is running, whose process is gone (an earlier host run).
    data = {"agent": "pty", "workspace": str(tmp_path), "command": ["x"], "title": "x", "cols": 80, "rows": 24}
    await log.append("s_orphan0000", EventType.SESSION_STARTED, data)
    await first.start()
    orphan = await first.get("s_orphan0000")
    assert orphan is not None and orphan["status"] == "failed" and orphan["exit_reason"] == "host restarted"
    live = await first.get(sid)
    assert live is not None and live["status"] == "running"  # its process is here: untouched
    await asyncio.wait_for(first.close(), 10)
    ended = await first.get(sid)
    assert ended is not None and ended["status"] == "failed" and ended["exit_reason"] == "host shutdown"
    with pytest.raises(SessionError, match="shutting down"):
        await first.start_session(agent="pty", workspace=tmp_path, command=["true"])


async def test_concurrent_starts_never_pass_the_caps(log: EventLog, tmp_path: Path) -> None:
    """Places are taken before the first await: eight starts at once by one device against caps
    of 3 per caller and 5 per host get 3, and four by another device get the 2 left."""
    mgr = SessionManager(log, log.db, limits=Limits(max_sessions=5, max_sessions_per_caller=3))
    await mgr.start()
    phone = Principal(kind="device", id="d1", name="phone", scopes=frozenset())
    laptop = Principal(kind="device", id="d2", name="laptop", scopes=frozenset())
    try:
        results = await asyncio.gather(*(
            mgr.start_session(agent="pty", workspace=tmp_path, command=["sleep", "30"], caller=who)
            for who in [phone] * 8 + [laptop] * 4
        ), return_exceptions=True)
        started = [r for r in results if isinstance(r, str)]
        refused = [r for r in results if isinstance(r, SessionError)]
        assert len(started) == 5 and len(refused) == 7
        assert {r.code for r in refused} == {"limit"}
        assert [r.message.endswith("(limits.max_sessions_per_caller)") for r in refused] == [True] * 5 + [False] * 2
        assert refused[-1].message == "this host already runs 5 live sessions, the most it allows (limits.max_sessions)"
    finally:
        await asyncio.wait_for(mgr.close(), 10)


async def test_an_ended_session_is_archived_then_deleted_with_its_whole_history(
    manager: SessionManager, tmp_path: Path,
) -> None:
    session_id = await manager.start_session(agent="pty", workspace=tmp_path,
                                             command=["sh", "-c", "echo remember-$((6*7))-me"])
    for _ in range(100):
        if (await manager.get(session_id) or {}).get("status") in ("finished", "failed"):
            break
        await asyncio.sleep(0.05)
    archived = await manager.archive(session_id, True)
    assert (await manager.get(session_id) or {})["archived"] is True and archived.data == {"archived": True}
    head = manager.log.head  # the session's own events are the newest: their seqs are not reused
    tombstone = await manager.delete(session_id, cid="c-del")
    assert tombstone.type == EventType.SESSION_DELETED and tombstone.cid == "c-del"
    assert tombstone.seq == head + 1 and manager.log.head == head + 1
    assert await manager.get(session_id) is None
    left = [e for e in await manager.log.read(0, 10_000) if e.session == session_id]
    assert [e.type for e in left] == [EventType.SESSION_DELETED]
    path = manager.db.path
    assert b"remember-42-me" not in b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


async def test_a_running_session_is_not_deleted(manager: SessionManager, tmp_path: Path) -> None:
    session_id = await manager.start_session(agent="pty", workspace=tmp_path, command=["sleep", "30"])
    with pytest.raises(TetherError, match="still running") as refused:
        await manager.delete(session_id)
    assert refused.value.code == "session_live"
    assert await manager.get(session_id) is not None
