"""The agent adapters a host can run, imported only when a session asks for one."""

from __future__ import annotations

import importlib

from tether.agents.base import Agent
from tether.errors import TetherError

# "pty" is not here: terminal sessions are run by the session manager itself.
ADAPTERS = {
    "builtin": "tether.agents.builtin.adapter:BuiltinAgent",
    "claude": "tether.agents.claude.adapter:ClaudeAgent",
    "codex": "tether.agents.codex.adapter:CodexAgent",
}
AGENT_NAMES = ("pty", *ADAPTERS)


def load_agent(name: str) -> type[Agent]:
    target = ADAPTERS.get(name)
    if target is None:
        raise TetherError(f"unknown agent {name!r}", hint=f"use one of: {', '.join(AGENT_NAMES)}", code="bad_agent")
    module, _, attr = target.partition(":")
    cls: type[Agent] = getattr(importlib.import_module(module), attr)
    return cls
