"""The one interface every AI agent adapter implements (ARCHITECTURE §7): the agents that work in
turns (builtin, claude, codex). The registry (:mod:`tether.agents.registry`) also holds the
terminal agent, pty, whose adapter is a spawn function.

A session runs one agent in one workspace, as turns of items. The host's
:class:`~tether.host.agent_session.AgentSession` owns the turn lifecycle (turn.started,
turn.completed, interrupts, approvals, the event log); an adapter only has to:

- ``open()``: start whatever it drives (a process, an HTTP client), failing with a clear
  :class:`~tether.errors.TetherError` when it cannot;
- ``run_turn(turn, text)``: work on one prompt, reporting what happens through its
  :class:`AgentContext` (items and their deltas, approval requests), and return when the turn is
  done — raise :class:`TurnInterrupted` if the agent itself reports the turn as interrupted, or a
  TetherError if the turn failed;
- ``interrupt(turn)``: stop the running turn; return False to let the host cancel ``run_turn``;
- ``close()``: stop everything.

A session outlives its host process: after a restart, the adapter is opened with
:attr:`AgentContext.resumed` and goes on with the same conversation.
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from tether.agents.policy import AgentConfig, Policy
from tether.errors import TetherError
from tether.protocol.events import ApprovalKind, EventData
from tether.protocol.events import ItemKind as ItemKind  # the adapters' vocabulary, declared with the events


class Decision(StrEnum):
    APPROVE = "approve"
    APPROVE_FOR_SESSION = "approve_for_session"
    DENY = "deny"


@dataclass(frozen=True)
class Image:
    """An image a person attached to a prompt (checked by the host: its type is what its bytes say)."""

    name: str
    mime: str  # image/png, image/jpeg, image/gif or image/webp
    data: bytes

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode()}"


@dataclass(frozen=True)
class Review:
    """A turn that reviews changes instead of answering a prompt: the working tree's uncommitted
    changes, or those against a ``base`` branch, or one ``commit``; ``instructions`` say what to
    look at instead."""

    base: str | None = None
    commit: str | None = None
    instructions: str | None = None


# A turn that is not a prompt: a review, or compacting the conversation (the agent summarizes what
# came so far to free its context).
COMPACT: Literal["compact"] = "compact"
Action = Review | Literal["compact"]


@dataclass(frozen=True)
class TurnSettings:
    """What a person chose for the next turns: the model, its reasoning effort, and the agent's
    mode (Codex: "plan" or "default"); None keeps what was. ``images`` go with the next prompt
    only (agents with ``takes_images``)."""

    model: str | None = None
    effort: str | None = None
    mode: str | None = None
    images: tuple[Image, ...] = ()
    action: Action | None = None  # this turn only, instead of the prompt (agents with ``actions``)


# A question the agent puts to the people watching (an approval of kind QUESTION), answered with
# a list of strings per question id: {id, header, question, options: [{label, description}],
# is_other (free text allowed), is_secret (a password: never logged)}.
Question = dict[str, Any]
QUESTION = ApprovalKind.QUESTION
ANSWERED = "answered"  # the decision an answered question is resolved with


@dataclass(frozen=True)
class Exchange:
    """One earlier turn of a conversation, as the host's log kept it: the prompt, and what the
    agent answered and did (its messages, commands and file changes, in words)."""

    prompt: str
    reply: str


@dataclass(frozen=True)
class Resumed:
    """A conversation the host had before it restarted, for the adapter to pick up: the agent's own
    id of it (:meth:`Agent.conversation`, as ``session.started`` recorded it), and the earlier turns
    from the log (for agents whose conversation is the log)."""

    conversation: str | None
    transcript: tuple[Exchange, ...] = ()


class TurnInterrupted(TetherError):
    code = "interrupted"


class AgentDied(TetherError):
    """The agent's process ended: the session cannot go on."""

    code = "agent_died"


class AgentContext(Protocol):
    """What the host gives an adapter: where it runs, under which policy, and how to report."""

    session_id: str
    workspace: Path
    policy: Policy
    config: AgentConfig
    # What no agent may read or reach, whatever its sandbox mode: the host's home (its keys and
    # the owner's socket). Every sandbox and file tool hides these (resolved paths).
    hidden: Sequence[Path]
    # Set when the session goes on after a host restart: open() picks the conversation up.
    resumed: Resumed | None

    def new_id(self, prefix: str) -> str: ...

    async def emit(self, event: EventData) -> None:
        """Append an event of this session (item.started / item.delta / item.completed…): its
        struct says which."""
        ...

    async def request_approval(
        self, kind: str, details: dict[str, Any], *, item: str | None, options: Sequence[Decision]
    ) -> Decision:
        """Ask the people watching; returns the first answer. Cancelled if the turn is interrupted;
        an adapter that cancels it itself (the agent withdrew the question) gets it cleared."""
        ...

    async def ask(self, questions: Sequence[Question], *, item: str | None) -> dict[str, list[str]]:
        """Put questions to the people watching; the first answer, by question id. Cancelled
        like :meth:`request_approval`."""
        ...

    async def agent_exited(self, reason: str) -> None:
        """Tell the host the agent's process ended while no turn was running."""
        ...


class Agent(ABC):
    name: ClassVar[str]

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx

    async def open(self) -> None:  # noqa: B027 (optional hook)
        """Start what the adapter drives."""

    @abstractmethod
    async def run_turn(self, turn: str, text: str) -> None: ...

    def conversation(self) -> str | None:
        """The agent's own id of this conversation once open (a Codex thread, a Claude Code
        session), recorded so that a restarted host resumes it; None when the host's log is the
        conversation (the builtin agent: :attr:`AgentContext.resumed` has its transcript)."""
        return None

    async def interrupt(self, turn: str) -> bool:
        """Stop the running turn; False lets the host cancel ``run_turn`` (the default)."""
        return False

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """Stop everything the adapter started."""

    async def models(self) -> list[dict[str, Any]]:
        """The models a person may choose for the next turns: ``{id, name, description, efforts,
        default_effort, default}`` each. Agents without a choice refuse."""
        raise TetherError(f"the {self.name} agent offers no choice of model", code="bad_params")

    # Whether a prompt may carry images (TurnSettings.images).
    takes_images: ClassVar[bool] = False
    # The turns other than prompts the agent can run (TurnSettings.action): "review", "compact".
    actions: ClassVar[frozenset[str]] = frozenset()

    def choose(self, settings: TurnSettings) -> None:
        """Use ``settings`` from the next turn on (the host checked them against :meth:`models`)."""
        raise TetherError(f"the {self.name} agent offers no choice of model", code="bad_params")

    @classmethod
    def missing(cls, config: AgentConfig) -> TetherError | None:
        """Why the agent cannot start on this host (its program is not installed), or None.
        Blocking (it may run the program): call it off the event loop."""
        return None

    # Conversations the agent stores itself ("threads", desktop ones included), which a session
    # can adopt by id (the ``thread`` option). Only agents with ``keeps_threads`` have them.
    keeps_threads: ClassVar[bool] = False

    @classmethod
    async def list_threads(cls, config: AgentConfig, *, limit: int) -> list[dict[str, Any]]:
        """The stored threads, newest first: ``{id, name, preview, cwd, ...}`` each."""
        raise TetherError(f"the {cls.name} agent keeps no threads", code="bad_params")

    @classmethod
    async def thread_cwd(cls, config: AgentConfig, thread: str) -> str | None:
        """The directory a stored thread ran in; None when unknown."""
        raise TetherError(f"the {cls.name} agent keeps no threads", code="bad_params")
