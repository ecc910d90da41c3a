"""An MCP server's tools through the real Codex ([8] item 1): a tool call shown with its server,
arguments and result; Codex's question whether to allow it (an MCP elicitation) as an approval
card, "for the session" remembered by Codex; and a form the MCP server asks Codex's user to fill
in (elicitation/create) as a question card whose answers reach the server typed; a link to open
or a form of several choices declined and said, and a nested form, which Codex refuses itself.

The server is tests/support/fake_mcp.py, named in the CODEX_HOME's config.toml; it logs each call
it really got."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.agents.codex.conftest import Harness
from tests.support.fake_responses import FakeResponses
from tether.agents.base import Decision
from tether.host.agent_session import AgentSession
from tether.host.eventlog import Event
from tether.protocol.events import EventType

pytestmark = pytest.mark.slow

BY = {"id": "d_test", "name": "test"}
REPO = Path(__file__).resolve().parents[3]


def lookup(query: str) -> dict[str, object]:
    """The model calls the MCP server's tool (Codex offers a server's tools as a namespace)."""
    return {"call": {"name": "lookup", "namespace": "mcp__notes", "arguments": {"query": query}}}


@pytest.fixture
def calls(harness: Harness, tmp_path: Path) -> Path:
    """Adds the MCP server to the harness's CODEX_HOME; the file it logs its calls to."""
    log = tmp_path / "mcp-calls.jsonl"
    config = harness.codex_home / "config.toml"
    config.write_text(config.read_text() + f"""
[mcp_servers.notes]
command = {json.dumps(sys.executable)}
args = ["-m", "tests.support.fake_mcp"]
env = {{ PYTHONPATH = {json.dumps(str(REPO))}, FAKE_MCP_LOG = {json.dumps(str(log))} }}
""")
    return log


def called(log: Path) -> list[str]:
    return [json.loads(line)["arguments"]["query"] for line in log.read_text().splitlines()] if log.exists() else []


async def run_allowed(
    harness: Harness, fake_model: FakeResponses, query: str, reply: str,
) -> tuple[AgentSession, Event, list[Event]]:
    """A turn whose model calls the tool with ``query``, the call allowed: the session, the
    allowing approval and the session's events once the turn completed."""
    fake_model.add(lookup(query), {"text": reply})
    session = await harness.start("paint")
    allow = await harness.wait(session, EventType.APPROVAL_REQUESTED)
    await session.approve(allow.data["approval"], Decision.APPROVE, BY)
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed", done.data
    return session, allow, await harness.events(session)


def refusals(events: list[Event]) -> list[dict[str, Any]]:
    return [e.data for e in events
            if e.type == EventType.AGENT_NOTICE and e.data["source"] == "mcpServer/elicitation/request"]


async def test_an_mcp_tool_call_is_approved_for_the_session_then_denied_elsewhere(
    harness: Harness, fake_model: FakeResponses, calls: Path,
) -> None:
    fake_model.add(lookup("blue"), lookup("red"), {"text": "Two lookups."})
    session = await harness.start("look up colours")
    asked = await harness.wait(session, EventType.APPROVAL_REQUESTED)
    assert asked.data["kind"] == "tool" and asked.data["options"] == ["approve", "approve_for_session", "deny"]
    details = asked.data["details"]
    assert (details["tool"], details["server"]) == ("lookup", "notes")
    assert json.loads(details["input"]) == {"query": "blue"}
    assert 'run tool "lookup"' in details["reason"]
    [started] = await harness.items(session, EventType.ITEM_STARTED, "tool_call")
    assert asked.data["item"] == started["item"]
    await session.approve(asked.data["approval"], Decision.APPROVE_FOR_SESSION, BY)
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed", done.data

    # The second call was not asked about: Codex remembered the answer for the session.
    assert len([e for e in await harness.events(session) if e.type == EventType.APPROVAL_REQUESTED]) == 1
    first, second = await harness.items(session, EventType.ITEM_COMPLETED, "tool_call")
    assert (first["output"], second["output"]) == ("3 notes about blue", "3 notes about red")
    assert first["status"] == second["status"] == "completed" and called(calls) == ["blue", "red"]
    assert "3 notes about red" in json.dumps(fake_model.requests[2]["input"])


