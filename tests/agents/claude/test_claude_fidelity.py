"""What Claude Code does beyond commands and file changes, through the real CLI (issue [8] item 3):
its task list as the session's plan, a question to the person, a plan to approve in plan mode, web
tools asked about, retries while its model server is away, and the model, effort and mode a person
chooses, an MCP server's tool and form, a form Claude Code withdraws, forms tether declines or Claude
Code refuses itself, and a request tether does not handle. Each against the scripted Messages-API
server, which records what the model was told."""

from __future__ import annotations

import base64
import json
import socket
import sys
from pathlib import Path

import pytest

from tests.agents.claude.conftest import Harness
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.images import png
from tether.agents.base import COMPACT, Decision, Image, Review, TurnSettings
from tether.agents.policy import Approval, Policy, Sandbox
from tether.errors import TetherError
from tether.host.agent_session import AgentSession
from tether.host.eventlog import Event
from tether.protocol.events import EventType

pytestmark = pytest.mark.slow

BY = {"id": "d_test", "name": "test"}
REPO = Path(__file__).resolve().parents[3]
ON_REQUEST = Policy(Approval.ON_REQUEST, Sandbox.WORKSPACE_WRITE)
COLOUR = {"question": "Which colour?", "header": "Colour", "multiSelect": False,
          "options": [{"label": "Red", "description": "warm"}, {"label": "Blue", "description": "cool"}]}


def tool(name: str, **tool_input: object) -> dict[str, object]:
    return {"tool": {"name": name, "input": tool_input}}


def notes_server(tmp_path: Path) -> str:
    """A Claude Code --mcp-config naming tests/support/fake_mcp.py as the server "notes"."""
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"notes": {
        "command": sys.executable, "args": ["-m", "tests.support.fake_mcp"], "env": {"PYTHONPATH": str(REPO)}}}}))
    return str(config)


async def allowed_lookup(
    harness: Harness, fake_model: FakeAnthropic, tmp_path: Path, query: str, reply: str,
) -> tuple[AgentSession, Event]:
    """A turn in which the model calls the notes server's tool with ``query`` (then says
    ``reply``), the call allowed: the session and the allowing approval."""
    fake_model.add(tool("mcp__notes__lookup", query=query), {"text": reply})
    session = await harness.start("paint", mcp_config=notes_server(tmp_path))
    allow = await harness.wait(session, EventType.APPROVAL_REQUESTED)
    await session.approve(allow.data["approval"], Decision.APPROVE, BY)
    return session, allow


def told(model: FakeAnthropic, n: int) -> str:
    """What the model was shown last in its ``n``-th request: the result of its last tool call
    (and a note Claude Code may add after it)."""
    return json.dumps(model.requests[n]["messages"][-2:])


async def test_the_task_list_is_the_sessions_plan(harness: Harness, fake_model: FakeAnthropic) -> None:
    fake_model.add(tool("TaskCreate", subject="Mix the paint", description="blue"),
                   tool("TaskCreate", subject="Paint the wall", description="two coats"),
                   tool("TaskUpdate", taskId="1", status="completed"),
                   tool("TaskUpdate", taskId="2", status="in_progress", subject="Paint the north wall"),
                   tool("TaskList"),
                   {"text": "Painting."})
    session = await harness.start("paint the wall")
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed", done.data
    plans = [p["steps"] for p in await harness.items(session, EventType.ITEM_COMPLETED, "plan")]
    # One plan per change, each the whole list as it then stood; the read (TaskList) is no item.
    assert plans == [
        [{"text": "Mix the paint", "status": "pending"}],
        [{"text": "Mix the paint", "status": "pending"}, {"text": "Paint the wall", "status": "pending"}],
        [{"text": "Mix the paint", "status": "completed"}, {"text": "Paint the wall", "status": "pending"}],
        [{"text": "Mix the paint", "status": "completed"}, {"text": "Paint the north wall", "status": "in_progress"}],
    ]
    kinds = {e.data["kind"] for e in await harness.events(session) if e.type == EventType.ITEM_STARTED}
    assert kinds == {"plan", "agent_message"}
    assert not await harness.pending(session)


