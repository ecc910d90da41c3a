"""A turn as the adapters that follow an agent process see it (codex, claude).

Such an adapter sends the prompt, then maps the process's events into the session's log until
the agent ends the turn. Two things are the same for every such agent: after an interrupt it gets
a grace period to end the turn itself, and the items it left open when a turn ends anyway
(interrupted, or the process died) are completed as failed, so no item stays open in the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Protocol, TypeVar

from tether.agents.base import AgentContext, ItemKind
from tether.host.projection import EventType

T = TypeVar("T")


class OpenItem(Protocol):
    id: str  # tether's item id
    kind: ItemKind
    text: list[str]  # streamed text / output so far
    data: dict[str, Any]  # what item.started said (command, path…)


async def next_event(events: asyncio.Queue[T], interrupt_at: float | None, grace: float) -> T:
    """The next event; TimeoutError once ``grace`` seconds have passed since the interrupt (loop time)."""
    timeout = None
    if interrupt_at is not None:
        timeout = max(0.0, interrupt_at + grace - asyncio.get_running_loop().time())
    return await asyncio.wait_for(events.get(), timeout)


async def fail_items(ctx: AgentContext, turn: str, items: Iterable[OpenItem]) -> None:
    """Complete ``items``, left open by an ended turn, as failed."""
    for item in items:
        data: dict[str, Any]
        if item.kind is ItemKind.COMMAND:
            data = {**item.data, "exit_code": None, "output": "".join(item.text)}
        elif item.kind is ItemKind.FILE_CHANGE:
            data = dict(item.data)
        else:
            data = {"text": "".join(item.text)}
        await ctx.emit(EventType.ITEM_COMPLETED,
                       {"turn": turn, "item": item.id, "kind": item.kind, "status": "failed", **data})
