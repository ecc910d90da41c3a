"""Sessions of one agent adapter on the host's real AgentSession and event log, for the in-process
adapter tests (tests/agents/codex/, tests/agents/claude/). What a client would see is read back
from the log."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tether.agents.base import Agent, Resumed
from tether.agents.policy import AgentConfig, Policy
from tether.host.agent_session import AgentSession
from tether.host.eventlog import Event, EventLog
from tether.host.projection import pending_approvals
from tether.protocol.events import EventType


class SessionHarness:
    def __init__(
        self, log: EventLog, agent_cls: type[Agent], workspace: Path, *, timeout: float, hidden: Sequence[Path] = ()
    ) -> None:
        self.log = log
        self.hidden = hidden  # what the host hides from agents (its home)
        self.agent_cls = agent_cls
        self.workspace = workspace
        self.timeout = timeout
        self.sessions: list[AgentSession] = []

    async def open(
        self, prompt: str, policy: Policy, config: AgentConfig, resumed: Resumed | None = None,
    ) -> AgentSession:
        """A session of the agent, opened and logged as the host does, with ``prompt`` its first turn
        (``resumed``: as a restarted host opens it again)."""
        session = AgentSession(
            session_id=f"s_test{len(self.sessions)}", workspace=self.workspace, policy=policy, config=config,
            log=self.log, agent_cls=self.agent_cls, hidden=self.hidden, resumed=resumed,
        )
        await session.agent.open()
        self.sessions.append(session)
        await self.log.append(session.session_id, EventType.SESSION_STARTED, {
            "agent": config.name, "workspace": str(self.workspace), "command": [], "title": prompt, "cols": 80,
            "rows": 24, "policy": session.policy.to_json(),
        })
        await session.send_input(prompt)
        return session

    async def close(self) -> None:
        for session in self.sessions:
            await session.close()

    async def events(self, session: AgentSession) -> list[Event]:
        return [e for e in await self.log.read(0, 100_000) if e.session == session.session_id]

    async def wait(
        self, session: AgentSession, type: str, where: Callable[[dict[str, Any]], bool] = lambda _: True,
    ) -> Event:
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    for event in await self.events(session):
                        if event.type == type and where(event.data):
                            return event
                    await asyncio.sleep(0.05)
        except TimeoutError:
            seen = [(e.type, e.data.get("kind")) for e in await self.events(session)]
            raise AssertionError(f"no {type} within {self.timeout:.0f} s; seen {seen}") from None

    async def interrupt_when_asked(self, session: AgentSession) -> tuple[Event, Event]:
        """Interrupt the turn once it asks for an approval; (the question, the turn's end), checked to
        be an interrupted turn whose question was cleared."""
        requested = await self.wait(session, EventType.APPROVAL_REQUESTED)
        await session.interrupt()
        done = await self.wait(session, EventType.TURN_COMPLETED)
        assert done.data["status"] == "interrupted"
        cleared = await self.wait(session, EventType.APPROVAL_CLEARED)
        assert cleared.data["approval"] == requested.data["approval"]
        assert await self.pending(session) == []
        return requested, done

    async def items(self, session: AgentSession, type: str, kind: str) -> list[dict[str, Any]]:
        return [e.data for e in await self.events(session) if e.type == type and e.data.get("kind") == kind]

    async def deltas(self, session: AgentSession, item: str) -> str:
        return "".join(e.data["data"] for e in await self.events(session)
                       if e.type == EventType.ITEM_DELTA and e.data["item"] == item)

    async def pending(self, session: AgentSession) -> list[dict[str, Any]]:
        return await self.log.db.run(lambda c: pending_approvals(c, session.session_id), write=False)
