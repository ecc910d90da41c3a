"""Which agents this host can start now, for the New session screen: an agent whose program is not
installed is offered disabled, with what to do. Checked off the event loop (it may run the
program) and remembered for a while, as every client asks on connecting."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tether.agents.registry import AGENTS, Kind, load_agent
from tether.host.config import HostConfig

FRESH_SECONDS = 60.0


class AgentStatus:
    def __init__(self, config: HostConfig) -> None:
        self.config = config
        self._known: list[dict[str, Any]] | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def agents(self) -> list[dict[str, Any]]:
        """``[{name, kind, available, hint}]``, one per agent of the registry, in its order."""
        async with self._lock:
            if self._known is None or time.monotonic() - self._at > FRESH_SECONDS:
                self._known = await asyncio.to_thread(self._check)
                self._at = time.monotonic()
            return self._known

    def _check(self) -> list[dict[str, Any]]:
        found = []
        for name, spec in AGENTS.items():
            config = self.config.agent(name)
            problem = load_agent(name).missing(config) if spec.kind is Kind.TURNS and config.enabled else None
            hint = None if config.enabled else f"the {name} agent is disabled on this host"
            if problem is not None:
                hint = problem.message + (f" — {problem.hint}" if problem.hint else "")
            found.append({"name": name, "kind": spec.kind.value, "available": config.enabled and problem is None,
                          "hint": hint})
        return found
