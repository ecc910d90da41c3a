"""What a newer Claude Code might send, replayed through the claude adapter into a real session and
event log ([8] item 4): a message type, a system message and a content block this tether does not
know are shown generically (their name and a readable summary), logged once per type; a request it
does not know is refused at once; and the turn goes on to its result. Also a question Claude Code
withdraws (``control_cancel_request``) right after asking it: the withdrawal is handled after the
question, in the order Claude Code wrote them, so nobody is left with a card Claude Code no longer
waits for.

No process: stream-json lines are parsed and fed to the adapter the way its reading task hands
them over."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from tether.agents.claude import stream
from tether.agents.claude.adapter import ClaudeAgent, _Turn
from tether.agents.policy import AgentConfig, Policy
from tether.host.agent_session import AgentSession
from tether.host.eventlog import EventLog
from tether.host.projection import pending_approvals
from tether.protocol.events import EventType


def line(**message: Any) -> stream.Message:
    return stream.parse_line(json.dumps(message))


RESULT = line(type="result", subtype="success", is_error=False, result="ok", usage={"input_tokens": 1})


class Replies:
    """Stands in for the Claude Code process: keeps what the adapter answers."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def reply(self, message: dict[str, Any]) -> bool:
        self.sent.append(message)
        return True


async def replay(
    tmp_path: Path, event_log: EventLog, transcript: list[stream.Message], replies: Replies | None = None,
) -> list[Any]:
    session = AgentSession(session_id="s_replay", workspace=tmp_path, policy=Policy(), config=AgentConfig("claude"),
                           log=event_log, agent_cls=ClaudeAgent)
    agent = session.agent
    assert isinstance(agent, ClaudeAgent)
    agent.process = replies  # type: ignore[assignment]
    state = _Turn("t_replay")
    ended = False
    for message in transcript:
        ended = await agent._on_turn_event(state, message)
    assert ended, "the transcript's result ends the turn"
    return [e for e in await event_log.read(0, 1000) if e.session == "s_replay"]


async def test_unknown_messages_blocks_and_system_messages_are_shown_and_the_turn_goes_on(
    tmp_path: Path, event_log: EventLog, caplog: pytest.LogCaptureFixture,
) -> None:
    transcript = [
        line(type="system", subtype="init", permissionMode="default", tools=["Bash"]),
        line(type="hologram", scene="a red cube", layers=["front", "back"], uuid="u-1"),
        line(type="hologram", scene="a blue cube", uuid="u-2"),
        line(type="system", subtype="weather_report", sky="clear", session_id="x"),
        # An invented request: answered at once with an error, so Claude Code does not wait.
        line(type="control_request", request_id="rq-1", request={"subtype": "hologram_consent", "scene": "cube"}),
        line(type="assistant", message={"id": "m1", "content": [
            {"type": "diagram", "id": "d-1", "nodes": 3, "caption": "the relay and two hosts"},
            {"type": "redacted_thinking", "data": "…"},
            {"type": "text", "text": "Still here."},
        ]}),
        RESULT,
    ]
    replies = Replies()
    with caplog.at_level(logging.WARNING, logger="tether.agents.unknown"):
        events = await replay(tmp_path, event_log, transcript, replies)
    assert replies.sent == [{"type": "control_response", "response": {
        "subtype": "error", "request_id": "rq-1", "error": "tether does not handle hologram_consent"}}]
    notices = [e.data for e in events if e.type == EventType.AGENT_NOTICE]
    assert [(n["source"], n["level"]) for n in notices] == [("hologram", "info")] * 2 + [
        ("weather_report", "info"), ("hologram_consent", "warning")]
    assert notices[3]["message"] == ("refused: Claude Code asked hologram_consent (scene: cube); "
                                     "tether does not know this request")
    assert "scene: a red cube" in notices[0]["message"] and "layers: front, back" in notices[0]["message"]
    assert "u-1" not in notices[0]["message"] and "sky: clear" in notices[2]["message"]
    [diagram] = [e.data for e in events if e.type == EventType.ITEM_COMPLETED and e.data["kind"] == "other"]
    assert diagram["type"] == "diagram" and "caption: the relay and two hosts" in diagram["summary"]
    assert "d-1" not in diagram["summary"]
    texts = [e.data["text"] for e in events if e.type == EventType.ITEM_COMPLETED and e.data["kind"] == "agent_message"]
    assert texts == ["Still here."]
    logged = [r.getMessage() for r in caplog.records]
    for name in ("hologram", "weather_report", "diagram", "hologram_consent"):
        assert sum(repr(name) in m for m in logged) == 1, name  # once per type


async def test_a_form_withdrawn_as_soon_as_it_is_asked_is_never_left_waiting(
    tmp_path: Path, event_log: EventLog,
) -> None:
    session = AgentSession(session_id="s_withdrawn", workspace=tmp_path, policy=Policy(),
                           config=AgentConfig("claude"), log=event_log, agent_cls=ClaudeAgent)
    agent = session.agent
    assert isinstance(agent, ClaudeAgent)
    replies = Replies()
    agent.process = replies  # type: ignore[assignment]
    form = {"subtype": "elicitation", "mcp_server_name": "notes", "message": "Which?", "mode": "form",
            "requested_schema": {"type": "object", "properties": {"shade": {"type": "string", "enum": ["sky"]}}}}
    # Both lines in one read of Claude Code's output: its reading task hands them over back to back,
    # before the turn has seen the form.
    for message in (line(type="control_request", request_id="rq-form", request=form),
                    line(type="control_cancel_request", request_id="rq-form"), RESULT):
        agent._on_event(message)
    await agent._follow(_Turn("t_withdrawn"))
    for _ in range(10):  # the question's task, cancelled, ends
        await asyncio.sleep(0)
    assert agent._approvals == {}
    assert await event_log.db.run(lambda c: pending_approvals(c, "s_withdrawn"), write=False) == []
    assert replies.sent == []  # nothing is answered to a request Claude Code withdrew
