"""[11] 1 with the real Claude Code: a session the host opens again after a restart goes on with
Claude Code's own record of it (`--resume`), or — when Claude Code kept none (the host died before
it stored the first message) — in a new conversation under the same id, told the earlier turns
from tether's log, and said so."""

from __future__ import annotations

import uuid

from tests.agents.claude.conftest import Harness
from tests.support.fake_anthropic import FakeAnthropic
from tether.agents.base import Exchange, Resumed
from tether.protocol.events import EventType


async def test_a_conversation_claude_code_kept_is_resumed(harness: Harness, fake_model: FakeAnthropic) -> None:
    fake_model.add({"text": "Noted: teal."}, {"text": "Teal."})
    first = await harness.start("remember the word teal")
    await harness.wait(first, EventType.TURN_COMPLETED)
    conversation = first.agent.conversation()
    assert conversation is not None
    await first.close()

    again = await harness.start("which word?", resumed=Resumed(conversation, ()))
    done = await harness.wait(again, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed", done.data
    assert again.agent.conversation() == conversation
    told = str(fake_model.requests[-1]["messages"])
    assert "remember the word teal" in told and "Noted: teal." in told  # Claude Code's own record
    assert not [e for e in await harness.events(again) if e.type == EventType.AGENT_NOTICE]


async def test_a_conversation_claude_code_lost_goes_on_from_the_log(
    harness: Harness, fake_model: FakeAnthropic,
) -> None:
    fake_model.add({"text": "Teal, from the recap."})
    lost = str(uuid.uuid4())  # never stored by Claude Code
    session = await harness.start(
        "which word?", resumed=Resumed(lost, (Exchange("remember the word teal", "Noted: teal."),)))
    done = await harness.wait(session, EventType.TURN_COMPLETED)
    assert done.data["status"] == "completed", done.data
    assert session.agent.conversation() == lost  # the same id: the next restart resumes this one
    told = str(fake_model.requests[-1]["messages"])
    assert "remember the word teal" in told and "Noted: teal." in told and "which word?" in told
    (notice,) = [e.data for e in await harness.events(session) if e.type == EventType.AGENT_NOTICE]
    assert "had not kept this conversation" in notice["message"]
