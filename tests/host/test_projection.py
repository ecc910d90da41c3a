import logging

import pytest

from tether.host import projection
from tether.host.eventlog import EventLog
from tether.host.projection import (
    SCROLLBACK_CHARS,
    EventType,
    IllegalTransition,
    Status,
    check_transition,
)

KEYS = {
    "id",
    "agent",
    "workspace",
    "command",
    "title",
    "status",
    "created",
    "last_activity",
    "exit_code",
    "last_seq",
    "cols",
    "rows",
}


async def start(log: EventLog, sid: str) -> None:
    data = {"agent": "pty", "workspace": "/w", "command": ["bash", "-l"], "title": "bash -l", "cols": 80, "rows": 24}
    await log.append(sid, EventType.SESSION_STARTED, data)


async def get(log: EventLog, sid: str, scrollback: bool = False) -> dict:
    s = await log.db.run(lambda c: projection.get_session(c, sid, with_scrollback=scrollback))
    assert s is not None
    return s


async def test_lifecycle_and_fields(log: EventLog) -> None:
    await start(log, "s1")
    s = await get(log, "s1")
    assert KEYS <= set(s) and "scrollback" not in s
    assert s["status"] == "running" and s["command"] == ["bash", "-l"] and s["cols"] == 80
    await log.append("s1", EventType.SESSION_RESIZED, {"cols": 120, "rows": 40})
    ev = await log.append("s1", EventType.SESSION_INPUT, {"text": "ls\n"}, "c1")
    s = await get(log, "s1")
    assert (s["cols"], s["rows"], s["last_seq"], s["last_activity"]) == (120, 40, ev.seq, ev.ts)
    for status in ("waiting-for-approval", "idle", "running"):
        await log.append("s1", EventType.SESSION_STATUS, {"status": status})
        assert (await get(log, "s1"))["status"] == status
    await log.append("s1", EventType.SESSION_INTERRUPTED, {})
    end = await log.append("s1", EventType.SESSION_EXITED, {"exit_code": 0, "signal": None, "reason": None})
    s = await get(log, "s1")
    assert (s["status"], s["exit_code"], s["last_seq"]) == ("finished", 0, end.seq)

    await start(log, "s2")
    await log.append("s2", EventType.SESSION_EXITED, {"exit_code": None, "signal": 9, "reason": "killed by SIGKILL"})
    s = await get(log, "s2")
    assert (s["status"], s["exit_code"], s["exit_signal"], s["exit_reason"]) == ("failed", None, 9, "killed by SIGKILL")
    await start(log, "s3")
    await log.append("s3", EventType.SESSION_EXITED, {"exit_code": 3, "signal": None, "reason": None})
    assert (await get(log, "s3"))["status"] == "failed"
    sessions = await log.db.run(projection.list_sessions)
    assert [x["id"] for x in sessions] == ["s1", "s2", "s3"]


async def test_terminal_states_are_final(log: EventLog, caplog: pytest.LogCaptureFixture) -> None:
    await start(log, "s1")
    await log.append("s1", EventType.SESSION_EXITED, {"exit_code": 1, "signal": None, "reason": None})
    with caplog.at_level(logging.WARNING, logger="tether.host.projection"):
        late = await log.append("s1", EventType.SESSION_STATUS, {"status": "running"})
        await log.append("s1", EventType.SESSION_EXITED, {"exit_code": 0, "signal": None, "reason": None})
    s = await get(log, "s1")
    assert s["status"] == "failed" and s["exit_code"] == 1
    assert s["last_seq"] == late.seq + 1
    assert "already failed" in caplog.text


async def test_scrollback_keeps_the_tail(log: EventLog) -> None:
    await start(log, "s1")
    chunk = "".join(f"{i:07d}\n" for i in range(1000))  # 8000 chars
    await log.append_many([("s1", EventType.SESSION_OUTPUT, {"stream": "pty", "data": chunk}, None)] * 5)
    for _ in range(5):
        await log.append("s1", EventType.SESSION_OUTPUT, {"stream": "pty", "data": chunk})
    await log.append("s1", EventType.SESSION_OUTPUT, {"stream": "pty", "data": "END"})
    s = await get(log, "s1", scrollback=True)
    full = chunk * 10 + "END"
    assert s["scrollback"] == full[-SCROLLBACK_CHARS:]
    assert len(s["scrollback"]) == SCROLLBACK_CHARS


async def test_events_of_unknown_sessions_are_ignored(log: EventLog) -> None:
    await log.append("nope", EventType.SESSION_OUTPUT, {"stream": "pty", "data": "x"})
    await log.append("nope", EventType.SESSION_EXITED, {"exit_code": 0, "signal": None, "reason": None})
    await log.append(None, EventType.HOST_UNLINKED, {"host_id": "h_gone"})
    assert await log.db.run(projection.list_sessions) == []


def test_transition_table() -> None:
    check_transition(Status.RUNNING, Status.IDLE)
    check_transition("idle", "failed")
    for terminal in (Status.FINISHED, Status.FAILED):
        assert terminal.terminal
        for new in Status:
            with pytest.raises(IllegalTransition):
                check_transition(terminal, new)
    with pytest.raises(IllegalTransition):
        check_transition(Status.RUNNING, Status.RUNNING)
    with pytest.raises(IllegalTransition, match="unknown"):
        check_transition(Status.RUNNING, "sleeping")
