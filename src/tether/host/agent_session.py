"""One AI agent session on the host: turns, items and approvals, recorded as events.

The adapter (:mod:`tether.agents.base`) does the agent's work; this class gives it its context
and owns what must be the same for every agent that works in turns: one turn at a time, the turn's start and end in
the log, interrupts, and approvals — asked once, answered by the first person to answer, and
cleared when the turn ends without an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.agents.base import (
    ANSWERED,
    QUESTION,
    Agent,
    AgentContext,
    AgentDied,
    Decision,
    Question,
    Resumed,
    Review,
    TurnInterrupted,
    TurnSettings,
)
from tether.agents.policy import AgentConfig, Policy
from tether.errors import TetherError
from tether.host import resume
from tether.host.event import new_id
from tether.host.eventlog import Event, EventLog
from tether.host.projection import ApprovalConflict
from tether.protocol.events import (
    ApprovalCleared,
    ApprovalKind,
    ApprovalRequested,
    ErrorDone,
    EventData,
    EventType,
    UserMessageDone,
    encoded,
)

log = logging.getLogger(__name__)


class AgentSessionError(TetherError):
    code = "session"


# Prompts one session holds while its agent works: beyond, a prompt is refused (busy).
MAX_QUEUED = 8


@dataclass(frozen=True)
class _Queued:
    id: str
    text: str
    cid: str | None
    settings: TurnSettings | None
    chosen: dict[str, Any]


class AgentSession(AgentContext):
    def __init__(
        self,
        *,
        session_id: str,
        workspace: Path,
        policy: Policy,
        config: AgentConfig,
        log: EventLog,
        agent_cls: type[Agent],
        hidden: Sequence[Path] = (),
        resumed: Resumed | None = None,
    ) -> None:
        self.session_id = session_id
        self.resumed = resumed
        self.workspace = workspace
        self.hidden = list(hidden)
        self.policy = policy
        self.config = config
        self.log = log
        self.agent = agent_cls(self)
        self.ended = asyncio.Event()
        self._turn: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._waiters: dict[str, asyncio.Future[Any]] = {}  # a Decision, or a question's answers
        self._options: dict[str, list[str]] = {}
        self._asked: dict[str, tuple[str, dict[str, Any]]] = {}  # pending approval -> (kind, details)
        self._interrupting = False
        self._queue: list[_Queued] = []  # prompts sent while the agent worked, in order
        self._closing = False

    # -- AgentContext ---------------------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        return new_id(prefix)

    async def emit(self, event: EventData) -> None:
        await self.log.append(self.session_id, *encoded(event))

    async def request_approval(
        self, kind: str, details: dict[str, Any], *, item: str | None, options: Sequence[Decision]
    ) -> Decision:
        decision: Decision = await self._put(kind, details, item, [Decision(o).value for o in options])
        return decision

    async def ask(self, questions: Sequence[Question], *, item: str | None) -> dict[str, list[str]]:
        answers: dict[str, list[str]] = await self._put(QUESTION, {"questions": list(questions)}, item, [])
        return answers

    async def _put(self, kind: str, details: dict[str, Any], item: str | None, options: list[str]) -> Any:
        """Put an approval or a question to the people watching; the first answer."""
        approval = self.new_id("ap")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[approval] = future
        self._options[approval] = options
        self._asked[approval] = (kind, details)
        try:
            await self.emit(ApprovalRequested(approval=approval, item=item, kind=ApprovalKind(kind), details=details,
                                              options=options))
            return await future
        except asyncio.CancelledError:
            # Still registered: cancelled by an interrupt of the turn, or by the adapter because
            # the agent withdrew the question. (Clearing at turn end unregisters first.)
            if self._waiters.pop(approval, None) is not None:
                reason = "the turn was interrupted" if self._interrupting else "withdrawn by the agent"
                with contextlib.suppress(ApprovalConflict, RuntimeError):
                    await self.emit(ApprovalCleared(approval=approval, reason=reason))
            raise
        finally:
            self._waiters.pop(approval, None)
            self._options.pop(approval, None)
            self._asked.pop(approval, None)

    async def agent_exited(self, reason: str) -> None:
        """The adapter's process ended on its own: end the session now if no turn is running
        (a running turn fails and ends it through :class:`AgentDied`)."""
        if not self.busy:
            with contextlib.suppress(Exception):
                await self.agent.close()
            await self._end(None, reason)

    # -- what the host asks -----------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def models(self) -> list[dict[str, Any]]:
        return await self.agent.models()

    async def send_input(self, text: str, cid: str | None = None, settings: TurnSettings | None = None) -> Event:
        """A prompt: starts the next turn, with the model and effort of ``settings`` when given
        (they stay for the turns after). While the agent works on a turn, the prompt is queued
        (``turn.queued``) and starts when that turn ends, unless cancelled (:meth:`unqueue`)."""
        if self.ended.is_set():
            raise AgentSessionError("the session has ended", hint="start a new session", code="session_finished")
        chosen = await self._chosen(settings)
        if self.busy or self._queue:
            if len(self._queue) >= MAX_QUEUED:
                raise AgentSessionError(
                    f"{MAX_QUEUED} prompts already wait for the agent", hint="wait, or cancel one of them",
                    code="busy",
                )
            queued = _Queued(self.new_id("q"), text, cid, settings, chosen)
            self._queue.append(queued)
            return await self.log.append(
                self.session_id, EventType.TURN_QUEUED, {"queued": queued.id, "input": text, **chosen}, cid
            )
        return await self._start_turn(text, cid, settings, chosen)

    async def unqueue(self, queued: str, by: dict[str, str], cid: str | None = None) -> Event:
        """Cancel a queued prompt before it starts."""
        entry = next((q for q in self._queue if q.id == queued), None)
        if entry is None:
            raise AgentSessionError(f"no queued prompt {queued!r}: it has started, or was cancelled",
                                    code="not_found")
        self._queue.remove(entry)
        reason = f"cancelled by {by.get('name') or by.get('id')}"
        return await self.log.append(self.session_id, EventType.TURN_UNQUEUED, {"queued": queued, "reason": reason},
                                     cid)

    async def _chosen(self, settings: TurnSettings | None) -> dict[str, Any]:
        """What ``settings`` ask, checked against what the agent offers: as turn.started records it."""
        if settings is None:
            return {}
        if settings.images and not self.agent.takes_images:
            raise AgentSessionError(f"the {self.agent.name} agent takes no images", code="bad_params")
        action = "review" if isinstance(settings.action, Review) else settings.action
        if action is not None and action not in self.agent.actions:
            raise AgentSessionError(f"the {self.agent.name} agent cannot {action} here", code="bad_params")
        # The agent's model list is asked for only when a model or an effort is to be checked.
        listed = await self.agent.models() if settings.model or settings.effort else []
        chosen = _checked(settings, listed)
        if settings.images:  # what the log keeps of them: not the bytes
            chosen["images"] = [{"name": i.name, "mime": i.mime, "bytes": len(i.data)} for i in settings.images]
        if action is not None:
            chosen["action"] = action
        return chosen

    async def _start_turn(
        self, text: str, cid: str | None, settings: TurnSettings | None, chosen: dict[str, Any],
        queued: str | None = None,
    ) -> Event:
        if settings is not None:
            self.agent.choose(settings)
        turn = self.new_id("t")
        self._turn = turn
        self._interrupting = False
        started = {"turn": turn, "input": text, **chosen, **({"queued": queued} if queued else {})}
        event = await self.log.append(self.session_id, EventType.TURN_STARTED, started, cid)
        item = self.new_id("i")
        await self.emit(UserMessageDone(turn=turn, item=item, status="completed", text=text))
        self._task = asyncio.create_task(self._run(turn, text), name=f"tether-turn-{turn}")
        return event

    async def approve(self, approval: str, decision: Decision, by: dict[str, str], cid: str | None = None) -> Event:
        """Answer an approval; :class:`ApprovalConflict` if someone answered first."""
        options = self._pending(approval, question=False)
        if decision.value not in options:
            raise AgentSessionError(
                f"{decision.value!r} is not one of this approval's options ({', '.join(options)})",
                code="bad_decision",
            )
        event = await self.log.append(
            self.session_id, EventType.APPROVAL_RESOLVED, {"approval": approval, "decision": decision.value, "by": by},
            cid,
        )
        future = self._waiters.get(approval)
        if future is not None and not future.done():
            future.set_result(decision)
        return event

    async def answer(
        self, approval: str, answers: dict[str, list[str]], by: dict[str, str], cid: str | None = None
    ) -> Event:
        """Answer a question of the agent (each question's id → its answers); the first answer wins."""
        self._pending(approval, question=True)
        _, details = self._asked[approval]
        asked = {str(q["id"]): q for q in details.get("questions", [])}
        unknown = sorted(set(answers) - set(asked))
        if unknown:
            raise AgentSessionError(f"the question has no part {unknown[0]!r}", code="bad_params")
        # A secret answer (a password the agent asked for) goes to the agent, never into the log.
        shown = {q: ["[secret]"] if asked[q].get("is_secret") else a for q, a in answers.items()}
        event = await self.log.append(
            self.session_id, EventType.APPROVAL_RESOLVED,
            {"approval": approval, "decision": ANSWERED, "answers": shown, "by": by}, cid,
        )
        future = self._waiters.get(approval)
        if future is not None and not future.done():
            future.set_result(answers)
        return event

    def _pending(self, approval: str, *, question: bool) -> list[str]:
        options = self._options.get(approval)
        if options is None:
            raise ApprovalConflict(
                f"approval {approval!r} is not pending in this session (already answered, withdrawn, or unknown)",
                hint="see the session's events for who resolved it",
            )
        if (self._asked[approval][0] == QUESTION) != question:
            raise AgentSessionError(
                "this is a question: answer it (sessions.answer)" if not question
                else "this is an approval, not a question: approve or deny it (sessions.approve)",
                code="bad_params",
            )
        return options

    async def interrupt(self, cid: str | None = None) -> Event:
        event = await self.log.append(self.session_id, EventType.SESSION_INTERRUPTED, {}, cid)
        task, turn = self._task, self._turn
        if task is not None and not task.done() and turn is not None:
            handled = False
            try:
                handled = await self.agent.interrupt(turn)
            except TetherError as exc:
                log.info("session %s: the agent's own interrupt failed (%s)", self.session_id, exc.message)
            if not handled:
                self._interrupting = True
                task.cancel()
        return event

    async def resize(self, cols: int, rows: int, cid: str | None = None) -> Event:
        raise AgentSessionError(f"the {self.agent.name} agent's session has no terminal to resize", code="bad_params")

    async def abandon(self) -> None:
        """The session could not be recorded as started: stop the adapter, log nothing."""
        self.ended.set()
        await self.agent.close()

    async def close(self, reason: str = "host shutdown") -> None:
        await self._stop()
        await self._end(None, reason)

    async def suspend(self) -> None:
        """The host stops, the session does not: the agent stops (its running turn ends as
        interrupted, prompts still queued are said dropped) and the log says the conversation goes
        on; the next host opens the agent again with it (:attr:`resumed`)."""
        if self.ended.is_set():
            return  # ended (or deleted) already: nothing goes on
        await self._stop()
        self.ended.set()  # this object is done; the session is not
        with contextlib.suppress(RuntimeError):
            await self._drop_queued(resume.QUEUED_LOST)
            await self.emit(resume.notice())

    async def _stop(self) -> None:
        self._closing = True  # no queued prompt starts after the turn it cancels
        if self._task is not None and not self._task.done():
            self._interrupting = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self.agent.close()

    # -- internals -------------------------------------------------------------------------

    async def _run(self, turn: str, text: str) -> None:
        status, error = "completed", None
        died: AgentDied | None = None
        try:
            await self.agent.run_turn(turn, text)
        except (asyncio.CancelledError, TurnInterrupted):
            status = "interrupted"
        except AgentDied as exc:
            status, error, died = "failed", exc.message, exc
        except TetherError as exc:
            status, error = "failed", exc.message
        except Exception:
            log.exception("session %s: the %s adapter failed", self.session_id, self.agent.name)
            status, error = "failed", f"internal error in the {self.agent.name} agent; see the host's log"
        try:
            if error is not None:
                await self.emit(ErrorDone(turn=turn, item=self.new_id("i"), status="failed", message=error))
            await self._clear_waiters("the turn was interrupted" if status == "interrupted" else "the turn ended")
            await self.log.append(
                self.session_id, EventType.TURN_COMPLETED, {"turn": turn, "status": status, "error": error}
            )
            if died is not None:
                with contextlib.suppress(Exception):
                    await self.agent.close()
                await self._end(None, died.message)
            elif not self.ended.is_set() and not self._closing:
                await self._start_queued()
        except RuntimeError:
            pass  # the log closed under us (host shutting down)

    async def _start_queued(self) -> None:
        """The next queued prompt starts now, as if sent now (its cid kept). One the agent refuses
        at its start (a mode it has not, say) is said dropped, with why, and the next one goes."""
        while self._queue:
            nxt = self._queue.pop(0)
            try:
                await self._start_turn(nxt.text, nxt.cid, nxt.settings, nxt.chosen, queued=nxt.id)
                return
            except TetherError as exc:
                await self.log.append(self.session_id, EventType.TURN_UNQUEUED,
                                      {"queued": nxt.id, "reason": f"it could not start: {exc.message}"})

    async def _clear_waiters(self, reason: str) -> None:
        # A cancelled turn has already unwound its request_approval calls, so the pending set
        # is what the log still shows as pending: clear those explicitly, once.
        for approval in list(self._options):
            future = self._waiters.pop(approval, None)
            self._options.pop(approval, None)
            with contextlib.suppress(ApprovalConflict):
                await self.emit(ApprovalCleared(approval=approval, reason=reason))
            if future is not None:
                future.cancel()

    async def _drop_queued(self, reason: str) -> None:
        """Prompts that will not run: said so, not dropped quietly."""
        for queued in self._queue:
            await self.log.append(self.session_id, EventType.TURN_UNQUEUED, {"queued": queued.id, "reason": reason})
        self._queue.clear()

    async def _end(self, exit_code: int | None, reason: str) -> None:
        if self.ended.is_set():
            return
        self.ended.set()
        with contextlib.suppress(RuntimeError):
            await self._drop_queued("the session ended")
            await self.log.append(
                self.session_id, EventType.SESSION_EXITED, {"exit_code": exit_code, "signal": None, "reason": reason}
            )


def _checked(settings: TurnSettings, models: list[dict[str, Any]]) -> dict[str, Any]:
    """The settings as turn.started records them, once the agent's list allows them."""
    chosen: dict[str, Any] = {}
    model = next((m for m in models if m["id"] == settings.model), None)
    if settings.model is not None:
        if model is None:
            raise AgentSessionError(
                f"the agent offers no model {settings.model!r}",
                hint="tether sessions models ID lists those it offers", code="bad_params",
            )
        chosen["model"] = settings.model
    if settings.effort is not None:
        allowed = model["efforts"] if model is not None else sorted({e for m in models for e in m["efforts"]})
        if settings.effort not in allowed:
            raise AgentSessionError(
                f"reasoning effort {settings.effort!r} is not one of {', '.join(allowed) or 'none'}",
                code="bad_params",
            )
        chosen["effort"] = settings.effort
    if settings.mode is not None:
        chosen["mode"] = settings.mode  # the agent checks it (choose)
    return chosen
