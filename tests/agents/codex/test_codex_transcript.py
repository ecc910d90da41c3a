"""A transcript of what a newer Codex might send, replayed through the codex adapter into a real
session and event log ([8] item 4): an item type, a notification and a server request this tether
does not know are shown generically (type and a summary), the request is refused with a reason
the session shows, and the turn goes on. Retry notices and warnings become their own events.

No process: the transcript is fed to the adapter the way its app-server client hands events over.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from tests.agents.codex.test_codex_adapter_unit import FakeClient
from tether.agents.codex.adapter import CodexAgent, _Turn
from tether.agents.codex.appserver import Notification, RefusedRequest, ServerRequest
from tether.agents.policy import AgentConfig, Policy
from tether.host.agent_session import AgentSession
from tether.host.eventlog import EventLog
from tether.protocol.events import EventType

TURN = "ct-1"


def note(method: str, **params: Any) -> Notification:
    return Notification(method, {"threadId": "th-1", "turnId": TURN, **params})


def item(kind: str, item_id: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "id": item_id, **fields}


Replayed = Notification | ServerRequest | RefusedRequest


async def replay(tmp_path: Path, event_log: EventLog, transcript: list[Replayed]) -> list[Any]:
    session = AgentSession(session_id="s_replay", workspace=tmp_path, policy=Policy(), config=AgentConfig("codex"),
                           log=event_log, agent_cls=CodexAgent)
    agent = session.agent
    assert isinstance(agent, CodexAgent)
    state = _Turn("t_replay", codex_id=TURN)
    ended = False
    for event in transcript:
        ended = await agent._on_turn_event(state, event)
    assert ended, "the transcript's turn/completed ends the turn"
    return [e for e in await event_log.read(0, 1000) if e.session == "s_replay"]


async def test_unknown_types_are_shown_generically_refused_cleanly_and_the_turn_goes_on(
    tmp_path: Path, event_log: EventLog, caplog: pytest.LogCaptureFixture
) -> None:
    client = FakeClient()
    # A request Codex hands on (it is in DELIVERED_SERVER_REQUESTS) that tether cannot put: an
    # MCP server's link to open.
    question = ServerRequest("rq-1", "mcpServer/elicitation/request", {
        "threadId": "th-1", "turnId": TURN, "serverName": "notes", "mode": "url", "url": "https://notes.example/",
        "message": "Which color?"}, client)  # type: ignore[arg-type]
    client._server_requests[question.id] = question
    # An invented request: the app-server client refuses it at once and hands this on.
    invented_request = RefusedRequest("hologram/project", {"threadId": "th-1", "scene": "a red cube", "seconds": 3})
    hologram = item("hologram", "h-1", scene="a red cube", layers=["front", "back"], nested={"depth": 3})
    transcript: list[Replayed] = [
        note("warning", message="Model metadata for `mock-model` not found."),
        note("warning", message="Model metadata for `mock-model` not found."),  # shown once
        note("error", error={"message": "Reconnecting... waiting for network",
                             "additionalDetails": "Connection failed: error sending request"}, willRetry=True),
        note("error", error={"message": "Reconnecting... waiting for network"}, willRetry=True),
        note("item/started", item={**hologram, "status": "inProgress"}),
        note("thread/hologram/updated", brightness=0.5, label="dim"),
        question,
        invented_request,
        note("item/completed", item={**hologram, "status": "completed", "result": "projected"}),
        note("item/started", item=item("agentMessage", "m-1", text="")),
        note("item/agentMessage/delta", itemId="m-1", delta="Still here."),
        note("item/completed", item=item("agentMessage", "m-1", text="Still here.")),
        Notification("turn/completed", {"threadId": "th-1", "turn": {"id": TURN, "status": "completed"}}),
    ]
    with caplog.at_level(logging.WARNING, logger="tether.agents.unknown"):
        events = await replay(tmp_path, event_log, transcript)

    by_type: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_type.setdefault(e.type, []).append(e.data)
    # Codex retries: a live "reconnecting" state, counted.
    retries = by_type[EventType.TURN_RETRYING]
    assert [(r["attempt"], r["message"]) for r in retries] == [(1, "Reconnecting... waiting for network"),
                                                               (2, "Reconnecting... waiting for network")]
    assert retries[0]["details"] == "Connection failed: error sending request" and retries[1]["details"] is None
    # The invented item: its type, and a summary a person can read (no ids).
    started, completed = (
        next(d for d in by_type[t] if d["kind"] == "other") for t in (EventType.ITEM_STARTED, EventType.ITEM_COMPLETED)
    )
    assert started["type"] == completed["type"] == "hologram" and completed["status"] == "completed"
    assert "scene: a red cube" in completed["summary"] and "layers: front, back" in completed["summary"]
    assert "nested.depth: 3" in completed["summary"] and "result: projected" in completed["summary"]
    assert "h-1" not in completed["summary"]
    # Warnings, an unknown notification, and the refused request: notices the session shows.
    assert sum(n["source"] == "warning" for n in by_type[EventType.AGENT_NOTICE]) == 1
    notices = {(n["level"], n["source"]): n["message"] for n in by_type[EventType.AGENT_NOTICE]}
    assert notices[("warning", "warning")] == "Model metadata for `mock-model` not found."
    assert "thread/hologram/updated" in notices[("info", "thread/hologram/updated")]
    assert "brightness: 0.5" in notices[("info", "thread/hologram/updated")]
    refused = notices[("warning", "hologram/project")]
    assert refused.startswith("refused: Codex asked hologram/project") and "scene: a red cube" in refused
    assert refused.endswith("tether does not know this request")
    asked = notices[("warning", "mcpServer/elicitation/request")]
    assert asked.startswith("refused: Codex asked mcpServer/elicitation/request") and "Which color?" in asked
    assert asked.endswith("(not a link to open, or nested fields)")
    # Codex got an answer at once (declined), so it does not wait; and the turn went on.
    assert [m["id"] for m in client.sent] == ["rq-1"] and client.sent[0]["result"] == {"action": "decline"}
    assert by_type[EventType.ITEM_COMPLETED][-1]["text"] == "Still here."
    # Each unknown type is logged once, by name.
    logged = " ".join(r.getMessage() for r in caplog.records)
    for name in ("hologram", "thread/hologram/updated", "hologram/project"):
        assert repr(name) in logged


async def test_a_type_seen_again_is_logged_only_once(
    tmp_path: Path, event_log: EventLog, caplog: pytest.LogCaptureFixture
) -> None:
    transcript: list[Replayed] = [
        note("thread/sparkle/updated", n=i) for i in range(3)
    ] + [Notification("turn/completed", {"threadId": "th-1", "turn": {"id": TURN, "status": "completed"}})]
    with caplog.at_level(logging.WARNING, logger="tether.agents.unknown"):
        events = await replay(tmp_path, event_log, transcript)
    assert sum(1 for e in events if e.type == EventType.AGENT_NOTICE) == 3  # each shown
    assert sum("thread/sparkle/updated" in r.getMessage() for r in caplog.records) == 1  # logged once


async def test_mcp_tool_calls_and_plan_updates_have_views_of_their_own(tmp_path: Path, event_log: EventLog) -> None:
    """Shapes of Codex 0.169.0's schema (tests/agents/codex/schema/): an MCP tool call with its
    server, arguments and result (or error), and turn/plan/updated, which the pinned Codex did not
    send in these tests' runs (docs/agents.md), as a plan item."""
    call = item("mcpToolCall", "mcp-1", server="notes", tool="search", arguments={"query": "blue", "limit": 3},
                result=None, error=None, durationMs=None)
    failed = item("mcpToolCall", "mcp-2", server="notes", tool="delete", arguments={}, result=None, error=None)
    transcript: list[Replayed] = [
        note("turn/plan/updated", explanation="two steps", plan=[{"step": "mix", "status": "completed"},
                                                                {"step": "paint", "status": "inProgress"}]),
        note("item/started", item={**call, "status": "inProgress"}),
        note("item/completed", item={**call, "status": "completed", "result": {
            "content": [{"type": "text", "text": "3 notes about blue"}, {"type": "image", "data": "…"}],
            "structuredContent": None}}),
        note("item/started", item={**failed, "status": "inProgress"}),
        note("item/completed", item={**failed, "status": "failed", "error": {"message": "not allowed"}}),
        note("turn/plan/updated", explanation=None, plan=[{"step": "mix", "status": "completed"},
                                                         {"step": "paint", "status": "completed"}]),
        Notification("turn/completed", {"threadId": "th-1", "turn": {"id": TURN, "status": "completed"}}),
    ]
    events = await replay(tmp_path, event_log, transcript)
    done = [e.data for e in events if e.type == EventType.ITEM_COMPLETED]
    searched, deleted = (d for d in done if d["kind"] == "tool_call")
    assert (searched["server"], searched["tool"], searched["status"]) == ("notes", "search", "completed")
    assert '"query": "blue"' in searched["input"] and searched["output"] == "3 notes about blue"
    assert (deleted["tool"], deleted["status"], deleted["output"]) == ("delete", "failed", "not allowed")
    assert deleted["input"] == ""
    plans = [(d["explanation"], d["steps"]) for d in done if d["kind"] == "plan"]
    assert plans == [
        ("two steps", [{"text": "mix", "status": "completed"}, {"text": "paint", "status": "in_progress"}]),
        (None, [{"text": "mix", "status": "completed"}, {"text": "paint", "status": "completed"}]),
    ]
