"""The agent registry is the one place an agent is declared ([7] item 3): the host's config, the
session manager and the API all read it, and a terminal session and an agent session are driven
through the same calls, each refusing clearly what it cannot do."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tether.agents.base import Agent, Decision, ItemKind, TurnSettings
from tether.agents.registry import AGENT_NAMES, AGENTS, AgentSpec, Kind, agent_spec, keeps_threads, load_agent
from tether.errors import ConfigError, TetherError
from tether.host.config import HostConfig, parse_config
from tether.host.eventlog import EventLog
from tether.host.sessions import SessionManager
from tether.protocol.events import AgentMessageDone, EventType

BY = {"id": "d_test", "name": "tester"}


class EchoAgent(Agent):
    """An agent added only by a registry entry: it answers each prompt with the prompt."""

    name = "echo"

    async def run_turn(self, turn: str, text: str) -> None:
        item = self.ctx.new_id("i")
        await self.ctx.emit(AgentMessageDone(
            turn=turn, item=item, status="completed", text=f"{self.ctx.config.options.get('prefix', '')}{text}",
        ))


async def wait_for(log: EventLog, sid: str, type: str) -> dict[str, object]:
    async with asyncio.timeout(10):
        while True:
            for event in await log.read(0, 10_000):
                if event.session == sid and event.type == type:
                    return event.data
            await asyncio.sleep(0.02)


def test_every_declared_agent_loads_and_the_config_follows_the_registry(tmp_path: Path) -> None:
    assert AGENT_NAMES == tuple(AGENTS) and "pty" in AGENT_NAMES
    for name, spec in AGENTS.items():
        adapter = spec.load()  # the declared adapter exists
        if spec.kind is Kind.TURNS:
            assert issubclass(adapter, Agent) and adapter.name == name
        else:
            assert callable(adapter)
    assert set(HostConfig().agents) == set(AGENT_NAMES)
    # Each agent's table takes the keys its entry declares, and only those.
    for name, spec in AGENTS.items():
        key, kind = next(iter(spec.keys.items()))
        value = {bool: "true", str: '"x"', int: "1", float: "1.0"}[kind]
        if key in ("approval", "sandbox"):
            value = '"never"' if key == "approval" else '"read-only"'
        parse_config(f"[agents.{name}]\n{key} = {value}\n", tmp_path / "config.toml")
        with pytest.raises(ConfigError, match="unknown"):
            parse_config(f"[agents.{name}]\nno_such_key = 1\n", tmp_path / "config.toml")
    with pytest.raises(ConfigError, match="unknown agent"):
        parse_config("[agents.nobody]\n", tmp_path / "config.toml")


def test_unknown_and_mismatched_agents_are_refused_clearly() -> None:
    with pytest.raises(TetherError, match="unknown agent 'nobody'") as unknown:
        agent_spec("nobody")
    assert unknown.value.code == "bad_agent" and "pty" in (unknown.value.hint or "")
    with pytest.raises(TetherError, match="terminal program"):
        load_agent("pty")
    assert keeps_threads("codex") and not keeps_threads("pty") and not keeps_threads("builtin")


async def test_a_new_agent_is_one_registry_entry(
    manager: SessionManager, log: EventLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = AgentSpec("echo", Kind.TURNS, f"{__name__}:EchoAgent", {"prefix": str})
    monkeypatch.setitem(AGENTS, "echo", spec)
    config = parse_config('[agents.echo]\nprefix = "you said: "\n', tmp_path / "config.toml")
    sid = await manager.start_session(agent="echo", workspace=tmp_path, prompt="hello", config=config.agent("echo"))
    started = await wait_for(log, sid, EventType.SESSION_STARTED)
    assert started["agent"] == "echo" and started["title"] == "hello"
    completed = await wait_for(log, sid, EventType.TURN_COMPLETED)
    assert completed["status"] == "completed"
    said = [e.data["text"] for e in await log.read(0, 10_000)
            if e.session == sid and e.type == EventType.ITEM_COMPLETED and e.data["kind"] == ItemKind.AGENT_MESSAGE]
    assert said == ["you said: hello"]


async def test_terminal_and_agent_sessions_are_driven_alike(
    manager: SessionManager, log: EventLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(AGENTS, "echo", AgentSpec("echo", Kind.TURNS, f"{__name__}:EchoAgent", {}))
    terminal = await manager.start_session(agent="pty", workspace=tmp_path, command=["cat"])
    agent = await manager.start_session(agent="echo", workspace=tmp_path, prompt="one")
    await wait_for(log, agent, EventType.TURN_COMPLETED)

    # The same calls reach both; each refuses what it has not, and says why.
    assert (await manager.send_input(terminal, "typed\n")).type == EventType.SESSION_INPUT
    assert (await manager.send_input(agent, "two")).type == EventType.TURN_STARTED
    assert (await manager.resize(terminal, 100, 30)).type == EventType.SESSION_RESIZED
    with pytest.raises(TetherError, match="no terminal to resize") as no_terminal:
        await manager.resize(agent, 100, 30)
    assert no_terminal.value.code == "bad_params"
    with pytest.raises(TetherError, match="asks for no approvals") as no_approvals:
        await manager.approve(terminal, "ap_x", Decision.APPROVE, BY)
    assert no_approvals.value.code == "bad_params"

    # A model for the next turn: only where the agent offers a choice (not pty, not this agent).
    for sid, why in ((terminal, "no model to choose"), (agent, "offers no choice of model")):
        with pytest.raises(TetherError, match=why) as no_models:
            await manager.models(sid)
        assert no_models.value.code == "bad_params"
    with pytest.raises(TetherError, match="no model to choose"):
        await manager.send_input(terminal, "three", settings=TurnSettings(model="m"))

    # A prompt for a terminal, a command for an agent: refused before anything runs.
    with pytest.raises(TetherError, match="no command") as no_command:
        await manager.start_session(agent="pty", workspace=tmp_path, prompt="hello")
    assert no_command.value.code == "bad_command"
    with pytest.raises(TetherError, match="needs a prompt") as no_prompt:
        await manager.start_session(agent="echo", workspace=tmp_path, command=["bash"])
    assert no_prompt.value.code == "bad_prompt"

    # The host stops: the terminal's program ends; the agent's conversation is kept for the next
    # host run, which this one, shutting down, is not.
    await asyncio.wait_for(manager.close(), 10)
    assert (await wait_for(log, terminal, EventType.SESSION_EXITED))["reason"] == "host shutdown"
    assert (await wait_for(log, agent, EventType.AGENT_NOTICE))["source"] == "host"
    assert not [e for e in await log.read(0, 1000) if e.session == agent and e.type == EventType.SESSION_EXITED]
    with pytest.raises(TetherError, match="has finished") as finished:
        await manager.send_input(terminal, "more")
    assert finished.value.code == "session_finished"
    with pytest.raises(TetherError, match="shutting down") as closing:
        await manager.send_input(agent, "more")
    assert closing.value.code == "shutting_down"