async def test_a_question_is_answered_and_claude_code_goes_on_with_the_answer(
    harness: Harness, fake_model: FakeAnthropic,
) -> None:
    fake_model.add(tool("AskUserQuestion", questions=[COLOUR]), {"text": "Blue it is."})
    # Asked whatever the approval policy: a question is for the person, not a permission.
    session = await harness.start("paint it", policy=Policy(Approval.NEVER, Sandbox.WORKSPACE_WRITE))
    asked = await harness.wait(session, EventType.APPROVAL_REQUESTED)
    assert asked.data["kind"] == "question" and asked.data["options"] == []
    [question] = asked.data["details"]["questions"]
    assert question["header"] == "Colour" and question["question"] == "Which colour?"
    assert question["options"] == [{"label": "Red", "description": "warm"}, {"label": "Blue", "description": "cool"}]
    assert question["is_other"] is True and question["is_secret"] is False

    await session.answer(asked.data["approval"], {question["id"]: ["Blue"]}, BY)
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed", done.data
    assert '\\"Which colour?\\"=\\"Blue\\"' in told(fake_model, 1)
    [answer] = await harness.items(session, EventType.ITEM_COMPLETED, "agent_message")
    assert answer["text"] == "Blue it is."


async def test_in_plan_mode_the_plan_is_approved_or_sent_back(harness: Harness, fake_model: FakeAnthropic) -> None:
    fake_model.add({"text": "Ready."})
    session = await harness.start("hello")
    first = await harness.wait(session, EventType.TURN_COMPLETED)

    fake_model.add({"plan_file": "# Plan\n1. mix\n"}, tool("ExitPlanMode"), {"text": "Let me change it."})
    await session.send_input("plan the paint job", settings=TurnSettings(mode="plan", model="sonnet", effort="low"))
    plan = await harness.wait(session, EventType.APPROVAL_REQUESTED)
    # The plan file was written without a question (it is what is approved now), and nothing else.
    assert plan.data["kind"] == "plan" and plan.data["options"] == ["approve", "deny"]
    assert plan.data["details"]["plan"] == "# Plan\n1. mix\n"
    assert plan.data["details"]["path"].endswith(".md") and "/plans/" in plan.data["details"]["path"]
    await session.approve(plan.data["approval"], Decision.DENY, BY)
    second = await harness.wait(session, EventType.TURN_COMPLETED, lambda d: d["turn"] != first.data["turn"])
    assert second.data["status"] == "completed"
    assert "did not approve this plan" in told(fake_model, 3)

    # Still in plan mode (a denied plan does not end it): the next plan is approved.
    fake_model.add({"plan_file": "# Plan\n1. mix\n2. paint\n"}, tool("ExitPlanMode"),
                   {"bash": {"command": "echo painting"}}, {"text": "Done."})
    await session.send_input("mix, then paint")
    again = await harness.wait(session, EventType.APPROVAL_REQUESTED, lambda d: d["kind"] == "plan"
                                and d["approval"] != plan.data["approval"])
    await session.approve(again.data["approval"], Decision.APPROVE, BY)
    # Out of plan mode, the command is asked about as ever (the session's policy).
    command = await harness.wait(session, EventType.APPROVAL_REQUESTED, lambda d: d["kind"] == "command")
    assert "User has approved your plan" in told(fake_model, 6)
    await session.approve(command.data["approval"], Decision.APPROVE, BY)
    third = await harness.wait(session, EventType.TURN_COMPLETED,
                               lambda d: d["turn"] not in (first.data["turn"], second.data["turn"]))
    assert third.data["status"] == "completed", third.data
    started = [e.data for e in await harness.events(session) if e.type == EventType.TURN_STARTED]
    assert [s.get("mode") for s in started] == [None, "plan", None]


