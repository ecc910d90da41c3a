"""The codex adapter's mapping decisions without a process: policy, diffs, and what happens to
a person's pending question when Codex withdraws it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tether.agents.base import Decision
from tether.agents.codex.adapter import CodexAgent, _Turn, _unified, codex_policy
from tether.agents.codex.appserver import COMMAND_APPROVAL, Notification, RequestState, ServerRequest
from tether.agents.policy import AgentConfig, Approval, Policy, Sandbox
from tether.protocol.events import EventData


class FakeContext:
    session_id = "s_unit"
    workspace = Path("/tmp")
    policy = Policy()
    config = AgentConfig("codex")

    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []
        self.cancelled = asyncio.Event()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_1"

    async def emit(self, event: EventData) -> None:
        pass

    async def request_approval(
        self, kind: str, details: dict[str, Any], *, item: str | None, options: Sequence[Decision]
    ) -> Decision:
        self.asked.append({"kind": kind, "details": details, "options": list(options)})
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        raise AssertionError("unreachable")


class FakeClient:
    def __init__(self) -> None:
        self._server_requests: dict[int | str, ServerRequest] = {}
        self.sent: list[dict[str, Any]] = []

    async def _send_reply(self, message: dict[str, Any]) -> bool:
        self.sent.append(message)
        return True


async def ask(agent: CodexAgent, client: FakeClient, turn: str = "ct1") -> ServerRequest:
    request = ServerRequest(7, COMMAND_APPROVAL, {"turnId": turn, "itemId": "call_1", "command": "ls",
                                                  "cwd": "/tmp", "reason": "why not",
                                                  "availableDecisions": ["accept", "cancel"]}, client)  # type: ignore[arg-type]
    client._server_requests[request.id] = request
    await agent._on_server_request(_Turn("t1", codex_id=turn), request)
    await asyncio.sleep(0)
    return request


async def test_codex_withdrawing_a_question_mid_turn_cancels_the_wait() -> None:
    ctx, client = FakeContext(), FakeClient()
    agent = CodexAgent(ctx)
    request = await ask(agent, client)
    assert ctx.asked == [{"kind": "command", "details": {"command": "ls", "cwd": "/tmp", "reason": "why not"},
                          "options": [Decision.APPROVE, Decision.DENY]}]
    request._finish(RequestState.RESOLVED)
    agent._on_event(Notification("serverRequest/resolved", {"requestId": 7}))
    await asyncio.wait_for(ctx.cancelled.wait(), 2)
    await asyncio.sleep(0)
    assert client.sent == [] and agent._approvals == {}


async def test_a_question_withdrawn_after_its_turn_ended_is_left_to_the_host() -> None:
    ctx, client = FakeContext(), FakeClient()
    agent = CodexAgent(ctx)
    request = await ask(agent, client)
    agent._on_event(Notification("turn/completed", {"turn": {"id": "ct1", "status": "interrupted"}}))
    request._finish(RequestState.RESOLVED)
    agent._on_event(Notification("serverRequest/resolved", {"requestId": 7}))
    await asyncio.sleep(0.05)
    assert not ctx.cancelled.is_set()  # the host clears it at turn end, with approval.cleared
    await agent.close()


def test_policy_mapping() -> None:
    assert codex_policy(Policy(Approval.UNTRUSTED, Sandbox.READ_ONLY)) == ("untrusted", "read-only")
    assert codex_policy(Policy(Approval.ON_REQUEST, Sandbox.WORKSPACE_WRITE)) == ("on-request", "workspace-write")
    assert codex_policy(Policy(Approval.NEVER, Sandbox.FULL_ACCESS)) == ("never", "danger-full-access")


def test_codex_changes_become_unified_diffs() -> None:
    assert _unified({"path": "/w/a", "kind": {"type": "add"}, "diff": "x\ny\n"}) == \
        "--- /dev/null\n+++ /w/a\n@@ -0,0 +1,2 @@\n+x\n+y\n"
    assert _unified({"path": "/w/a", "kind": {"type": "delete"}, "diff": "x\n"}) == \
        "--- /w/a\n+++ /dev/null\n@@ -1,1 +0,0 @@\n-x\n"
    hunk = "@@ -1 +1 @@\n-x\n+y\n"
    assert _unified({"path": "/w/a", "kind": {"type": "update", "move_path": None}, "diff": hunk}) == \
        f"--- /w/a\n+++ /w/a\n{hunk}"
    assert _unified({"path": "/w/a", "kind": {"type": "update", "move_path": "/w/b"}, "diff": hunk}) == \
        f"--- /w/a\n+++ /w/b\n{hunk}"
