"""The codex adapter in-process: a real AgentSession and event log, the real Codex CLI, the
scripted model server. What a client would see is read back from the log."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.agents.codex.conftest import Harness, StartAppServer
from tests.support.fake_responses import FakeResponses
from tests.support.images import png
from tether.agents.base import COMPACT, Decision, Image, Review, TurnSettings
from tether.agents.codex import CodexError
from tether.agents.codex.adapter import THREAD_OPTION, CodexAgent, list_threads
from tether.agents.policy import Approval, Policy, Sandbox
from tether.protocol.events import EventType

pytestmark = pytest.mark.slow

APPROVED_CMD = "echo approved-$((1+1))"
BY = {"id": "d_test", "name": "test"}


async def test_prompt_streams_the_answer_and_completes(harness: Harness, fake_model: FakeResponses) -> None:
    fake_model.add({"reasoning": "a greeting is due", "text": ["Hel", "lo ", "there"]})
    session = await harness.start("say hi")
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed" and done.data["error"] is None

    [started] = await harness.items(session, EventType.ITEM_STARTED, "agent_message")
    deltas = [e.data for e in await harness.events(session) if e.type == EventType.ITEM_DELTA
              and e.data["item"] == started["item"]]
    assert [d["data"] for d in deltas] == ["Hel", "lo ", "there"]
    assert all(d["stream"] == "text" for d in deltas)
    [completed] = await harness.items(session, EventType.ITEM_COMPLETED, "agent_message")
    assert completed == {"turn": started["turn"], "item": started["item"], "kind": "agent_message",
                         "status": "completed", "text": "Hello there"}
    [reasoning] = await harness.items(session, EventType.ITEM_COMPLETED, "reasoning")
    assert reasoning["text"] == "a greeting is due"
    # One user message item (the host's), none from Codex's userMessage.
    assert len(await harness.items(session, EventType.ITEM_COMPLETED, "user_message")) == 1
    types = [e.type for e in await harness.events(session)]
    assert types.index(EventType.TURN_COMPLETED) == len(types) - 1
    assert "say hi" in str(fake_model.requests[0]["input"])

    # A second turn on the same thread: Codex remembers the first.
    fake_model.add({"text": "again"})
    await session.send_input("once more")
    await harness.wait(session, EventType.TURN_COMPLETED, lambda d: d["turn"] != done.data["turn"])
    assert "say hi" in str(fake_model.requests[-1]["input"])


async def test_a_web_search_is_shown_as_a_tool_call_with_its_query(harness: Harness, fake_model: FakeResponses) -> None:
    """The real Codex turns a model's web_search_call into a webSearch item: shown as a tool call
    with its query, and the turn goes on."""
    fake_model.add({"web_search": "tether relay protocol", "text": "Found it."})
    session = await harness.start("look it up")
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed"
    [started] = await harness.items(session, EventType.ITEM_STARTED, "tool_call")
    [completed] = await harness.items(session, EventType.ITEM_COMPLETED, "tool_call")
    assert completed["item"] == started["item"] and completed["status"] == "completed"
    assert (completed["tool"], completed["server"], completed["input"]) == ("web search", None, "tether relay protocol")
    [answer] = await harness.items(session, EventType.ITEM_COMPLETED, "agent_message")
    assert answer["text"] == "Found it."
    # What the model server said it used (15 tokens a response) reached the session's usage.
    usage = [e.data for e in await harness.events(session) if e.type == EventType.AGENT_USAGE]
    tokens = [u for u in usage if u["total_tokens"] is not None]
    assert tokens and tokens[-1]["total_tokens"] == 15 * len(fake_model.requests)
    assert tokens[-1]["last_tokens"] == 15 and tokens[-1]["turn"] == done.data["turn"]


async def test_approved_command_runs_and_its_output_arrives(
    harness: Harness, fake_model: FakeResponses, workspace: Path,
) -> None:
    fake_model.add(
        {"exec": {"cmd": APPROVED_CMD, "justification": "to greet"}}, {"text": ["It printed ", "approved-2."]},
    )
    session = await harness.start("run the greeting")
    requested = await harness.wait(session, EventType.APPROVAL_REQUESTED)
    details = requested.data["details"]
    assert requested.data["kind"] == "command"
    assert APPROVED_CMD in details["command"] and details["cwd"] == str(workspace)
    assert details["reason"] == "to greet"
    assert Decision.APPROVE in requested.data["options"] and Decision.DENY in requested.data["options"]
    [command] = await harness.items(session, EventType.ITEM_STARTED, "command")
    assert requested.data["item"] == command["item"]
    assert command["command"] == details["command"] and command["cwd"] == str(workspace)
    assert [a["approval"] for a in await harness.pending(session)] == [requested.data["approval"]]

    await session.approve(requested.data["approval"], Decision.APPROVE, BY)
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed"
    [ran] = await harness.items(session, EventType.ITEM_COMPLETED, "command")
    assert ran["status"] == "completed" and ran["exit_code"] == 0 and ran["output"] == "approved-2\n"
    output = "".join(e.data["data"] for e in await harness.events(session)
                     if e.type == EventType.ITEM_DELTA and e.data["item"] == command["item"])
    assert output == "approved-2\n"
    [answer] = await harness.items(session, EventType.ITEM_COMPLETED, "agent_message")
    assert answer["text"] == "It printed approved-2."
    assert await harness.pending(session) == []
    assert "approved-2" in str(fake_model.requests[1]["input"])


async def test_declined_command_does_not_run(harness: Harness, fake_model: FakeResponses, workspace: Path) -> None:
    fake_model.add({"exec": {"cmd": f"{APPROVED_CMD} > ran.txt"}}, {"text": "Fine, I will not."})
    session = await harness.start("run it")
    requested = await harness.wait(session, EventType.APPROVAL_REQUESTED)
    await session.approve(requested.data["approval"], Decision.DENY, BY)
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed"
    [command] = await harness.items(session, EventType.ITEM_COMPLETED, "command")
    assert command["status"] == "declined" and command["exit_code"] is None
    assert not (workspace / "ran.txt").exists()
    assert "rejected by user" in str(fake_model.requests[1]["input"])


async def test_interrupt_while_approval_pending(harness: Harness, fake_model: FakeResponses, workspace: Path) -> None:
    fake_model.add({"exec": {"cmd": f"{APPROVED_CMD} > ran.txt"}})
    session = await harness.start("run it")
    requested, done = await harness.interrupt_when_asked(session)
    # The command item Codex leaves open is closed.
    [command] = await harness.items(session, EventType.ITEM_COMPLETED, "command")
    assert command["status"] == "failed" and command["exit_code"] is None
    # A late answer is refused; nothing runs.
    with pytest.raises(Exception, match="not pending"):
        await session.approve(requested.data["approval"], Decision.APPROVE, BY)
    await asyncio.sleep(0.3)
    assert not (workspace / "ran.txt").exists()
    assert len(fake_model.requests) == 1
    # The session goes on.
    fake_model.add({"text": "still here"})
    await session.send_input("are you there?")
    second = await harness.wait(session, EventType.TURN_COMPLETED, lambda d: d["turn"] != done.data["turn"])
    assert second.data["status"] == "completed"


async def test_interrupt_while_the_model_streams(harness: Harness, fake_model: FakeResponses) -> None:
    fake_model.add({"text": ["partial "], "hang": True})
    session = await harness.start("write a long essay")
    await harness.wait(session, EventType.ITEM_DELTA)
    await session.interrupt()
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "interrupted"


async def test_killed_appserver_fails_the_turn_and_ends_the_session(
    harness: Harness, fake_model: FakeResponses,
) -> None:
    fake_model.add({"exec": {"cmd": APPROVED_CMD}})
    session = await harness.start("run it")
    requested = await harness.wait(session, EventType.APPROVAL_REQUESTED)
    agent = session.agent
    assert isinstance(agent, CodexAgent) and agent.server is not None and agent.server.pid is not None
    os.kill(agent.server.pid, signal.SIGKILL)

    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "failed"
    assert "codex app-server was killed by signal 9" in done.data["error"]
    [error] = await harness.items(session, EventType.ITEM_COMPLETED, "error")
    assert error["message"] == done.data["error"]
    cleared = await harness.wait(session, EventType.APPROVAL_CLEARED)
    assert cleared.data["approval"] == requested.data["approval"]
    exited = await harness.wait(session, EventType.SESSION_EXITED)
    assert "killed by signal 9" in exited.data["reason"]
    assert session.ended.is_set()
    [command] = await harness.items(session, EventType.ITEM_COMPLETED, "command")
    assert command["status"] == "failed"


async def test_file_change_approval_carries_the_diff(
    harness: Harness, fake_model: FakeResponses, workspace: Path,
) -> None:
    patch = "apply_patch <<'EOF'\n*** Begin Patch\n*** Add File: hello.txt\n+hi there\n*** End Patch\nEOF\n"
    fake_model.add({"exec": {"cmd": patch, "escalated": False}}, {"text": "Patched."})
    session = await harness.start("add hello.txt", policy=Policy(Approval.ON_REQUEST, Sandbox.READ_ONLY))
    requested = await harness.wait(session, EventType.APPROVAL_REQUESTED)
    assert requested.data["kind"] == "file_change"
    path = str(workspace / "hello.txt")
    details = requested.data["details"]
    assert details["path"] == path and details["paths"] == [path]
    assert details["diff"] == f"--- /dev/null\n+++ {path}\n@@ -0,0 +1,1 @@\n+hi there\n"
    [started] = await harness.items(session, EventType.ITEM_STARTED, "file_change")
    assert started["path"] == path and started["diff"] == details["diff"]
    assert requested.data["item"] == started["item"]
    await session.approve(requested.data["approval"], Decision.APPROVE, BY)
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed"
    [completed] = await harness.items(session, EventType.ITEM_COMPLETED, "file_change")
    assert completed["status"] == "completed" and completed["path"] == path and completed["diff"] == details["diff"]
    assert (workspace / "hello.txt").read_text() == "hi there\n"


async def test_desktop_threads_are_listed_and_adopted(
    harness: Harness, fake_model: FakeResponses, start_appserver: StartAppServer, workspace: Path,
) -> None:
    # "The desktop": another app-server on the same CODEX_HOME runs a turn and goes away.
    fake_model.add({"text": "Hi from the desktop."}, {"text": "I remember."})
    desktop, events = await start_appserver()
    thread_id = (await desktop.thread_start(workspace, "on-request", "workspace-write"))["thread"]["id"]
    await desktop.turn_start(thread_id, "hello from the desktop")
    await events.wait("turn/completed")
    await desktop.close()

    threads = await list_threads(harness.config())
    listed = {t["id"]: t for t in threads}
    assert listed[thread_id]["preview"] == "hello from the desktop"
    assert listed[thread_id]["cwd"] == str(workspace)

    session = await harness.start("do you remember?", options={THREAD_OPTION: thread_id})
    agent = session.agent
    assert isinstance(agent, CodexAgent) and agent.thread_id == thread_id
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed"
    assert "hello from the desktop" in str(fake_model.requests[-1]["input"])


async def test_adopting_an_unknown_thread_is_a_clear_error(harness: Harness) -> None:
    with pytest.raises(CodexError, match="cannot adopt Codex thread"):
        await harness.start("hi", options={THREAD_OPTION: "01a21293-085d-7fd0-b1fe-4409780114ee"})


async def test_missing_binary_is_a_clear_error(harness: Harness, tmp_path: Path) -> None:
    with pytest.raises(CodexError, match="no Codex binary at") as raised:
        await harness.start("hi", options={"binary": str(tmp_path / "nope" / "codex")})
    assert raised.value.hint and "npm install" in raised.value.hint


async def test_an_image_attached_to_a_prompt_reaches_the_model(harness: Harness, fake_model: FakeResponses) -> None:
    fake_model.add({"text": "A blue square."})
    session = await harness.start("hello")
    first = await harness.wait(session, EventType.TURN_COMPLETED)
    fake_model.add({"text": "Still blue."})
    shot = Image("shot.png", "image/png", png())
    await session.send_input("what is this?", settings=TurnSettings(images=(shot,)))
    done = await harness.wait(session, EventType.TURN_COMPLETED, lambda d: d["turn"] != first.data["turn"])
    assert done.data["status"] == "completed", done.data
    sent = json.dumps(fake_model.requests[-1]["input"])
    assert base64.b64encode(shot.data).decode() in sent and "what is this?" in sent
    assert base64.b64encode(shot.data).decode() not in json.dumps(fake_model.requests[0]["input"])


REVIEW = {"findings": [{"title": "Typo in notes.txt", "body": "'teh' should be 'the'", "confidence_score": 0.8,
                        "priority": 1, "code_location": {"absolute_file_path": "notes.txt",
                                                         "line_range": {"start": 1, "end": 1}}}],
          "overall_correctness": "patch is incorrect", "overall_explanation": "one typo",
          "overall_confidence_score": 0.7}


@pytest.fixture
def git_workspace(workspace: Path) -> Path:
    """The workspace as a git repository with one commit and an uncommitted file."""
    subprocess.run(["git", "-C", str(workspace), "init", "-q"], check=True)
    subprocess.run(["git", "-C", str(workspace), "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q",
                    "--allow-empty", "-m", "start"], check=True)
    (workspace / "notes.txt").write_text("teh end\n")
    return workspace


async def test_a_review_turn_reviews_the_uncommitted_changes(
    harness: Harness, fake_model: FakeResponses, git_workspace: Path,
) -> None:
    fake_model.add({"text": "Hello."}, {"text": json.dumps(REVIEW)})
    session = await harness.start("hello")
    first = await harness.wait(session, EventType.TURN_COMPLETED)
    started = await session.send_input("Review the uncommitted changes", settings=TurnSettings(action=Review()))
    assert started.data["action"] == "review"
    done = await harness.wait(session, EventType.TURN_COMPLETED, lambda d: d["turn"] != first.data["turn"])
    assert done.data["status"] == "completed", done.data
    others = {o["type"]: o for o in await harness.items(session, EventType.ITEM_COMPLETED, "other")}
    assert others["enteredReviewMode"]["title"] == "review started"
    assert others["enteredReviewMode"]["summary"] == "current changes"
    messages = [m["text"] for m in await harness.items(session, EventType.ITEM_COMPLETED, "agent_message")
                if m["status"] == "completed" and m["text"]]
    assert "Typo in notes.txt" in messages[-1] and "one typo" in messages[-1]
    assert "Review the current code changes" in json.dumps(fake_model.requests[-1]["input"])


async def test_compacting_runs_a_turn_of_its_own(harness: Harness, fake_model: FakeResponses) -> None:
    fake_model.add({"text": "Hello."}, {"text": "SUMMARY: we said hello"})
    session = await harness.start("hello")
    first = await harness.wait(session, EventType.TURN_COMPLETED)
    await session.send_input("Compact the conversation", settings=TurnSettings(action=COMPACT))
    done = await harness.wait(session, EventType.TURN_COMPLETED, lambda d: d["turn"] != first.data["turn"])
    assert done.data["status"] == "completed", done.data
    [compacted] = await harness.items(session, EventType.ITEM_COMPLETED, "other")
    assert compacted["type"] == "contextCompaction" and compacted["title"] == "context compacted"
    assert "CONTEXT CHECKPOINT COMPACTION" in json.dumps(fake_model.requests[-1]["input"])