async def test_a_plan_file_is_written_unasked_only_in_plan_mode(harness: Harness, fake_model: FakeAnthropic,
                                                                 tmp_path: Path) -> None:
    # Outside plan mode a write to Claude Code's plans directory is outside the workspace: refused.
    plans = tmp_path / "claude-config" / "plans"
    fake_model.add({"write": {"file_path": str(plans / "sneaky.md"), "content": "x"}}, {"text": "Refused."})
    session = await harness.start("write a plan")
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed"
    assert not (plans / "sneaky.md").exists()
    assert "may only change files inside the workspace" in told(fake_model, 1)
    assert not [e for e in await harness.events(session) if e.type == EventType.APPROVAL_REQUESTED]


async def test_web_tools_are_asked_about_and_shown_with_their_arguments(
    harness: Harness, fake_model: FakeAnthropic,
) -> None:
    fake_model.add(tool("WebSearch", query="blue paint"),
                   {"text": "Result: sky blue paint, https://paint.example/blue"},  # the search's own model call
                   tool("WebFetch", url="https://paint.example/blue?key=1", prompt="which blue?"),
                   {"text": "I will do without it."})
    session = await harness.start("find a blue", policy=ON_REQUEST)
    search = await harness.wait(session, EventType.APPROVAL_REQUESTED)
    assert search.data["kind"] == "tool"
    assert search.data["details"] == {"tool": "WebSearch", "server": None, "input": "blue paint", "reason": None}
    await session.approve(search.data["approval"], Decision.APPROVE_FOR_SESSION, BY)
    # Approving searches for the session does not approve a fetch.
    fetch = await harness.wait(session, EventType.APPROVAL_REQUESTED,
                               lambda d: d["approval"] != search.data["approval"])
    assert fetch.data["details"]["tool"] == "WebFetch"
    assert fetch.data["details"]["input"] == "https://paint.example/blue?key=1\nwhich blue?"
    await session.approve(fetch.data["approval"], Decision.DENY, BY)
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed", done.data
    assert "denied this use of a tool" in told(fake_model, 3)

    searched, fetched = await harness.items(session, EventType.ITEM_COMPLETED, "tool_call")
    assert searched["tool"] == "WebSearch" and searched["status"] == "completed"
    assert "sky blue paint" in searched["output"]
    assert fetched["tool"] == "WebFetch" and fetched["status"] == "declined" and fetched["output"] == ""
    assert search.data["item"] == searched["item"] and fetch.data["item"] == fetched["item"]