async def test_a_denied_mcp_tool_call_never_reaches_the_server(
    harness: Harness, fake_model: FakeResponses, calls: Path,
) -> None:
    fake_model.add(lookup("secrets"), {"text": "Denied, then."})
    session = await harness.start("look up secrets")
    asked = await harness.wait(session, EventType.APPROVAL_REQUESTED)
    await session.approve(asked.data["approval"], Decision.DENY, BY)
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed"
    [item] = await harness.items(session, EventType.ITEM_COMPLETED, "tool_call")
    assert item["status"] == "failed" and "rejected" in item["output"]
    assert called(calls) == []


async def test_an_mcp_servers_form_is_a_question_card_whose_answers_reach_it_typed(
    harness: Harness, fake_model: FakeResponses, calls: Path,
) -> None:
    fake_model.add(lookup("ask"), {"text": "Painting."})
    session = await harness.start("paint")
    allow = await harness.wait(session, EventType.APPROVAL_REQUESTED)
    await session.approve(allow.data["approval"], Decision.APPROVE, BY)
    form = await harness.wait(session, EventType.APPROVAL_REQUESTED, lambda d: d["kind"] == "question")
    questions = {q["id"]: q for q in form.data["details"]["questions"]}
    assert set(questions) == {"shade", "coats"}
    assert questions["shade"]["header"] == "Shade" and [o["label"] for o in questions["shade"]["options"]] == [
        "sky", "navy"]
    assert questions["coats"]["is_other"] is True and questions["coats"]["options"] == []
    assert any("The painter needs to know" in q["question"] for q in questions.values())

    await session.answer(form.data["approval"], {"shade": ["navy"], "coats": ["2"]}, BY)
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed", done.data
    [item] = await harness.items(session, EventType.ITEM_COMPLETED, "tool_call")
    came_back = json.loads(item["output"].removeprefix("the form came back: "))
    assert came_back == {"action": "accept", "content": {"shade": "navy", "coats": 2}}


async def test_a_link_an_mcp_server_asks_to_open_is_declined_and_said(
    harness: Harness, fake_model: FakeResponses, calls: Path,
) -> None:
    session, _, events = await run_allowed(harness, fake_model, "link", "No sign-in, then.")
    refused = refusals(events)
    assert len(refused) == 1 and refused[0]["message"].startswith("refused: ")
    assert "https://paint.example/login" in refused[0]["message"] and "not a link to open" in refused[0]["message"]
    # Nobody was asked; the server heard "decline" and the turn went on.
    assert [a for a in events if a.type == EventType.APPROVAL_REQUESTED and a.data["kind"] == "question"] == []
    [item] = await harness.items(session, EventType.ITEM_COMPLETED, "tool_call")
    assert item["output"] == 'the form came back: {"action": "decline"}'


async def test_a_form_of_several_choices_is_declined_and_said(
    harness: Harness, fake_model: FakeResponses, calls: Path,
) -> None:
    # A field of several choices (an array, MCP 2025-11-25) is not one tether's cards put.
    session, allow, events = await run_allowed(harness, fake_model, "walls", "No walls, then.")
    [refused] = refusals(events)
    assert refused["message"].startswith("refused: ") and "requestedSchema.properties.walls.title: Walls" in (
        refused["message"]) and "nested fields" in refused["message"]
    assert [e.data["approval"] for e in events if e.type == EventType.APPROVAL_REQUESTED] == [
        allow.data["approval"]]
    [item] = await harness.items(session, EventType.ITEM_COMPLETED, "tool_call")
    assert item["output"] == 'the form came back: {"action": "decline"}' and called(calls) == ["walls"]


async def test_a_nested_form_is_refused_by_codex_itself_and_the_turn_goes_on(
    harness: Harness, fake_model: FakeResponses, calls: Path,
) -> None:
    # MCP's forms are flat: Codex does not read a form with an object field as an elicitation at
    # all. It answers the server with an error of its own and tether is never asked.
    session, allow, events = await run_allowed(harness, fake_model, "nested", "No form, then.")
    assert refusals(events) == []
    assert [e.data["approval"] for e in events if e.type == EventType.APPROVAL_REQUESTED] == [
        allow.data["approval"]]
    [item] = await harness.items(session, EventType.ITEM_COMPLETED, "tool_call")
    came_back = json.loads(item["output"].removeprefix("the form came back: "))
    assert came_back["action"] == "error" and came_back["error"]["code"] == -32602  # invalid params
    assert "ElicitRequestParamsWire" in came_back["error"]["message"] and called(calls) == ["nested"]
    [answer] = await harness.items(session, EventType.ITEM_COMPLETED, "agent_message")
    assert answer["text"] == "No form, then."
