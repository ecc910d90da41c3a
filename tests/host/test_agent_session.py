"""The host's side of agent sessions, with a scripted adapter: turns, approvals, interrupts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tether.agents.base import Agent, Decision, TurnSettings
from tether.agents.policy import AgentConfig, Policy
from tether.host.agent_session import MAX_QUEUED, AgentSession, AgentSessionError
from tether.host.eventlog import EventLog
from tether.host.projection import ApprovalConflict
from tether.protocol.events import AgentMessageDone, EventType


class AskingAgent(Agent):
    """Asks for approval once per turn; says what it got."""

    name = "asking"
    withdraw = False

    async def run_turn(self, turn: str, text: str) -> None:
        ask = asyncio.create_task(
            self.ctx.request_approval("command", {"command": text, "cwd": "/"}, item=None,
                                      options=[Decision.APPROVE, Decision.DENY])
        )
        if self.withdraw:
            await asyncio.sleep(0.05)
            ask.cancel()  # the agent resolved the question itself
            with pytest.raises(asyncio.CancelledError):
                await ask
            return
        decision = await ask
        await self.ctx.emit(AgentMessageDone(turn=turn, item="i1", status="completed", text=f"got {decision.value}"))


async def session_for(log: EventLog, tmp_path: Path, agent: type[Agent] = AskingAgent) -> AgentSession:
    await log.append("s_1", EventType.SESSION_STARTED, {"agent": "asking", "workspace": str(tmp_path),
                                                        "command": [], "title": "t", "cols": 80, "rows": 24})
    return AgentSession(session_id="s_1", workspace=tmp_path, policy=Policy(), config=AgentConfig("asking"),
                        log=log, agent_cls=agent)


async def wait_for(log: EventLog, type_: str, count: int = 1) -> list[dict[str, Any]]:
    for _ in range(200):
        found = [e.to_wire() for e in await log.read(0, 1000) if e.type == type_]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {type_}")


async def test_first_answer_wins_and_late_answers_are_refused(log: EventLog, tmp_path: Path) -> None:
    session = await session_for(log, tmp_path)
    await session.send_input("ls")
    [requested] = await wait_for(log, EventType.APPROVAL_REQUESTED)
    approval = requested["data"]["approval"]
    results = await asyncio.gather(
        session.approve(approval, Decision.APPROVE, {"id": "a", "name": "phone"}),
        session.approve(approval, Decision.DENY, {"id": "b", "name": "laptop"}),
        return_exceptions=True,
    )
    assert sum(isinstance(r, ApprovalConflict) for r in results) == 1
    [resolved] = await wait_for(log, EventType.APPROVAL_RESOLVED)
    [done] = await wait_for(log, EventType.TURN_COMPLETED)
    assert done["data"]["status"] == "completed"
    messages = [e for e in await wait_for(log, EventType.ITEM_COMPLETED, 2) if e["data"]["kind"] == "agent_message"]
    assert messages[0]["data"]["text"] == f"got {resolved['data']['decision']}"
    with pytest.raises(ApprovalConflict):
        await session.approve(approval, Decision.APPROVE, {"id": "c", "name": "late"})
    with pytest.raises(ApprovalConflict):
        await session.approve("ap_unknown", Decision.APPROVE, {"id": "c", "name": "x"})


class QuestioningAgent(Agent):
    """Asks the people a question (one part with options, one secret); says what it got."""

    name = "questioning"

    async def run_turn(self, turn: str, text: str) -> None:
        answers = await self.ctx.ask([
            {"id": "color", "header": "Color", "question": "Which?", "options": [{"label": "red", "description": ""}],
             "is_other": True, "is_secret": False},
            {"id": "pin", "header": "PIN", "question": "Your PIN?", "options": [], "is_other": True, "is_secret": True},
        ], item=None)
        await self.ctx.emit(AgentMessageDone(turn=turn, item="i1", status="completed", text=json.dumps(answers)))


async def test_a_question_is_answered_once_and_a_secret_answer_is_never_logged(log: EventLog, tmp_path: Path) -> None:
    session = await session_for(log, tmp_path, QuestioningAgent)
    await session.send_input("ask me")
    [requested] = await wait_for(log, EventType.APPROVAL_REQUESTED)
    approval = requested["data"]["approval"]
    assert requested["data"]["kind"] == "question" and requested["data"]["options"] == []
    # Not an approval: approving it, or answering a part it does not have, is refused.
    with pytest.raises(AgentSessionError, match="this is a question"):
        await session.approve(approval, Decision.APPROVE, {"id": "a", "name": "phone"})
    with pytest.raises(AgentSessionError, match="no part 'size'"):
        await session.answer(approval, {"size": ["big"]}, {"id": "a", "name": "phone"})
    results = await asyncio.gather(
        session.answer(approval, {"color": ["red"], "pin": ["4711"]}, {"id": "a", "name": "phone"}),
        session.answer(approval, {"color": ["green"], "pin": ["0000"]}, {"id": "b", "name": "laptop"}),
        return_exceptions=True,
    )
    assert sum(isinstance(r, ApprovalConflict) for r in results) == 1
    [resolved] = await wait_for(log, EventType.APPROVAL_RESOLVED)
    said = [e for e in await wait_for(log, EventType.ITEM_COMPLETED, 2) if e["data"]["kind"] == "agent_message"]
    got = json.loads(said[0]["data"]["text"])
    winner = resolved["data"]["by"]["name"]
    assert got == ({"color": ["red"], "pin": ["4711"]} if winner == "phone" else {"color": ["green"], "pin": ["0000"]})
    # The agent got the PIN; the log shows only that one was given.
    assert resolved["data"]["answers"] == {"color": got["color"], "pin": ["[secret]"]}
    logged = json.dumps([e.to_wire() for e in await log.read(0, 1000) if e.type != EventType.ITEM_COMPLETED])
    assert "4711" not in logged and "0000" not in logged
    with pytest.raises(ApprovalConflict):
        await session.answer(approval, {"color": ["red"]}, {"id": "c", "name": "late"})


async def test_prompts_sent_while_the_agent_works_wait_in_order_and_can_be_cancelled(
    log: EventLog, tmp_path: Path,
) -> None:
    session = await session_for(log, tmp_path)
    await session.send_input("first")
    second = await session.send_input("second", cid="c2")
    third = await session.send_input("third")
    assert (second.type, third.type) == (EventType.TURN_QUEUED, EventType.TURN_QUEUED)
    assert second.data["input"] == "second" and second.cid == "c2"
    cancelled = await session.unqueue(third.data["queued"], {"id": "d_1", "name": "phone"})
    assert cancelled.data == {"queued": third.data["queued"], "reason": "cancelled by phone"}
    with pytest.raises(AgentSessionError, match="has started, or was cancelled"):
        await session.unqueue(third.data["queued"], {"id": "d_1", "name": "phone"})

    # The first turn ends (its approval answered): the second starts by itself, with its cid.
    [asked] = await wait_for(log, EventType.APPROVAL_REQUESTED)
    await session.approve(asked["data"]["approval"], Decision.APPROVE, {"id": "d_1", "name": "phone"})
    started = await wait_for(log, EventType.TURN_STARTED, 2)
    assert [(e["data"]["input"], e["data"].get("queued"), e.get("cid")) for e in started] == [
        ("first", None, None), ("second", second.data["queued"], "c2")]
    assert not any(e.data.get("input") == "third" for e in await log.read(0, 1000) if e.type == EventType.TURN_STARTED)
    await session.close()


async def test_queued_prompts_are_said_dropped_when_the_session_ends(log: EventLog, tmp_path: Path) -> None:
    session = await session_for(log, tmp_path)
    await session.send_input("first")
    queued = [await session.send_input(f"later {n}") for n in range(MAX_QUEUED)]
    with pytest.raises(AgentSessionError, match=f"{MAX_QUEUED} prompts already wait") as full:
        await session.send_input("one too many")
    assert full.value.code == "busy"
    await session.close()
    dropped = await wait_for(log, EventType.TURN_UNQUEUED, MAX_QUEUED)
    assert [e["data"] for e in dropped] == [{"queued": q.data["queued"], "reason": "the session ended"} for q in queued]


async def test_interrupt_clears_the_pending_approval(log: EventLog, tmp_path: Path) -> None:
    session = await session_for(log, tmp_path)
    await session.send_input("sleep 100")
    [requested] = await wait_for(log, EventType.APPROVAL_REQUESTED)
    await session.interrupt()
    [cleared] = await wait_for(log, EventType.APPROVAL_CLEARED)
    [done] = await wait_for(log, EventType.TURN_COMPLETED)
    assert cleared["data"] == {"approval": requested["data"]["approval"], "reason": "the turn was interrupted"}
    assert done["data"]["status"] == "interrupted" and cleared["seq"] < done["seq"]
    with pytest.raises(ApprovalConflict):
        await session.approve(requested["data"]["approval"], Decision.APPROVE, {"id": "a", "name": "late"})


async def test_a_withdrawn_question_is_cleared(log: EventLog, tmp_path: Path) -> None:
    class Withdrawing(AskingAgent):
        withdraw = True

    session = await session_for(log, tmp_path, Withdrawing)
    await session.send_input("x")
    [cleared] = await wait_for(log, EventType.APPROVAL_CLEARED)
    assert cleared["data"]["reason"] == "withdrawn by the agent"
    [done] = await wait_for(log, EventType.TURN_COMPLETED)
    assert done["data"]["status"] == "completed"
    assert len(await wait_for(log, EventType.APPROVAL_CLEARED)) == 1


class ModalAgent(AskingAgent):
    """Takes only the mode "plan" (checked when a turn starts, as the real adapters do)."""

    name = "modal"

    def choose(self, settings: TurnSettings) -> None:
        if settings.mode not in (None, "plan"):
            raise AgentSessionError(f"no mode {settings.mode!r}", code="bad_params")


async def test_a_queued_prompt_the_agent_refuses_at_its_start_is_said_dropped_and_the_next_goes(
    log: EventLog, tmp_path: Path,
) -> None:
    session = await session_for(log, tmp_path, ModalAgent)
    await session.send_input("first")
    bad = await session.send_input("in a mode it has not", settings=TurnSettings(mode="hologram"))
    good = await session.send_input("second")
    [asked] = await wait_for(log, EventType.APPROVAL_REQUESTED)
    await session.approve(asked["data"]["approval"], Decision.APPROVE, {"id": "d_1", "name": "phone"})
    [dropped] = await wait_for(log, EventType.TURN_UNQUEUED)
    assert dropped["data"]["queued"] == bad.data["queued"]
    assert dropped["data"]["reason"] == "it could not start: no mode 'hologram'"
    started = await wait_for(log, EventType.TURN_STARTED, 2)
    assert started[1]["data"]["queued"] == good.data["queued"]
    await session.close()