async def test_retries_while_the_model_server_is_away_are_shown_then_the_failure(
    harness: Harness, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("CLAUDE_CODE_MAX_RETRIES", "2")
    session = await harness.start("hello")
    first = await harness.wait(session, EventType.TURN_RETRYING)
    assert first.data["attempt"] == 1 and first.data["message"] == "the model server did not answer"
    assert "tries 2 times" in first.data["details"]
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "failed" and done.data["error"]
    attempts = [e.data["attempt"] for e in await harness.events(session) if e.type == EventType.TURN_RETRYING]
    assert attempts == [1, 2]


async def test_the_model_effort_and_mode_a_person_chooses_reach_the_model(
    harness: Harness, fake_model: FakeAnthropic,
) -> None:
    fake_model.add({"text": "one"}, {"text": "two"})
    session = await harness.start("hello")
    first = await harness.wait(session, EventType.TURN_COMPLETED)
    models = {m["id"]: m for m in await session.models()}
    assert {"default", "sonnet", "haiku"} <= set(models) and models["default"]["default"] is True
    assert models["sonnet"]["efforts"] == ["low", "medium", "high", "xhigh"]
    with pytest.raises(TetherError, match="no model"):
        await session.send_input("again", settings=TurnSettings(model="gpt-9"))
    with pytest.raises(TetherError, match="no mode"):
        await session.send_input("again", settings=TurnSettings(mode="bypassPermissions"))
    for action, said in ((Review(), "cannot review"), (COMPACT, "cannot compact")):
        with pytest.raises(TetherError, match=said):  # slash commands are off
            await session.send_input("again", settings=TurnSettings(action=action))

    await session.send_input("again", settings=TurnSettings(model="sonnet", effort="low"))
    second = await harness.wait(session, EventType.TURN_COMPLETED, lambda d: d["turn"] != first.data["turn"])
    assert second.data["status"] == "completed"
    before, after = fake_model.requests
    assert before["model"] != after["model"] and "sonnet" in after["model"]
    assert after["output_config"]["effort"] == "low" and before["output_config"]["effort"] != "low"


async def test_an_mcp_servers_tool_is_asked_about_and_shown_with_its_result(
    harness: Harness, fake_model: FakeAnthropic, tmp_path: Path,
) -> None:
    calls = tmp_path / "mcp-calls.jsonl"
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"notes": {
        "command": sys.executable, "args": ["-m", "tests.support.fake_mcp"],
        "env": {"PYTHONPATH": str(REPO), "FAKE_MCP_LOG": str(calls)}}}}))
    fake_model.add(tool("mcp__notes__lookup", query="blue"), tool("mcp__notes__lookup", query="red"),
                   {"text": "Blue only."})
    session = await harness.start("look up colours", mcp_config=str(config))
    asked = await harness.wait(session, EventType.APPROVAL_REQUESTED)
    assert asked.data["kind"] == "tool" and asked.data["options"] == ["approve", "approve_for_session", "deny"]
    details = asked.data["details"]
    assert (details["tool"], details["server"], json.loads(details["input"])) == ("lookup", "notes", {"query": "blue"})
    await session.approve(asked.data["approval"], Decision.APPROVE, BY)
    second = await harness.wait(session, EventType.APPROVAL_REQUESTED,
                                lambda d: d["approval"] != asked.data["approval"])
    await session.approve(second.data["approval"], Decision.DENY, BY)
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed", done.data

    blue, red = await harness.items(session, EventType.ITEM_COMPLETED, "tool_call")
    assert (blue["server"], blue["tool"], blue["status"], blue["output"]) == ("notes", "lookup", "completed",
                                                                              "3 notes about blue")
    assert red["status"] == "declined" and red["output"] == ""
    assert [json.loads(line)["arguments"]["query"] for line in calls.read_text().splitlines()] == ["blue"]


async def test_a_sub_agent_runs_in_the_foreground_and_its_commands_are_asked_about(
    harness: Harness, fake_model: FakeAnthropic,
) -> None:
    # The model asks for a background sub-agent; tether runs it in the foreground, within the turn.
    fake_model.add(tool("Agent", description="look around", prompt="list the files", subagent_type="general-purpose",
                        run_in_background=True),
                   {"bash": {"command": "echo sub-agent-was-here"}},  # the sub-agent's own first request
                   {"text": "found the files"},  # the sub-agent's report
                   {"text": "The sub-agent is done."})
    session = await harness.start("delegate", policy=ON_REQUEST)
    command = await harness.wait(session, EventType.APPROVAL_REQUESTED)
    assert command.data["kind"] == "command" and command.data["details"]["command"] == "echo sub-agent-was-here"
    await session.approve(command.data["approval"], Decision.APPROVE, BY)
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed", done.data

    [agent] = await harness.items(session, EventType.ITEM_COMPLETED, "tool_call")
    assert agent["tool"] == "Agent" and agent["input"] == "look around\nlist the files"
    assert agent["status"] == "completed" and "found the files" in agent["output"]
    [ran] = await harness.items(session, EventType.ITEM_COMPLETED, "command")
    assert ran["output"] == "sub-agent-was-here" and ran["status"] == "completed"
    # The sub-agent's own words are in its report, not a message of the session.
    messages = [m["text"] for m in await harness.items(session, EventType.ITEM_COMPLETED, "agent_message")]
    assert messages == ["The sub-agent is done."]
    assert "found the files" in json.dumps(fake_model.requests[-1]["messages"][-2:])


