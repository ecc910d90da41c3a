"""Following one session's events through the SDK until something happens."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tether import Client

Event = dict[str, Any]


async def until(client: Client, session: str, pred: Callable[[Event], bool], seen: list[Event] | None = None,
                timeout: float = 30) -> list[Event]:
    """The session's events (from the start) up to the first one matching ``pred``."""
    events: list[Event] = [] if seen is None else seen
    events.clear()
    async with asyncio.timeout(timeout):
        async for event in client.events(0, session=session):
            events.append(event)
            if pred(event):
                return events
    raise AssertionError("the event stream ended")
