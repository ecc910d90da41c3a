"""Every agent a host can run, declared once (ARCHITECTURE §7): its name, how a session of it is
driven, its adapter (imported only when a session asks for one) and its ``[agents.NAME]`` keys.

Two kinds of session exist. A *turns* agent (builtin, claude, codex) takes a prompt and works in
turns of items, asking for approvals; its adapter implements :class:`~tether.agents.base.Agent`.
A *terminal* agent (pty) runs a program in a pseudo-terminal: keystrokes in, terminal output out,
a size; its adapter is the program's spawn function. The host's config keys, the ``sessions.start``
checks and the session manager all read this table, so a new agent is an entry here and its
adapter.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tether.agents.base import Agent
from tether.errors import TetherError

_POLICY_KEYS: dict[str, type] = {"approval": str, "sandbox": str, "enabled": bool}


class Kind(StrEnum):
    TURNS = "turns"
    TERMINAL = "terminal"


@dataclass(frozen=True)
class AgentSpec:
    name: str
    kind: Kind
    adapter: str  # "module:attribute"
    keys: Mapping[str, type]  # what its [agents.NAME] table may set, and the type of each

    def load(self) -> Any:
        module, _, path = self.adapter.partition(":")
        return functools.reduce(getattr, path.split("."), importlib.import_module(module))


AGENTS: dict[str, AgentSpec] = {s.name: s for s in (
    # A shell as the host's user: who besides the owner may start one is the host's choice.
    AgentSpec("pty", Kind.TERMINAL, "tether.agents.pty:PtyProcess.spawn",
              {"allow_remote": bool, "allow_restricted": bool}),
    AgentSpec("builtin", Kind.TURNS, "tether.agents.builtin.adapter:BuiltinAgent", {
        **_POLICY_KEYS, "base_url": str, "model": str, "api_key": str, "api_key_env": str,
        "max_steps": int, "timeout": float,
    }),
    AgentSpec("codex", Kind.TURNS, "tether.agents.codex.adapter:CodexAgent",
              {**_POLICY_KEYS, "binary": str, "codex_home": str, "model": str}),
    AgentSpec("claude", Kind.TURNS, "tether.agents.claude.adapter:ClaudeAgent",
              {**_POLICY_KEYS, "binary": str, "config_dir": str, "model": str, "mcp_config": str}),
)}
AGENT_NAMES = tuple(AGENTS)


def agent_spec(name: str) -> AgentSpec:
    spec = AGENTS.get(name)
    if spec is None:
        raise TetherError(f"unknown agent {name!r}", hint=f"use one of: {', '.join(AGENT_NAMES)}", code="bad_agent")
    return spec


def load_agent(name: str) -> type[Agent]:
    """The adapter class of a turns agent."""
    spec = agent_spec(name)
    if spec.kind is not Kind.TURNS:
        raise TetherError(f"the {name} agent runs a terminal program, not turns", code="bad_agent")
    cls: type[Agent] = spec.load()
    return cls


def keeps_threads(name: str) -> bool:
    """Whether the agent stores conversations a session can adopt (see Agent.keeps_threads)."""
    return agent_spec(name).kind is Kind.TURNS and load_agent(name).keeps_threads