async def test_an_image_attached_to_a_prompt_reaches_the_model(harness: Harness, fake_model: FakeAnthropic) -> None:
    fake_model.add({"text": "one"}, {"text": "A blue square."})
    session = await harness.start("hello")
    first = await harness.wait(session, EventType.TURN_COMPLETED)
    shot = Image("shot.png", "image/png", png())
    await session.send_input("what is this?", settings=TurnSettings(images=(shot,)))
    done = await harness.wait(session, EventType.TURN_COMPLETED, lambda d: d["turn"] != first.data["turn"])
    assert done.data["status"] == "completed", done.data
    [prompt] = [m for m in fake_model.requests[-1]["messages"] if "what is this?" in json.dumps(m)]
    [image] = [b for b in prompt["content"] if b.get("type") == "image"]
    assert image["source"] == {"type": "base64", "media_type": "image/png",
                               "data": base64.b64encode(shot.data).decode()}


async def test_an_mcp_servers_form_is_a_question_card_whose_answers_reach_it_typed(
    harness: Harness, fake_model: FakeAnthropic, tmp_path: Path,
) -> None:
    session, _ = await allowed_lookup(harness, fake_model, tmp_path, "ask", "Painting.")
    form = await harness.wait(session, EventType.APPROVAL_REQUESTED, lambda d: d["kind"] == "question")
    questions = {q["id"]: q for q in form.data["details"]["questions"]}
    assert set(questions) == {"shade", "coats"}
    assert [o["label"] for o in questions["shade"]["options"]] == ["sky", "navy"]
    await session.answer(form.data["approval"], {"shade": ["sky"], "coats": ["3"]}, BY)
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed", done.data
    [item] = await harness.items(session, EventType.ITEM_COMPLETED, "tool_call")
    came_back = json.loads(item["output"].removeprefix("the form came back: "))
    assert came_back == {"action": "accept", "content": {"shade": "sky", "coats": 3}}


async def test_a_form_claude_code_withdraws_is_cleared_and_the_turn_goes_on(
    harness: Harness, fake_model: FakeAnthropic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Claude Code gives an MCP tool call MCP_TOOL_TIMEOUT ms; when that runs out while the server's
    # form waits on a person, it withdraws the form (control_cancel_request) and fails the call.
    monkeypatch.setenv("MCP_TOOL_TIMEOUT", "5000")
    session, _ = await allowed_lookup(harness, fake_model, tmp_path, "ask", "Nobody answered.")
    form = await harness.wait(session, EventType.APPROVAL_REQUESTED, lambda d: d["kind"] == "question")

    # Withdrawn in the middle of the turn, not at its end: the card goes, the turn goes on.
    cleared = await harness.wait(session, EventType.APPROVAL_CLEARED)
    assert cleared.data == {"approval": form.data["approval"], "reason": "withdrawn by the agent"}
    assert await harness.pending(session) == []
    with pytest.raises(TetherError, match="not pending"):
        await session.answer(form.data["approval"], {"shade": ["sky"], "coats": ["3"]}, BY)
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed", done.data
    assert cleared.seq < done.seq
    [item] = await harness.items(session, EventType.ITEM_COMPLETED, "tool_call")
    assert item["status"] == "failed" and "timed out" in item["output"]
    assert "no answer came before the time limit" in told(fake_model, 1)
    [answer] = await harness.items(session, EventType.ITEM_COMPLETED, "agent_message")
    assert answer["text"] == "Nobody answered."


async def test_a_request_tether_does_not_handle_is_refused_at_once_and_the_turn_goes_on(
    harness: Harness, fake_model: FakeAnthropic, tmp_path: Path,
) -> None:
    # A server of type "sdk" would live inside the SDK program that started Claude Code, which then
    # carries its messages (mcp_message requests). tether hosts none: each is refused at once, so
    # Claude Code gives the server up instead of waiting (30 s) for answers that never come.
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"notes": {"type": "sdk", "name": "notes"}}}))
    fake_model.add(tool("mcp__notes__lookup", query="blue"), {"text": "No notes then."})
    session = await harness.start("look up blue", mcp_config=str(config))
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed", done.data
    events = await harness.events(session)
    notices = [e.data for e in events if e.type == EventType.AGENT_NOTICE]
    assert notices and {(n["source"], n["level"]) for n in notices} == {("mcp_message", "warning")}
    assert all(n["message"].startswith("refused: Claude Code asked mcp_message (server_name: notes")
               and n["message"].endswith("tether does not know this request") for n in notices)
    started = next(e for e in events if e.type == EventType.TURN_STARTED)
    assert done.ts - started.ts < 20  # not held up by a request left unanswered
    assert "No such tool available: mcp__notes__lookup" in told(fake_model, 1)
    [answer] = await harness.items(session, EventType.ITEM_COMPLETED, "agent_message")
    assert answer["text"] == "No notes then."
    assert not [e for e in events if e.type == EventType.APPROVAL_REQUESTED]



