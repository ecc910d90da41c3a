"""A turn as the adapters that follow an agent process see it (codex, claude).

Such an adapter sends the prompt, then maps the process's events into the session's log until
the agent ends the turn. Three things are the same for every such agent: after an interrupt it
gets a grace period to end the turn itself; the items it left open when a turn ends anyway
(interrupted, or the process died) are completed as failed, so no item stays open in the log; and
what an item streams is redacted across its deltas (:mod:`tether.agents.secrets`), what the
redactor held back shown when the item's stream ends. :class:`FollowingAgent` is that loop, once.
"""

from __future__ import annotations

import asyncio
import logging
import re
from abc import abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from tether.agents.base import Agent, AgentContext, AgentDied, Exchange, ItemKind, TurnInterrupted
from tether.agents.jsonl_process import Exited, JsonlProcess
from tether.agents.policy import AgentConfig
from tether.agents.secrets import Redactor, StreamRedactor
from tether.errors import TetherError
from tether.protocol.events import (
    AgentNotice,
    ChangesStarted,
    DeltaStream,
    ItemDelta,
    ItemStarted,
    NoticeLevel,
    PlanStarted,
    PlanStep,
    completed,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long an agent has to end a turn itself after tether asked it to stop.
INTERRUPT_GRACE_SECONDS = 10.0


class TurnState(Protocol):
    id: str  # tether's turn id
    interrupt_at: float | None  # loop time tether asked the agent to stop, if it did


S = TypeVar("S", bound=TurnState)
P = TypeVar("P", bound=JsonlProcess)


@dataclass
class OpenItem:
    """An item of the running turn an adapter follows: what its item.started said, and what it
    streamed so far."""

    started: ItemStarted
    text: list[str] = field(default_factory=list)  # streamed text / output so far
    redactor: StreamRedactor | None = None  # of the streamed text / output, once it streamed

    @property
    def id(self) -> str:  # tether's item id
        return self.started.item

    @property
    def kind(self) -> ItemKind:
        return ItemKind(str(self.started.__struct_config__.tag))


async def next_event(events: asyncio.Queue[T], interrupt_at: float | None, grace: float) -> T:
    """The next event; TimeoutError once ``grace`` seconds have passed since the interrupt (loop time)."""
    timeout = None
    if interrupt_at is not None:
        timeout = max(0.0, interrupt_at + grace - asyncio.get_running_loop().time())
    return await asyncio.wait_for(events.get(), timeout)


async def fail_items(ctx: AgentContext, items: Iterable[OpenItem]) -> None:
    """Complete ``items``, left open by an ended turn, as failed."""
    for item in items:
        streamed = "".join(item.text)
        fields: dict[str, Any] = {}
        if item.kind is ItemKind.COMMAND:
            fields = {"exit_code": None, "output": streamed}
        elif item.kind is ItemKind.TOOL_CALL:
            fields = {"output": streamed}
        elif item.kind in (ItemKind.AGENT_MESSAGE, ItemKind.REASONING, ItemKind.PLAN):
            fields = {"text": streamed}
        await ctx.emit(completed(item.started, "failed", **fields))


async def stream_delta(ctx: AgentContext, item: OpenItem, stream: DeltaStream, data: str, redact: Redactor) -> None:
    """Log a streamed chunk of ``item``, redacted; the end of a possible secret waits for the next."""
    if item.redactor is None:
        item.redactor = redact.stream()
    await emit_delta(ctx, item, stream, item.redactor.feed(data))


async def flush_delta(ctx: AgentContext, item: OpenItem) -> None:
    """The item's stream has ended: log what its redactor held back."""
    if item.redactor is not None:
        await emit_delta(ctx, item, "output" if item.kind is ItemKind.COMMAND else "text", item.redactor.flush())


def recap(transcript: Iterable[Exchange]) -> str:
    """Earlier turns as the head of the next prompt, for an agent that lost its own record of
    them (empty when there were none)."""
    turns = "\n\n".join(f"Prompt: {e.prompt}\nYou answered: {e.reply or '(nothing)'}" for e in transcript)
    if not turns:
        return ""
    return ("[tether: the host restarted and your earlier conversation was lost; here it is from tether's"
            f" record]\n\n{turns}\n\n[the new prompt follows]\n\n")


async def emit_notice(ctx: AgentContext, turn: str | None, level: NoticeLevel, source: str, message: str) -> None:
    """An ``agent.notice``: what the agent said outside any item (``message`` already redacted)."""
    await ctx.emit(AgentNotice(turn=turn, level=level, source=source, message=message))


async def emit_plan(ctx: AgentContext, turn: str, steps: list[PlanStep], explanation: str | None) -> None:
    """The agent's to-do list as it now stands (redacted), as one finished plan item: each is the
    whole list, and replaces the last on the page."""
    await _emit_whole(ctx, PlanStarted(turn=turn, item=ctx.new_id("i"), steps=steps, explanation=explanation))


async def emit_changes(ctx: AgentContext, turn: str, diff: str) -> None:
    """The turn's changes so far as one unified diff (redacted), as one finished changes item:
    each is the whole diff, and replaces the turn's last on the page."""
    paths = list(dict.fromkeys(m.group(1) for m in _DIFF_FILE.finditer(diff)))
    await _emit_whole(ctx, ChangesStarted(turn=turn, item=ctx.new_id("i"), diff=diff, paths=paths))


# A unified diff's file header (`diff --git a/PATH b/PATH`): the path it changes.
_DIFF_FILE = re.compile(r"^diff --git a/.* b/(.*)$", re.MULTILINE)


async def _emit_whole(ctx: AgentContext, started: ItemStarted) -> None:
    # An item the agent states whole each time (not streamed): started and completed at once.
    await ctx.emit(started)
    await ctx.emit(completed(started, "completed"))


async def emit_delta(ctx: AgentContext, item: OpenItem, stream: DeltaStream, data: str) -> None:
    """Log ``data`` (already redacted) as a delta of ``item``."""
    if data:
        item.text.append(data)
        await ctx.emit(ItemDelta(item=item.id, stream=stream, data=data))


class FollowingAgent(Agent, Generic[S, P]):
    """An agent run as a child process whose events are followed through each turn (codex, claude).

    The process's events (and its :class:`Exited`) arrive on ``_events``; :meth:`_follow` hands
    each to :meth:`_on_turn_event` until that says the turn ended, and ends the turn itself when the
    agent does not after an interrupt, or dies."""

    interrupt_grace: ClassVar[float] = INTERRUPT_GRACE_SECONDS
    _events: asyncio.Queue[Any]

    @staticmethod
    @abstractmethod
    def find_binary(explicit: str | None) -> object:
        """The agent's program (the config's ``binary``, else on PATH); a TetherError saying
        how to install it when it is not there."""

    @classmethod
    def missing(cls, config: AgentConfig) -> TetherError | None:
        try:
            cls.find_binary(config.options.get("binary"))
        except TetherError as exc:
            return exc
        return None

    def __init__(self, ctx: AgentContext) -> None:
        super().__init__(ctx)
        self._turn: S | None = None  # the running turn
        self._exited: Exited | None = None
        self._exit_report: asyncio.Task[None] | None = None

    def _process_exited(self, exited: Exited, message: str) -> None:
        """The process ended (said on its reading task): remembered for :meth:`_died`. Between
        turns nothing else would notice, so the host is told, which ends the session unless a
        turn is running (that turn fails with AgentDied instead)."""
        self._exited = exited
        self._exit_report = asyncio.get_running_loop().create_task(self.ctx.agent_exited(message))

    def _live_child(self) -> P:
        """The process, running; a clear error when it was never opened or has died."""
        child = self.child
        if child is None:
            raise TetherError(f"the {self.name} agent was not opened", code=f"{self.name}_not_open")
        if self._exited is not None or not child.running:
            raise self._died()
        return child

    async def _follow(self, state: S) -> None:
        while True:
            try:
                event = await next_event(self._events, state.interrupt_at, self.interrupt_grace)
            except TimeoutError:
                log.warning("session %s: %s did not end the interrupted turn; giving up on it",
                            self.ctx.session_id, self.name)
                await self._close_open_items(state)
                raise TurnInterrupted("the turn was interrupted") from None
            if isinstance(event, Exited):
                await self._close_open_items(state)
                died = self._died()
                await self._stop_process()  # commands the agent started must not outlive it
                raise died
            if await self._on_turn_event(state, event):
                return

    @abstractmethod
    async def _on_turn_event(self, state: S, event: Any) -> bool:
        """Map one event of the agent into the log; True once the turn has ended (raise
        :class:`TurnInterrupted` or a TetherError for a turn that did not complete)."""

    @abstractmethod
    async def _close_open_items(self, state: S) -> None:
        """Complete the items the agent left open as failed (:func:`fail_items`)."""

    @abstractmethod
    def _died(self) -> AgentDied:
        """Why the process ended, for the people watching."""

    @property
    @abstractmethod
    def child(self) -> P | None:
        """The agent's process, once started."""

    async def _stop_process(self) -> None:
        """Stop the process and everything it started."""
        child = self.child
        if child is not None:
            await child.close()
