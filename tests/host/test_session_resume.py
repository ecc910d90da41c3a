"""Agent sessions outlive the host process ([11] 1): after a clean stop or a crash, a session goes
on with its conversation on the next prompt; what the stopped host left open is said closed; the
resumed agent runs under the host's policy and caps as they are now."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tether.agents.base import Agent, AgentContext, Decision, Exchange, ItemKind, Resumed
from tether.agents.policy import AgentConfig, Approval, Policy, Sandbox
from tether.agents.registry import AGENTS, AgentSpec, Kind
from tether.errors import TetherError
from tether.host import resume
from tether.host.config import Limits
from tether.host.eventlog import Event, EventLog
from tether.host.principal import Principal
from tether.host.sessions import SessionError, SessionManager
from tether.host.workspaces import resolve_workspace
from tether.protocol.events import AgentMessageDone, EventType

BY = {"id": "d_1", "name": "phone"}


class RecallAgent(Agent):
    """Keeps a conversation id of its own; each answer says what it was resumed with."""

    name = "recall"
    opened: ClassVar[list[AgentContext]] = []
    fail_open: ClassVar[str | None] = None

    def __init__(self, ctx: AgentContext) -> None:
        super().__init__(ctx)
        resumed = ctx.resumed
        self.conv = resumed.conversation if resumed and resumed.conversation else f"conv-{ctx.session_id}"

    async def open(self) -> None:
        if self.fail_open:
            raise TetherError(self.fail_open, code="agent_config")
        RecallAgent.opened.append(self.ctx)

    def conversation(self) -> str | None:
        return self.conv

    async def run_turn(self, turn: str, text: str) -> None:
        if text == "ask":
            await self.ctx.request_approval("command", {"command": "true"}, item=None, options=list(Decision))
        earlier = self.ctx.resumed.transcript if self.ctx.resumed else ()
        said = f"{text} | {self.conv} | " + " / ".join(f"{e.prompt}={e.reply}" for e in earlier)
        await self.ctx.emit(AgentMessageDone(turn=turn, item=self.ctx.new_id("i"), status="completed", text=said))


@pytest.fixture(autouse=True)
def recall(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(AGENTS, "recall", AgentSpec("recall", Kind.TURNS, f"{__name__}:RecallAgent", {}))
    RecallAgent.opened.clear()
    RecallAgent.fail_open = None
    yield


async def events_of(log: EventLog, sid: str, type: str, count: int = 1) -> list[Event]:
    async with asyncio.timeout(10):
        while True:
            found = [e for e in await log.read(0, 10_000) if e.session == sid and e.type == type]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.02)


async def one_turn_then_stop(log: EventLog, tmp_path: Path, policy: Policy | None = None) -> str:
    """A recall session that answered "one", of a host run that then stopped cleanly."""
    first = SessionManager(log, log.db)
    await first.start()
    sid = await first.start_session(agent="recall", workspace=tmp_path, prompt="one", policy=policy)
    await events_of(log, sid, EventType.TURN_COMPLETED)
    await first.close()
    return sid


def replies(events: list[Event]) -> list[str]:
    return [e.data["text"] for e in events if e.data.get("kind") == ItemKind.AGENT_MESSAGE]


async def test_an_agent_session_goes_on_after_a_clean_stop(log: EventLog, tmp_path: Path) -> None:
    sid = await one_turn_then_stop(log, tmp_path)
    started = (await events_of(log, sid, EventType.SESSION_STARTED))[0]
    assert started.data["conversation"] == f"conv-{sid}"
    assert [e.data["message"] for e in await events_of(log, sid, EventType.AGENT_NOTICE)] == [resume.NOTICE]

    second = SessionManager(log, log.db)
    await second.start()
    row = await second.get(sid)
    assert row is not None and row["status"] == "idle"  # not failed: it waits for a prompt
    assert len(await events_of(log, sid, EventType.AGENT_NOTICE)) == 1  # said once, not again
    assert (await second.send_input(sid, "two")).type == EventType.TURN_STARTED
    await events_of(log, sid, EventType.TURN_COMPLETED, 2)
    said = replies(await events_of(log, sid, EventType.ITEM_COMPLETED, 4))
    assert said[-1] == f"two | conv-{sid} | one=one | conv-{sid} | "
    assert RecallAgent.opened[-1].resumed == Resumed(f"conv-{sid}", (Exchange("one", said[0]),))
    await second.close()


async def test_a_crash_mid_turn_is_said_and_the_session_goes_on(log: EventLog, tmp_path: Path) -> None:
    """The host died while the agent waited for an approval with a prompt queued: the next host
    clears the approval, fails the turn, says the queued prompt dropped, once."""
    first = SessionManager(log, log.db)
    await first.start()
    sid = await first.start_session(agent="recall", workspace=tmp_path, prompt="ask")
    (asked,) = await events_of(log, sid, EventType.APPROVAL_REQUESTED)
    queued = await first.send_input(sid, "later")
    # A crash: the first manager's session is never closed; a new one starts on the same log.
    for _ in range(2):  # a second restart adds nothing
        second = SessionManager(log, log.db)
        await second.start()
    (cleared,) = await events_of(log, sid, EventType.APPROVAL_CLEARED)
    assert cleared.data == {"approval": asked.data["approval"], "reason": resume.TURN_LOST}
    (done,) = await events_of(log, sid, EventType.TURN_COMPLETED)
    (started,) = await events_of(log, sid, EventType.TURN_STARTED)
    assert done.data == {"turn": started.data["turn"], "status": "failed", "error": resume.TURN_LOST}
    (dropped,) = await events_of(log, sid, EventType.TURN_UNQUEUED)
    assert dropped.data == {"queued": queued.data["queued"], "reason": resume.QUEUED_LOST}
    assert len(await events_of(log, sid, EventType.AGENT_NOTICE)) == 1
    row = await second.get(sid)
    assert row is not None and row["status"] == "idle"
    with pytest.raises(TetherError, match="not pending"):
        await second.approve(sid, asked.data["approval"], Decision.APPROVE, BY)
    await second.send_input(sid, "again")
    await events_of(log, sid, EventType.TURN_COMPLETED, 2)
    await second.close()
    await first.close()


async def test_a_resumed_agent_runs_under_the_host_policy_of_now(log: EventLog, tmp_path: Path) -> None:
    loose = Policy(Approval.NEVER, Sandbox.FULL_ACCESS)
    sid = await one_turn_then_stop(log, tmp_path, loose)

    def stricter_now(agent: str, recorded: Policy, workspace: str) -> tuple[AgentConfig, Policy, Path]:
        assert recorded == loose and workspace == str(tmp_path)
        return AgentConfig(agent), recorded.within(Policy(Approval.ON_REQUEST, Sandbox.READ_ONLY)), tmp_path

    second = SessionManager(log, log.db, resume_as=stricter_now)
    await second.start()
    await second.send_input(sid, "two")
    assert RecallAgent.opened[-1].policy == Policy(Approval.ON_REQUEST, Sandbox.READ_ONLY)
    await second.close()

    def disabled(agent: str, recorded: Policy, workspace: str) -> tuple[AgentConfig, Policy, Path]:
        return AgentConfig(agent, enabled=False), recorded, tmp_path

    third = SessionManager(log, log.db, resume_as=disabled)
    await third.start()
    with pytest.raises(SessionError, match="disabled on this host") as off:
        await third.send_input(sid, "three")
    assert off.value.code == "bad_agent"

    def elsewhere(agent: str, recorded: Policy, workspace: str) -> tuple[AgentConfig, Policy, Path]:
        return AgentConfig(agent), recorded, resolve_workspace(workspace, [tmp_path / "only-here"])

    fourth = SessionManager(log, log.db, resume_as=elsewhere)
    await fourth.start()
    with pytest.raises(SessionError, match="outside the allowed workspaces") as outside:
        await fourth.send_input(sid, "four")
    assert outside.value.code == "workspace"


async def test_resuming_counts_against_the_caps_of_whoever_drives_it(log: EventLog, tmp_path: Path) -> None:
    sid = await one_turn_then_stop(log, tmp_path)
    phone = Principal(kind="device", id="d_phone", name="phone", scopes=frozenset())
    second = SessionManager(log, log.db, limits=Limits(max_sessions_per_caller=1))
    await second.start()
    await second.start_session(agent="recall", workspace=tmp_path, prompt="mine", caller=phone)
    with pytest.raises(SessionError, match="already runs 1 live sessions") as capped:
        await second.send_input(sid, "two", caller=phone)
    assert capped.value.code == "limit"
    await second.send_input(sid, "two")  # the owner may
    await second.close()


async def test_prompts_sent_at_once_resume_the_agent_once(log: EventLog, tmp_path: Path) -> None:
    sid = await one_turn_then_stop(log, tmp_path)
    second = SessionManager(log, log.db)
    await second.start()
    opened = len(RecallAgent.opened)
    sent = await asyncio.gather(*(second.send_input(sid, f"p{n}") for n in range(3)))
    assert len(RecallAgent.opened) == opened + 1
    assert {e.type for e in sent} <= {EventType.TURN_STARTED, EventType.TURN_QUEUED}
    started = await events_of(log, sid, EventType.TURN_STARTED, 4)
    assert sorted(e.data["input"] for e in started[1:]) == ["p0", "p1", "p2"]
    await events_of(log, sid, EventType.TURN_COMPLETED, 4)
    await second.close()


async def test_an_agent_that_cannot_resume_says_why_and_the_session_waits(log: EventLog, tmp_path: Path) -> None:
    sid = await one_turn_then_stop(log, tmp_path)
    second = SessionManager(log, log.db)
    await second.start()
    with pytest.raises(SessionError, match="the recall agent cannot pick this conversation up: no binary"):
        RecallAgent.fail_open = "no binary"
        await second.send_input(sid, "two")
    row = await second.get(sid)
    assert row is not None and row["status"] == "idle"  # fixed on the host, it goes on
    with pytest.raises(SessionError, match="host restarted since its last turn") as idle:
        await second.interrupt(sid)
    assert idle.value.code == "session_idle"
    # Asking for its models opens no agent for a caller who may not prompt it (a reader).
    opened = len(RecallAgent.opened)
    with pytest.raises(SessionError, match="host restarted since its last turn") as reader:
        await second.models(sid, resume=False)
    assert reader.value.code == "session_idle" and len(RecallAgent.opened) == opened
    RecallAgent.fail_open = None
    await second.send_input(sid, "two")
    await events_of(log, sid, EventType.TURN_COMPLETED, 2)
    await second.close()


async def test_an_idle_agent_session_is_deleted_and_its_agent_stops(log: EventLog, tmp_path: Path) -> None:
    manager = SessionManager(log, log.db)
    await manager.start()
    sid = await manager.start_session(agent="recall", workspace=tmp_path, prompt="ask")
    await events_of(log, sid, EventType.APPROVAL_REQUESTED)
    with pytest.raises(SessionError, match="still running") as busy:
        await manager.delete(sid)
    assert busy.value.code == "session_live"
    await manager.interrupt(sid)
    await events_of(log, sid, EventType.TURN_COMPLETED)
    await manager.delete(sid)
    assert await manager.get(sid) is None
    with pytest.raises(SessionError, match="no such session"):
        await manager.send_input(sid, "more")
    await manager.close()
    # The host's stop says nothing more of it: the tombstone is its last event.
    assert [e.type for e in await log.read(0, 10_000) if e.session == sid] == [EventType.SESSION_DELETED]


def test_the_transcript_is_the_turns_in_words_the_latest_within_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, session TEXT, type TEXT, data TEXT)")
    rows: list[tuple[str, dict[str, Any]]] = [
        (EventType.TURN_STARTED, {"turn": "t1", "input": "list files"}),
        (EventType.ITEM_STARTED, {"turn": "t1", "item": "i1", "kind": ItemKind.COMMAND, "command": "ls"}),
        (EventType.ITEM_COMPLETED, {"turn": "t1", "item": "i1", "kind": ItemKind.COMMAND, "exit_code": 0,
                                    "output": "a.py\n", "status": "completed"}),
        (EventType.ITEM_COMPLETED, {"turn": "t1", "item": "i0", "kind": ItemKind.USER_MESSAGE, "text": "list files"}),
        (EventType.ITEM_COMPLETED, {"turn": "t1", "item": "i2", "kind": ItemKind.AGENT_MESSAGE, "text": "One file."}),
        (EventType.TURN_STARTED, {"turn": "t2", "input": "fix it"}),
        (EventType.ITEM_COMPLETED, {"turn": "t2", "item": "i3", "kind": ItemKind.FILE_CHANGE, "path": "a.py",
                                    "diff": "+x = 1\n", "status": "declined"}),
    ]
    for n, (type_, data) in enumerate(rows):
        conn.execute("INSERT INTO events VALUES (?, 's', ?, ?)", (n + 1, type_, json.dumps(data)))
    got = resume.transcript(conn, "s")
    assert got == (
        Exchange("list files", "[ran `ls`, exit 0]\na.py\n\nOne file."),
        Exchange("fix it", "[changed a.py (declined)]\n+x = 1"),
    )
    monkeypatch.setattr(resume, "TRANSCRIPT_CHARS", 40)  # room for the latest turn only
    assert resume.transcript(conn, "s") == got[1:]
    assert resume.transcript(conn, "other") == ()