async def test_a_form_of_several_choices_is_declined_and_said(
    harness: Harness, fake_model: FakeAnthropic, tmp_path: Path,
) -> None:
    # A field of several choices (an array, MCP 2025-11-25) is not one tether's cards put.
    session, allow = await allowed_lookup(harness, fake_model, tmp_path, "walls", "No walls, then.")
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed", done.data
    events = await harness.events(session)
    [refused] = [e.data for e in events if e.type == EventType.AGENT_NOTICE]
    assert refused["source"] == "elicitation" and refused["message"].startswith(
        "refused: Claude Code asked elicitation (mcp_server_name: notes")
    assert "requested_schema.properties.walls.title: Walls" in refused["message"]
    assert "nested fields" in refused["message"]
    assert [e.data["approval"] for e in events if e.type == EventType.APPROVAL_REQUESTED] == [
        allow.data["approval"]]
    [item] = await harness.items(session, EventType.ITEM_COMPLETED, "tool_call")
    assert item["output"] == 'the form came back: {"action": "decline"}'
    assert "the form came back" in told(fake_model, 1) and "decline" in told(fake_model, 1)


async def test_a_nested_form_is_refused_by_claude_code_itself_and_the_turn_goes_on(
    harness: Harness, fake_model: FakeAnthropic, tmp_path: Path,
) -> None:
    # MCP's forms are flat: Claude Code checks the form and answers the server with an error of its
    # own for a field that is an object; it never sends tether an elicitation request.
    session, allow = await allowed_lookup(harness, fake_model, tmp_path, "nested", "No form, then.")
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed", done.data
    events = await harness.events(session)
    assert [e for e in events if e.type == EventType.AGENT_NOTICE] == []
    assert [e.data["approval"] for e in events if e.type == EventType.APPROVAL_REQUESTED] == [
        allow.data["approval"]]
    [item] = await harness.items(session, EventType.ITEM_COMPLETED, "tool_call")
    came_back = json.loads(item["output"].removeprefix("the form came back: "))
    assert came_back["action"] == "error" and came_back["error"]["code"] == -32602  # invalid params
    assert came_back["error"]["message"].startswith("Invalid elicitation request")
    assert '"requestedSchema",' in came_back["error"]["message"]  # where it found fault: the form
    [answer] = await harness.items(session, EventType.ITEM_COMPLETED, "agent_message")
    assert answer["text"] == "No form, then."
