"""The claude adapter in-process: a real AgentSession and event log, the real Claude Code CLI, the
scripted Messages-API server. What a client would see is read back from the log."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.agents.claude.conftest import Harness
from tests.support.fake_anthropic import FakeAnthropic
from tether.agents.base import Decision
from tether.agents.claude import ClaudeError
from tether.agents.claude.adapter import ClaudeAgent
from tether.agents.policy import AgentConfig, Approval, Policy, Sandbox
from tether.host.agent_session import AgentSession
from tether.host.eventlog import EventLog
from tether.protocol.events import EventType

pytestmark = pytest.mark.slow

GREETING = "echo from-claude-$((40+2))"
BY = {"id": "d_test", "name": "test"}


async def test_approved_command_runs_and_the_answer_streams(harness: Harness, fake_model: FakeAnthropic) -> None:
    fake_model.add({"text": "Let me greet.", "bash": {"command": GREETING, "description": "to greet"}},
                   {"text": ["It printed ", "from-claude-42", "."]})
    session = await harness.start("run the greeting")
    requested = await harness.wait(session, EventType.APPROVAL_REQUESTED)
    assert requested.data["kind"] == "command"
    assert requested.data["details"] == {"command": GREETING, "cwd": str(harness.workspace), "reason": "to greet"}
    assert requested.data["options"] == ["approve", "approve_for_session", "deny"]
    [started] = await harness.items(session, EventType.ITEM_STARTED, "command")
    assert started["command"] == GREETING and requested.data["item"] == started["item"]

    await session.approve(requested.data["approval"], Decision.APPROVE, BY)
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed", done.data

    [command] = await harness.items(session, EventType.ITEM_COMPLETED, "command")
    assert command["status"] == "completed" and command["exit_code"] == 0
    assert command["output"] == "from-claude-42"
    assert await harness.deltas(session, command["item"]) == "from-claude-42"
    first, answer = await harness.items(session, EventType.ITEM_COMPLETED, "agent_message")
    assert first["text"] == "Let me greet."
    assert answer["text"] == "It printed from-claude-42."
    assert await harness.deltas(session, answer["item"]) == "It printed from-claude-42."
    deltas = [e.data["data"] for e in await harness.events(session)
              if e.type == EventType.ITEM_DELTA and e.data["item"] == answer["item"]]
    assert deltas == ["It printed ", "from-claude-42", "."]  # streamed as the model produced it
    assert "from-claude-42" in str(fake_model.requests[1]["messages"][-1])
    # What the turn used, from Claude Code's result: tokens and its price of them.
    [usage] = [e.data for e in await harness.events(session) if e.type == EventType.AGENT_USAGE]
    assert usage["turn"] == done.data["turn"] and usage["last_tokens"] and usage["total_tokens"] == usage["last_tokens"]
    assert isinstance(usage["cost_usd"], float) and usage["cost_usd"] >= 0


async def test_denied_command_never_runs_and_the_model_is_told(harness: Harness, fake_model: FakeAnthropic) -> None:
    fake_model.add({"bash": {"command": f"{GREETING} > ran.txt"}}, {"text": "Fine, I will not."})
    session = await harness.start("run it")
    requested = await harness.wait(session, EventType.APPROVAL_REQUESTED)
    await session.approve(requested.data["approval"], Decision.DENY, BY)
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed"
    [command] = await harness.items(session, EventType.ITEM_COMPLETED, "command")
    assert command["status"] == "declined" and command["exit_code"] is None
    assert not (harness.workspace / "ran.txt").exists()
    told = str(fake_model.requests[1]["messages"][-1])
    assert "denied this command" in told


async def test_interrupt_while_an_approval_is_pending(harness: Harness, fake_model: FakeAnthropic) -> None:
    fake_model.add({"bash": {"command": f"{GREETING} > ran.txt"}})
    session = await harness.start("run it")
    _requested, done = await harness.interrupt_when_asked(session)
    # Claude Code withdraws the question as it stops (control_cancel_request, before it answers the
    # interrupt); the card goes as the interrupted turn's, not as one Claude Code took back.
    [cleared] = [e.data for e in await harness.events(session) if e.type == EventType.APPROVAL_CLEARED]
    assert cleared["reason"] == "the turn was interrupted"
    [command] = await harness.items(session, EventType.ITEM_COMPLETED, "command")
    assert command["status"] in ("declined", "failed")

    fake_model.add({"text": "still here"})
    await session.send_input("are you there?")
    second = await harness.wait(session, EventType.TURN_COMPLETED, lambda d: d["turn"] != done.data["turn"])
    assert second.data["status"] == "completed"
    assert not (harness.workspace / "ran.txt").exists()


async def test_write_and_edit_are_file_changes_with_a_diff(harness: Harness, fake_model: FakeAnthropic) -> None:
    notes = harness.workspace / "notes.txt"
    fake_model.add({"write": {"file_path": str(notes), "content": "one\ntwo\n"}},
                   {"edit": {"file_path": str(notes), "old_string": "two", "new_string": "three"}},
                   {"text": "Done."})
    session = await harness.start("take notes")
    write = await harness.wait(session, EventType.APPROVAL_REQUESTED)
    assert write.data["kind"] == "file_change"
    assert write.data["details"]["path"] == str(notes)
    assert "+one\n+two\n" in write.data["details"]["diff"]
    assert not notes.exists()  # nothing is written before the approval
    await session.approve(write.data["approval"], Decision.APPROVE, BY)
    edit = await harness.wait(session, EventType.APPROVAL_REQUESTED,
                              lambda d: d["approval"] != write.data["approval"])
    assert "-two\n+three\n" in edit.data["details"]["diff"]
    await session.approve(edit.data["approval"], Decision.APPROVE, BY)
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed"
    assert notes.read_text() == "one\nthree\n"
    changes = await harness.items(session, EventType.ITEM_COMPLETED, "file_change")
    assert [c["status"] for c in changes] == ["completed", "completed"]
    assert changes[1]["diff"] == edit.data["details"]["diff"]


async def test_on_request_approval_for_the_session_covers_later_commands(
    harness: Harness, fake_model: FakeAnthropic,
) -> None:
    fake_model.add({"bash": {"command": "echo one"}}, {"bash": {"command": "echo two"}}, {"text": "both ran"})
    session = await harness.start("run two", policy=Policy(Approval.ON_REQUEST, Sandbox.WORKSPACE_WRITE))
    requested = await harness.wait(session, EventType.APPROVAL_REQUESTED)
    await session.approve(requested.data["approval"], Decision.APPROVE_FOR_SESSION, BY)
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed"
    outputs = [c["output"] for c in await harness.items(session, EventType.ITEM_COMPLETED, "command")]
    assert outputs == ["one", "two"]
    assert len([e for e in await harness.events(session) if e.type == EventType.APPROVAL_REQUESTED]) == 1


async def test_never_asks_nobody_and_the_sandbox_still_holds(
    harness: Harness, fake_model: FakeAnthropic, tmp_path: Path, tether_home: Path,
) -> None:
    outside = tmp_path / "outside.txt"
    fake_model.add(
        {"bash": {"command": f"echo in > inside.txt; echo out > {outside}; exit 3"}},
        {"bash": {"command": f"cat {tether_home}/host.key"}},
        {"write": {"file_path": str(outside), "content": "escaped\n"}},
        {"text": "done"},
    )
    session = await harness.start("try", policy=Policy(Approval.NEVER, Sandbox.WORKSPACE_WRITE))
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed"
    assert [e for e in await harness.events(session) if e.type == EventType.APPROVAL_REQUESTED] == []
    first, second = await harness.items(session, EventType.ITEM_COMPLETED, "command")
    assert first["status"] == "failed" and first["exit_code"] == 3
    assert "Read-only file system" in first["output"]
    assert (harness.workspace / "inside.txt").read_text() == "in\n"
    # The tether home is hidden: Claude Code refuses the read itself, or the sandbox shows nothing.
    assert second["status"] in ("declined", "failed") and "private key" not in second["output"]
    assert "private key" not in str(fake_model.requests[2]["messages"])
    [change] = await harness.items(session, EventType.ITEM_COMPLETED, "file_change")
    assert change["status"] in ("declined", "failed")
    assert not outside.exists()
    assert "only change files inside the workspace" in str(fake_model.requests[3]["messages"][-1])


async def test_read_only_offers_no_file_tools_and_commands_cannot_write(
    harness: Harness, fake_model: FakeAnthropic,
) -> None:
    fake_model.add({"bash": {"command": "echo x > made.txt"}}, {"text": "could not"})
    session = await harness.start("write", policy=Policy(Approval.NEVER, Sandbox.READ_ONLY))
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed"
    assert not (harness.workspace / "made.txt").exists()
    offered = {t["name"] for t in fake_model.requests[0]["tools"]}
    assert "Bash" in offered and not offered & {"Edit", "Write"}


async def test_a_killed_cli_fails_the_turn_with_a_clear_message(harness: Harness, fake_model: FakeAnthropic) -> None:
    fake_model.add({"bash": {"command": GREETING}})
    session = await harness.start("run it")
    await harness.wait(session, EventType.APPROVAL_REQUESTED)
    agent = session.agent
    assert isinstance(agent, ClaudeAgent) and agent.process is not None and agent.process.pid is not None
    os.killpg(agent.process.pid, signal.SIGKILL)
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "failed"
    assert "Claude Code was killed by signal 9" in done.data["error"]
    assert await harness.pending(session) == []
    exited = await harness.wait(session, EventType.SESSION_EXITED)
    assert "killed" in exited.data["reason"]


async def test_secrets_of_the_host_never_reach_the_events(
    harness: Harness, fake_model: FakeAnthropic, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-very-secret-value")
    fake_model.add({"bash": {"command": 'echo "t=$MY_SERVICE_TOKEN a=$ANTHROPIC_API_KEY"'}},
                   {"text": ["the token is tok-very-", "secret-value"]})
    session = await harness.start("leak", policy=Policy(Approval.NEVER, Sandbox.FULL_ACCESS))
    await harness.wait(session, EventType.TURN_COMPLETED)
    [command] = await harness.items(session, EventType.ITEM_COMPLETED, "command")
    # Commands get neither the host's secrets nor Claude Code's own key (issue [6] item 4).
    assert command["status"] == "completed" and command["output"] == "t= a="
    [answer] = await harness.items(session, EventType.ITEM_COMPLETED, "agent_message")
    assert answer["text"] == "the token is [redacted]"
    logged = str([e.data for e in await harness.events(session)])
    assert "tok-very-secret-value" not in logged
    assert fake_model.env()["ANTHROPIC_API_KEY"] not in logged


async def test_reads_outside_the_workspace_and_repository_hooks_are_refused(
    harness: Harness, fake_model: FakeAnthropic, tmp_path: Path,
) -> None:
    marker = tmp_path / "hook-ran"
    hook = [{"hooks": [{"type": "command", "command": f"touch {marker}"}]}]
    (harness.workspace / ".claude").mkdir()
    (harness.workspace / ".claude" / "settings.json").write_text(json.dumps(
        {"hooks": {"SessionStart": hook, "UserPromptSubmit": hook, "PreToolUse": hook}}))
    secret = tmp_path / "elsewhere.txt"
    secret.write_text("not for the model\n")
    fake_model.add({"tool": {"name": "Read", "input": {"file_path": str(secret)}}}, {"text": "could not read"})
    session = await harness.start("read it")
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed"
    told = str(fake_model.requests[1]["messages"][-1])
    assert "not for the model" not in told and "is not allowed here" in told
    assert [e for e in await harness.events(session) if e.type == EventType.APPROVAL_REQUESTED] == []
    assert not marker.exists()


async def test_missing_binary_is_a_clear_error(event_log: EventLog, workspace: Path, tmp_path: Path) -> None:
    session = AgentSession(
        session_id="s_missing", workspace=workspace, policy=Policy(),
        config=AgentConfig("claude", options={"binary": str(tmp_path / "nope" / "claude")}), log=event_log,
        agent_cls=ClaudeAgent,
    )
    with pytest.raises(ClaudeError) as raised:
        await session.agent.open()
    assert raised.value.code == "claude_missing" and "install-claude" in str(raised.value.hint)
