"""A turn as the adapters that follow an agent process see it (codex, claude).

Such an adapter sends the prompt, then maps the process's events into the session's log until
the agent ends the turn. Three things are the same for every such agent: after an interrupt it
gets a grace period to end the turn itself; the items it left open when a turn ends anyway
(interrupted, or the process died) are completed as failed, so no item stays open in the log; and
what an item streams is redacted across its deltas (:mod:`tether.agents.secrets`), what the
redactor held back shown when the item's stream ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Protocol, TypeVar

from tether.agents.base import AgentContext, ItemKind
from tether.agents.secrets import Redactor, StreamRedactor
from tether.host.projection import EventType

T = TypeVar("T")


class OpenItem(Protocol):
    id: str  # tether's item id
    kind: ItemKind
    text: list[str]  # streamed text / output so far
    data: dict[str, Any]  # what item.started said (command, path…)


class StreamedItem(OpenItem, Protocol):
    redactor: StreamRedactor | None  # of its streamed text / output, once it streamed


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


async def stream_delta(ctx: AgentContext, item: StreamedItem, stream: str, data: str, redact: Redactor) -> None:
    """Log a streamed chunk of ``item``, redacted; the end of a possible secret waits for the next."""
    if item.redactor is None:
        item.redactor = redact.stream()
    await emit_delta(ctx, item, stream, item.redactor.feed(data))


async def flush_delta(ctx: AgentContext, item: StreamedItem) -> None:
    """The item's stream has ended: log what its redactor held back."""
    if item.redactor is not None:
        await emit_delta(ctx, item, "output" if item.kind is ItemKind.COMMAND else "text", item.redactor.flush())


async def emit_delta(ctx: AgentContext, item: OpenItem, stream: str, data: str) -> None:
    """Log ``data`` (already redacted) as a delta of ``item``."""
    if data:
        item.text.append(data)
        await ctx.emit(EventType.ITEM_DELTA, {"item": item.id, "stream": stream, "data": data})
