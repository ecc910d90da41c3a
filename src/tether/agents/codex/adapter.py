"""tether's ``codex`` agent: the real Codex CLI driven through ``codex app-server`` (ARCHITECTURE §7).

One session is one app-server process and one Codex *thread* (new, or an existing one adopted by
id — threads started on the desktop included, see :func:`list_threads`). One tether turn is one
Codex turn. What Codex reports is mapped onto tether's items:

==================================================  ===========================================
Codex                                               tether
==================================================  ===========================================
``item/started`` agentMessage / reasoning           ``item.started`` agent_message / reasoning
``item/agentMessage/delta``,                        ``item.delta`` stream ``text``
``item/reasoning/summaryTextDelta``
``item/started`` commandExecution                   ``item.started`` command {command, cwd}
``item/commandExecution/outputDelta``               ``item.delta`` stream ``output``
``item/completed`` commandExecution                 ``item.completed`` command {exit_code, output}
``item/started`` / ``item/completed`` fileChange    ``item.started`` / ``item.completed``
                                                    file_change {path, paths, diff}
``item/commandExecution/requestApproval``,          ``ctx.request_approval`` (command /
``item/fileChange/requestApproval``                 file_change), answered accept /
                                                    acceptForSession / decline
``item/started`` / ``item/completed`` of any other  ``item.started`` / ``item.completed`` other
type (:data:`OTHER_ITEMS`, or unknown)              {type, title, summary}
``error`` with ``willRetry``                         ``turn.retrying`` {attempt, message, details}
``warning``, ``configWarning``,                     ``agent.notice`` warning
``deprecationNotice``
any other server request                            refused, and an ``agent.notice`` "refused: …"
any notification not in :data:`QUIET_NOTIFICATIONS`  ``agent.notice`` info, summarised
``turn/completed`` completed / interrupted / failed  return / :class:`TurnInterrupted` / TetherError
the process exits                                   :class:`AgentDied`
==================================================  ===========================================

Observed behaviour this relies on (Codex 0.169.0, tests/agents/codex/): after ``turn/interrupt``
Codex ends the turn (``turn/completed`` status ``interrupted``) *before* it withdraws a pending
approval (``serverRequest/resolved``), and it never completes command items that were open, so
the adapter closes every open item itself when a turn ends.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from tether import __version__
from tether.agents.base import (
    COMPACT,
    AgentContext,
    AgentDied,
    Decision,
    ItemKind,
    Question,
    Review,
    TurnInterrupted,
    TurnSettings,
)
from tether.agents.codex.appserver import (
    APPROVAL_METHODS,
    COMMAND_APPROVAL,
    AppServer,
    AppServerError,
    AppServerExited,
    Event,
    Exited,
    Notification,
    RefusedRequest,
    RequestState,
    RpcError,
    ServerRequest,
)
from tether.agents.codex.binary import CodexBinary, CodexError, find_codex
from tether.agents.forms import fill_form, form_questions
from tether.agents.policy import AgentConfig, Approval, Policy, Sandbox
from tether.agents.sandbox import hiding
from tether.agents.secrets import SECRET_NAME_PARTS, Redactor, env_secrets
from tether.agents.turn import (
    FollowingAgent,
    OpenItem,
    emit_changes,
    emit_delta,
    emit_notice,
    emit_plan,
    fail_items,
    flush_delta,
    stream_delta,
)
from tether.agents.unknown import log_unknown, summarize
from tether.protocol.events import (
    AgentMessageStarted,
    AgentUsage,
    CommandStarted,
    DeltaStream,
    FileChangeStarted,
    ItemCompleted,
    ItemStarted,
    ItemStatus,
    OtherStarted,
    PlanStarted,
    PlanStep,
    RateLimit,
    ReasoningStarted,
    StepStatus,
    ToolCallStarted,
    TurnRetrying,
    completed,
)

log = logging.getLogger(__name__)

# tether policy → the values Codex's thread/start and thread/resume take.
APPROVAL_POLICY: dict[Approval, str] = {
    Approval.UNTRUSTED: "untrusted",
    Approval.ON_REQUEST: "on-request",
    Approval.NEVER: "never",
}
SANDBOX_MODE: dict[Sandbox, str] = {
    Sandbox.READ_ONLY: "read-only",
    Sandbox.WORKSPACE_WRITE: "workspace-write",
    Sandbox.FULL_ACCESS: "danger-full-access",
}
# tether's answer → Codex's decision.
CODEX_DECISION: dict[Decision, str] = {
    Decision.APPROVE: "accept",
    Decision.APPROVE_FOR_SESSION: "acceptForSession",
    Decision.DENY: "decline",
}
# Codex item status → tether item status.
ITEM_STATUS: dict[str, ItemStatus] = {"completed": "completed", "failed": "failed", "declined": "declined"}

# Item types of Codex 0.169.0 that tether shows generically for now (type, title and summary), by
# their title; any other type is also shown so, and logged once as unknown.
OTHER_ITEMS = {
    "collabAgentToolCall": "agent tool call", "subAgentActivity": "subagent",
    "imageView": "image viewed", "imageGeneration": "image generation", "sleep": "waiting",
    "enteredReviewMode": "review started", "exitedReviewMode": "review ended",
    "contextCompaction": "context compacted", "hookPrompt": "hook", "functionCallOutput": "tool output",
}
# Item types shown as a tool call: the tool's name (and MCP server), its arguments, its result.
TOOL_ITEMS = frozenset({"mcpToolCall", "dynamicToolCall", "webSearch"})
# Notifications the adapter maps (see the table above).
HANDLED_NOTIFICATIONS = frozenset({
    "item/started", "item/completed", "item/agentMessage/delta", "item/reasoning/summaryTextDelta",
    "item/plan/delta", "item/commandExecution/outputDelta", "error", "turn/completed", "turn/plan/updated",
    "turn/diff/updated",
})
# Codex's plan step status → tether's.
STEP_STATUS: dict[str, StepStatus] = {"pending": "pending", "inProgress": "in_progress", "completed": "completed"}
# Notifications of what the session uses: agent.usage, in the session header.
USAGE = frozenset({"thread/tokenUsage/updated", "account/rateLimits/updated"})
# Notifications shown as warnings.
WARNINGS = frozenset({
    "warning", "configWarning", "deprecationNotice", "guardianWarning", "windows/worldWritableWarning",
    "model/rerouted",  # another model answers than the one chosen
})


def _quiet(groups: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {method: reason for reason, methods in groups.items() for method in methods}


# Notifications tether does not show, and why; any other is shown as a notice (a newer Codex may
# say something this list does not know) and logged once. tests/agents/codex/test_codex_schema.py
# checks that every notification of the pinned version is handled, a warning, or listed here.
QUIET_NOTIFICATIONS: dict[str, str] = _quiet({
    "the session's own events say it": (
        "thread/started", "thread/status/changed", "thread/closed", "turn/started", "thread/settings/updated"),
    "handled with the approval it resolves": ("serverRequest/resolved",),
    "the item's final form is shown when it completes": (
        "item/reasoning/summaryPartAdded", "item/fileChange/outputDelta", "item/fileChange/patchUpdated",
        "item/commandExecution/terminalInteraction", "item/mcpToolCall/progress"),
    "raw reasoning is not shown; its summary is": ("item/reasoning/textDelta",),
    "the desktop app's thread list and projects, not this session": (
        "thread/readState/changed", "thread/archived", "thread/deleted", "thread/unarchived", "thread/reverted",
        "thread/section/changed", "thread/attachment/updated", "thread/goal/updated", "thread/goal/cleared",
        "thread/prediction/updated", "thread/queue/changed", "project/changed", "thread/project/updated",
        "app/list/updated", "skills/changed"),
    "tether does not use these app-server methods": (
        "command/exec/outputDelta", "process/outputDelta", "process/exited", "fs/changed",
        "fuzzyFileSearch/sessionUpdated", "fuzzyFileSearch/sessionCompleted", "externalAgentConfig/import/progress",
        "externalAgentConfig/import/completed", "windowsSandbox/setupCompleted", "thread/realtime/started",
        "thread/realtime/itemAdded", "thread/realtime/item/started", "thread/realtime/item/transcript/delta",
        "thread/realtime/item/completed", "thread/realtime/transcript/delta", "thread/realtime/transcript/done",
        "thread/realtime/outputAudio/delta", "thread/realtime/sdp", "thread/realtime/error", "thread/realtime/closed"),
    "the host's account, login, MCP servers and environments stay on the host": (
        "remoteControl/status/changed", "account/updated", "account/login/completed", "account/gatewayOAuth/changed",
        "mcpServer/startupStatus/updated", "mcpServer/oauthLogin/completed", "mcpServer/event/stream/notification",
        "thread/environment/connected", "thread/environment/disconnected"),
    "the model provider's own checks and logins; the turn's outcome says what matters": (
        "model/verification", "model/safetyBuffering/updated", "turn/moderationMetadata",
        "modelProvider/authRecoveryStarted", "modelProvider/authRecoveryCompleted"),
    "tether keeps its own session title (Codex says this only when a client names the thread)": (
        "thread/name/updated",),
    "the compaction's own item (contextCompaction) says it": ("thread/compacted",),
    "the host user's own hooks": ("hook/started", "hook/completed"),
    "Codex's automatic approval review, which tether leaves off: approvals go to people": (
        "item/autoApprovalReview/started", "item/autoApprovalReview/completed",
        "autoApprovalReview/strictReviewRequired"),
})
# A tool's arguments or result as shown on the phone: the start of it.
MAX_TOOL_TEXT = 16 * 1024
USER_INPUT = "item/tool/requestUserInput"  # a question the agent asks (in plan mode): a question card
# Collaboration modes a person may switch Codex to for the next turns.
MODES = ("plan", "default")
# Server requests tether does not put to a person: refused at once (Codex does not wait) and shown
# as "refused: …", with why. (Approvals of commands, file changes and MCP tools, questions and forms
# are answered.)
ELICITATION = "mcpServer/elicitation/request"  # an MCP tool call to approve, or a form to fill in
REFUSED_REQUESTS: dict[str, str] = {
    # The session's sandbox is the host's policy (or stricter): a person on a phone does not widen it.
    "item/permissions/requestApproval": "a session's sandbox is the host owner's policy, not widened from a device",
    "item/tool/call": "tether registers no dynamic tools",
    "account/chatgptAuthTokens/refresh": "the host's credentials never leave it",
    "attestation/generate": "tether does not attest",
    "applyPatchApproval": "the legacy v1 approval; v2's is answered",
    "execCommandApproval": "the legacy v1 approval; v2's is answered",
}

# The session option (``AgentConfig.options``) naming a Codex thread to adopt instead of starting one.
THREAD_OPTION = "thread"
LIST_LIMIT = 50


@dataclass
class _Turn:
    id: str  # tether's turn id
    codex_id: str | None = None
    items: dict[str, OpenItem] = field(default_factory=dict)  # by Codex item id, open or done
    open: set[str] = field(default_factory=set)  # Codex item ids started, not completed
    interrupt_at: float | None = None  # loop time of our turn/interrupt
    error: str | None = None  # the last error notification Codex gave up on
    retries: int = 0  # "Reconnecting..." notices so far
    diff: str = ""  # the turn's diff as last shown (Codex repeats it unchanged)



class CodexAgent(FollowingAgent[_Turn, AppServer]):
    name = "codex"
    keeps_threads = True
    takes_images = True
    actions = frozenset({"review", COMPACT})

    @classmethod
    async def list_threads(cls, config: AgentConfig, *, limit: int) -> list[dict[str, Any]]:
        return await list_threads(config, limit=limit)

    @classmethod
    async def thread_cwd(cls, config: AgentConfig, thread: str) -> str | None:
        return await thread_cwd(config, thread)

    find_binary = staticmethod(find_codex)

    def __init__(self, ctx: AgentContext) -> None:
        super().__init__(ctx)
        self.binary: CodexBinary | None = None
        self.server: AppServer | None = None
        self.thread_id: str | None = None
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        # Open approval requests of Codex and the tasks asking people about them.
        self._approvals: dict[int | str, tuple[ServerRequest, asyncio.Task[None]]] = {}
        self._ended_turns: collections.deque[str] = collections.deque(maxlen=16)  # Codex turn ids
        self._redact = Redactor(env_secrets(os.environ))
        self._warned: set[str] = set()  # warnings shown in this session
        self._chosen = TurnSettings()  # for the next turn/start (Codex keeps them after)
        self._models: list[dict[str, Any]] | None = None
        self._model = ""  # the thread's model, as Codex said when it started or resumed it
        self._last_usage: dict[str, AgentUsage] = {}  # per notification: what was last said

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        options = self.ctx.config.options
        self.binary = await asyncio.to_thread(find_codex, options.get("binary"))
        resumed = self.ctx.resumed
        # A session going on after a host restart resumes its own thread; a new one may adopt one.
        thread = resumed.conversation if resumed is not None else options.get(THREAD_OPTION)
        approval, sandbox = codex_policy(self.ctx.policy)
        model = options.get("model")
        state = codex_home(self.ctx.config)
        # Codex's own sandbox lets commands read the whole disk: the app-server runs with the
        # tether home covered, so nothing it starts can reach the keys or the owner's socket.
        wrapper = await hiding(
            self.ctx.policy.sandbox.value, self.ctx.hidden,
            keep=[state or Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex"), self.binary.path.parent],
        )
        self.server = await AppServer.start(
            self.binary, codex_home=state, cwd=self.ctx.workspace,
            handler=self._on_event, client_version=__version__, extra_args=shell_env_args(), wrapper=wrapper,
            experimental_api=True,  # collaboration modes (plan) and the questions they ask
        )
        try:
            if thread:
                try:
                    started = await self.server.thread_resume(
                        str(thread), approval_policy=approval, sandbox=sandbox, cwd=self.ctx.workspace,
                        model=model,
                    )
                except RpcError as exc:
                    raise CodexError(
                        f"cannot {'resume' if resumed else 'adopt'} Codex thread {thread}: {exc.rpc_message}",
                        hint="list the host's Codex threads to pick one that exists", code="codex_no_thread",
                    ) from None
            else:
                started = await self.server.thread_start(self.ctx.workspace, approval, sandbox, model)
            self.thread_id = str(started["thread"]["id"])
            self._model = str(started.get("model") or model or "")
        except BaseException:
            await self.server.close()
            raise
        log.info("session %s: codex %s thread %s (%s, %s)", self.ctx.session_id, self.binary.version,
                 self.thread_id, approval, sandbox)

    def conversation(self) -> str | None:
        return self.thread_id

    @property
    def child(self) -> AppServer | None:
        return self.server

    async def close(self) -> None:
        for _request, task in list(self._approvals.values()):
            task.cancel()
        await self._stop_process()

    # -- turns -----------------------------------------------------------------------------

    async def models(self) -> list[dict[str, Any]]:
        if self._models is None:
            try:
                listed = await self._live_child().model_list()
            except RpcError as exc:
                raise CodexError(f"Codex could not list its models: {exc.rpc_message}", code="codex_rpc") from None
            self._models = [_model(m) for m in listed.get("data") or [] if isinstance(m, dict) and not m.get("hidden")]
        return self._models

    def choose(self, settings: TurnSettings) -> None:
        if settings.mode is not None and settings.mode not in MODES:
            raise CodexError(f"Codex has no mode {settings.mode!r}", hint=f"use one of: {', '.join(MODES)}",
                             code="bad_params")
        self._chosen = settings

    async def run_turn(self, turn: str, text: str) -> None:
        server = self._live_child()
        state = self._turn = _Turn(turn)
        try:
            try:
                chosen, self._chosen = self._chosen, TurnSettings()
                mode = None
                if chosen.mode is not None:
                    # Codex's collaboration mode names the model it runs (the thread's, unless chosen).
                    settings = {"model": chosen.model or self._model, "reasoning_effort": chosen.effort}
                    mode = {"mode": chosen.mode, "settings": settings}
                codex_turn: dict[str, Any] | None
                if isinstance(chosen.action, Review):
                    codex_turn = await server.review_start(self._thread(), _review_target(chosen.action))
                elif chosen.action == COMPACT:
                    await server.compact_start(self._thread())
                    codex_turn = None  # its id comes with turn/started
                else:
                    codex_turn = await server.turn_start(
                        self._thread(), text, model=chosen.model, effort=chosen.effort, collaboration_mode=mode,
                        image_urls=[image.data_url() for image in chosen.images],
                    )
            except AppServerExited:
                raise self._died() from None
            except RpcError as exc:
                raise CodexError(f"Codex refused the prompt: {exc.rpc_message}", code="codex_turn") from None
            if codex_turn is not None:
                await self._started(state, str(codex_turn["id"]))
            await self._follow(state)
        finally:
            self._turn = None

    async def _started(self, state: _Turn, codex_id: str) -> None:
        state.codex_id = codex_id
        if state.interrupt_at is not None:  # interrupted before Codex said which turn it is
            await self._send_interrupt(state)

    async def interrupt(self, turn: str) -> bool:
        state = self._turn
        if state is None or state.id != turn or self.server is None or not self.server.running:
            return False
        state.interrupt_at = asyncio.get_running_loop().time()
        if state.codex_id is None:
            return True  # run_turn sends it as soon as turn/start has answered
        return await self._send_interrupt(state)

    async def _send_interrupt(self, state: _Turn) -> bool:
        assert self.server is not None and state.codex_id is not None
        try:
            await self.server.turn_interrupt(self._thread(), state.codex_id)
        except AppServerError as exc:
            log.info("session %s: codex turn/interrupt failed: %s", self.ctx.session_id, exc.message)
            return False
        return True

    async def _on_turn_event(self, state: _Turn, event: Notification | ServerRequest | RefusedRequest) -> bool:
        """Map one of Codex's events into the log; the turn ends with its ``turn/completed``."""
        if isinstance(event, ServerRequest):
            await self._on_server_request(state, event)
            return False
        if isinstance(event, RefusedRequest):
            await self._refused(state, event.method, event.params)
            return False
        params = event.params
        if state.codex_id is None and event.method == "turn/started":
            # A compaction's turn: Codex names it only now.
            await self._started(state, str((params.get("turn") or {}).get("id")))
            return False
        turn_id = params.get("turnId")
        if turn_id is not None and turn_id != state.codex_id:
            return False  # a late event of an earlier turn
        if event.method == "turn/completed":
            turn_info = params.get("turn") or {}
            if turn_info.get("id") != state.codex_id:
                return False
            await self._close_open_items(state)
            self._end_turn(state, turn_info)
            return True
        await self._on_notification(state, event)
        return False

    def _end_turn(self, state: _Turn, turn_info: dict[str, Any]) -> None:
        status = turn_info.get("status")
        if status == "completed":
            return
        if status == "interrupted":
            raise TurnInterrupted("the turn was interrupted")
        error = turn_info.get("error") or {}
        message = _readable(error.get("message") or state.error or f"Codex ended the turn as {status}")
        details = error.get("additionalDetails")
        if details:
            message = f"{message} ({details})"
        raise CodexError(f"Codex: {self._redact(message)}", code="codex_turn_failed")

    # -- notifications ---------------------------------------------------------------------

    async def _on_notification(self, state: _Turn, event: Notification) -> None:
        params = event.params
        method = event.method
        if method == "item/started":
            await self._item_started(state, params.get("item") or {})
        elif method == "item/completed":
            await self._item_completed(state, params.get("item") or {})
        elif method in ("item/agentMessage/delta", "item/reasoning/summaryTextDelta", "item/plan/delta"):
            await self._delta(state, params, "text")
        elif method == "turn/plan/updated":
            await self._plan_updated(state, params)
        elif method == "turn/diff/updated":
            diff = self._redact(str(params.get("diff") or ""))
            if diff and diff != state.diff:  # sent again unchanged at each model response's end
                state.diff = diff
                await emit_changes(self.ctx, state.id, diff)
        elif method == "item/commandExecution/outputDelta":
            await self._delta(state, params, "output")
        elif method == "error":
            error = params.get("error") or {}
            message = str(error.get("message") or "Codex reported an error")
            if params.get("willRetry"):
                # Codex lost its model server and tries again: say so now, not after minutes.
                state.retries += 1
                details = error.get("additionalDetails")
                await self.ctx.emit(TurnRetrying(
                    turn=state.id, attempt=state.retries, message=self._redact(message),
                    details=self._redact(str(details)) if details else None,
                ))
            else:
                state.error = message
        elif method in USAGE:
            await self._usage(state, method, params)
        elif method in WARNINGS:
            text = params.get("message") or params.get("summary") or summarize(params)
            details = params.get("details")
            message = f"{text} ({details})" if details and details != text else str(text)
            if message not in self._warned:  # Codex repeats some every turn (an unknown model's)
                self._warned.add(message)
                await emit_notice(self.ctx, state.id, "warning", method, self._redact(message))
        elif method not in QUIET_NOTIFICATIONS:
            log_unknown("codex", "notification", method)
            await emit_notice(self.ctx, state.id, "info", method,
                              self._redact(f"Codex said {method}: {summarize(params)}"))

    async def _plan_updated(self, state: _Turn, params: dict[str, Any]) -> None:
        steps = [PlanStep(text=self._redact(str(s.get("step") or "")),
                          status=STEP_STATUS.get(str(s.get("status")), "pending"))
                 for s in params.get("plan") or [] if isinstance(s, dict)]
        explanation = params.get("explanation")
        await emit_plan(self.ctx, state.id, steps, self._redact(explanation) if isinstance(explanation, str) else None)

    async def _item_started(self, state: _Turn, item: dict[str, Any]) -> OpenItem | None:
        codex_id = item.get("id")
        if not isinstance(codex_id, str):
            return None
        if codex_id in state.items:
            return state.items[codex_id]
        started = _started(item, state.id, self.ctx.new_id("i"))
        if started is None:
            return None  # user messages (the host logs its own)
        tracked = OpenItem(self._redact.value(started))
        state.items[codex_id] = tracked
        state.open.add(codex_id)
        await self.ctx.emit(tracked.started)
        return tracked

    async def _item_completed(self, state: _Turn, item: dict[str, Any]) -> None:
        codex_id = item.get("id")
        if not isinstance(codex_id, str):
            return
        tracked = state.items.get(codex_id) if codex_id in state.open else None
        if tracked is None:
            if codex_id in state.items:
                return  # completed twice
            tracked = await self._item_started(state, item)
            if tracked is None:
                return
        state.open.discard(codex_id)
        await flush_delta(self.ctx, tracked)
        status = ITEM_STATUS.get(str(item.get("status")), "completed")
        started = tracked.started
        done: ItemCompleted
        if tracked.kind in (ItemKind.AGENT_MESSAGE, ItemKind.PLAN):
            done = completed(started, status, text=str(item.get("text") or "".join(tracked.text)))
        elif tracked.kind is ItemKind.REASONING:
            summary = item.get("summary")
            text = "\n\n".join(str(s) for s in summary) if isinstance(summary, list) and summary else None
            done = completed(started, status, text=text if text is not None else "".join(tracked.text))
        elif tracked.kind is ItemKind.COMMAND:
            aggregated = item.get("aggregatedOutput")
            if not tracked.text and aggregated:
                # A short command may finish before any output delta: stream its output once.
                await emit_delta(self.ctx, tracked, "output", self._redact(str(aggregated)))
            output = str(aggregated) if aggregated is not None else "".join(tracked.text)
            exit_code = item.get("exitCode")
            done = completed(started, status, exit_code=exit_code if isinstance(exit_code, int) else None,
                             output=output)
        else:  # file change, tool call, or a type tether shows generically: as it is now
            now = _started(item, started.turn, started.item)
            if now is None or type(now) is not type(started):
                now = started
            if tracked.kind is ItemKind.TOOL_CALL:
                output, failed = _tool_output(item)
                done = completed(now, "failed" if failed else status, output=output)
            else:
                done = completed(now, status)
        await self.ctx.emit(self._redact.value(done))

    async def _delta(self, state: _Turn, params: dict[str, Any], stream: DeltaStream) -> None:
        tracked = state.items.get(str(params.get("itemId")))
        delta = params.get("delta")
        if tracked is None or not isinstance(delta, str) or not delta:
            return
        await stream_delta(self.ctx, tracked, stream, delta, self._redact)

    async def _close_open_items(self, state: _Turn) -> None:
        """Codex leaves items open when a turn is interrupted or dies: end them as failed."""
        items = [state.items[codex_id] for codex_id in state.open]
        state.open.clear()
        for item in items:
            await flush_delta(self.ctx, item)
        await fail_items(self.ctx, items)

    # -- approvals -------------------------------------------------------------------------

    async def _on_server_request(self, state: _Turn, request: ServerRequest) -> None:
        if not request.pending:
            return  # Codex withdrew it before we got to it
        params = request.params
        if request.method == USER_INPUT and params.get("turnId") == state.codex_id:
            questions = [_question(q) for q in params.get("questions") or [] if isinstance(q, dict)]
            self._track(request, self._put_questions(request, self._redact.value(questions)))
            return
        if request.method == ELICITATION and params.get("turnId") == state.codex_id:
            await self._on_elicitation(state, request)
            return
        if request.method not in APPROVAL_METHODS or params.get("turnId") != state.codex_id:
            # Not a question tether can put to a person (or not of this turn): do not let Codex wait.
            if request.is_approval:
                await request.respond({"decision": "decline"})
            else:
                await request.reject(f"tether does not answer {request.method}")
            if request.method not in APPROVAL_METHODS:
                await self._refused(state, request.method, params)
            return
        codex_item = request.item_id
        tracked = state.items.get(codex_item) if codex_item else None
        if request.method == COMMAND_APPROVAL:
            kind = "command"
            details: dict[str, Any] = {"command": params.get("command"), "cwd": params.get("cwd"),
                                       "reason": params.get("reason")}
            if details["command"] is None and tracked is not None and isinstance(tracked.started, CommandStarted):
                details.update(command=tracked.started.command, cwd=tracked.started.cwd)
        else:
            kind = "file_change"
            change = tracked.started if tracked is not None and isinstance(tracked.started, FileChangeStarted) \
                else None
            details = {"path": change.path if change else None, "paths": change.paths if change else [],
                       "diff": change.diff if change else "", "reason": params.get("reason")}
            if params.get("grantRoot"):
                details["grant_root"] = params["grantRoot"]
        options = _options(params)
        self._track(request, self._ask(request, kind, self._redact.value(details), tracked.id if tracked else None,
                                       options))

    async def _on_elicitation(self, state: _Turn, request: ServerRequest) -> None:
        """An MCP server's question through Codex: Codex's own approval of an MCP tool call (an
        approval card), or a form the server wants filled in (a question card)."""
        params = request.params
        raw_meta = params.get("_meta")
        meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        server = str(params.get("serverName") or "")
        if meta.get("codex_approval_kind") == "mcp_tool_call":
            tool = str(meta.get("tool_name") or "tool")
            call = next((i.started for codex_id, i in reversed(state.items.items()) if codex_id in state.open
                         and isinstance(i.started, ToolCallStarted) and i.started.tool == tool
                         and i.started.server == server), None)
            details = {"tool": tool, "server": server, "reason": params.get("message"),
                       "input": call.input if call is not None else _tool_input(meta.get("tool_params"))}
            persist = meta.get("persist")
            options = [Decision.APPROVE, Decision.APPROVE_FOR_SESSION, Decision.DENY] \
                if isinstance(persist, list) and "session" in persist else [Decision.APPROVE, Decision.DENY]
            self._track(request, self._ask(request, "tool", self._redact.value(details),
                                           call.item if call else None, options, answer=_elicitation_answer))
            return
        schema = params.get("requestedSchema")
        form = form_questions(schema, str(params.get("message") or "")) if params.get("mode") == "form" else None
        if form is None:
            await request.respond({"action": "decline"})
            await self._refused(state, request.method, params, "tether puts only forms of text, number, yes/no and "
                                "choice fields to a person (not a link to open, or nested fields)")
            return
        assert isinstance(schema, dict)  # form_questions read it
        self._track(request, self._fill_form(request, self._redact.value(form), schema))

    async def _fill_form(self, request: ServerRequest, questions: list[Question], schema: dict[str, Any]) -> None:
        reply = await fill_form(self.ctx, questions, schema)
        if reply is not None and not await request.respond(reply):
            log.info("session %s: codex request %s closed before the answer", self.ctx.session_id, request.id)

    def _track(self, request: ServerRequest, asking: Coroutine[Any, Any, None]) -> None:
        """Ask the people watching in a task of its own, withdrawn if Codex stops waiting."""
        task = asyncio.create_task(asking, name=f"tether-codex-request-{request.id}")
        self._approvals[request.id] = (request, task)
        request_id = request.id

        def forget(_task: asyncio.Task[None]) -> None:
            self._approvals.pop(request_id, None)

        task.add_done_callback(forget)

    async def _put_questions(self, request: ServerRequest, questions: list[Question]) -> None:
        try:
            answers = await self.ctx.ask(questions, item=None)
        except asyncio.CancelledError:
            return  # the turn ended, or Codex stopped waiting
        except Exception:
            log.exception("session %s: asking the agent's question failed", self.ctx.session_id)
            await request.reject("tether could not put the question")
            return
        reply = {"answers": {qid: {"answers": given} for qid, given in answers.items()}}
        if not await request.respond(reply):
            log.info("session %s: codex request %s closed before the answer", self.ctx.session_id, request.id)

    async def _usage(self, state: _Turn, method: str, params: dict[str, Any]) -> None:
        """Tokens used and the account's rate limit, when they change."""
        if method == "thread/tokenUsage/updated":
            tokens = params.get("tokenUsage") or {}
            usage = AgentUsage(turn=state.id, total_tokens=_int((tokens.get("total") or {}).get("totalTokens")),
                               last_tokens=_int((tokens.get("last") or {}).get("totalTokens")),
                               context_window=_int(tokens.get("modelContextWindow")))
        else:
            window = (params.get("rateLimits") or {}).get("primary") or {}
            percent = _int(window.get("usedPercent"))
            if percent is None:
                return
            usage = AgentUsage(turn=state.id, rate_limit=RateLimit(
                used_percent=percent, window_minutes=_int(window.get("windowDurationMins")),
                resets_at=_int(window.get("resetsAt"))))
        said = msgspec.structs.replace(usage, turn=None)
        if said != self._last_usage.get(method):
            self._last_usage[method] = said
            await self.ctx.emit(usage)

    async def _refused(self, state: _Turn, method: str, params: dict[str, Any], why: str | None = None) -> None:
        """Say on the session what Codex asked and was told no (it was answered at once)."""
        why = why or REFUSED_REQUESTS.get(method)
        if why is None:
            log_unknown("codex", "request", method)
            why = "tether does not know this request"
        await emit_notice(self.ctx, state.id, "warning", method, self._redact(
            f"refused: Codex asked {method} ({summarize(params)}); {why}"))

    async def _ask(
        self, request: ServerRequest, kind: str, details: dict[str, Any], item: str | None,
        options: Sequence[Decision], answer: Callable[[Decision], dict[str, Any]] | None = None,
    ) -> None:
        try:
            decision = await self.ctx.request_approval(kind, details, item=item, options=options)
        except asyncio.CancelledError:
            return  # the turn ended, or Codex withdrew the question: nothing to answer
        except Exception:
            log.exception("session %s: asking for approval failed; declining", self.ctx.session_id)
            decision = Decision.DENY
        reply = answer(decision) if answer is not None else {"decision": CODEX_DECISION[decision]}
        if not await request.respond(reply):
            log.info("session %s: codex request %s closed before the answer", self.ctx.session_id, request.id)

    # -- events from the app-server (on its reading task: quick) ---------------------------

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Exited):
            # Waiting approvals stay: the host clears them (approval.cleared) when the turn fails.
            self._process_exited(event, event.message)
        elif isinstance(event, Notification) and event.method == "turn/completed":
            turn = event.params.get("turn") or {}
            self._ended_turns.append(str(turn.get("id")))
        elif isinstance(event, Notification) and event.method == "serverRequest/resolved":
            entry = self._approvals.get(event.params.get("requestId"))  # type: ignore[arg-type]
            if (entry is not None and entry[0].state is RequestState.RESOLVED
                    and entry[0].params.get("turnId") not in self._ended_turns):
                # Codex stopped waiting without our answer in the middle of a turn: stop asking
                # people. (After an interrupt Codex withdraws its questions only once the turn
                # has ended; those the host clears itself, with an approval.cleared event.)
                entry[1].cancel()
            return
        self._events.put_nowait(event)

    # -- helpers ---------------------------------------------------------------------------

    def _thread(self) -> str:
        assert self.thread_id is not None
        return self.thread_id

    def _died(self) -> AgentDied:
        exited = self._exited
        if exited is None and self.server is not None:
            code = self.server.returncode
            exited = Exited(code, f"codex app-server ended (exit code {code})")
        assert exited is not None
        message = exited.message  # says the exit code or the signal
        lines = [line for line in exited.stderr_tail if line.strip()]
        if lines:
            message += f"; its last output: {lines[-1][:300]}"
        return AgentDied(self._redact(message), hint="start a new session; the host's log has the app-server's output")


# -- module functions ------------------------------------------------------------------------


def codex_policy(policy: Policy) -> tuple[str, str]:
    """The (approvalPolicy, sandbox) Codex gets for a tether policy."""
    return APPROVAL_POLICY[policy.approval], SANDBOX_MODE[policy.sandbox]


def shell_env_args() -> list[str]:
    """``codex app-server`` options that keep the host's secret variables from the commands Codex
    runs (its ``shell_environment_policy``; the app-server itself keeps them: a model provider's
    key may be in any of them)."""
    patterns = [f"*{part}*" for part in SECRET_NAME_PARTS]
    return ["-c", "shell_environment_policy.ignore_default_excludes=false",
            "-c", f"shell_environment_policy.exclude={json.dumps(patterns)}"]


def codex_home(config: AgentConfig) -> Path | None:
    """``[agents.codex] codex_home``, else None: app-server then uses $CODEX_HOME or ~/.codex."""
    value = config.options.get("codex_home")
    return Path(os.path.expanduser(str(value))) if value else None


async def list_threads(
    config: AgentConfig, *, cwd: str | os.PathLike[str] | None = None, limit: int = LIST_LIMIT,
) -> list[dict[str, Any]]:
    """The Codex threads stored on this host (desktop ones too), newest first, for adoption.

    Each is ``{id, name, preview, cwd, created_at, updated_at, model_provider, cli_version}``
    (times in Unix seconds). Starts a short-lived app-server on the configured binary and
    CODEX_HOME.
    """
    async with await _app_server(config) as server:
        try:
            result = await server.thread_list(limit=limit, cwd=os.fspath(cwd) if cwd is not None else None)
        except RpcError as exc:
            raise CodexError(f"Codex could not list its threads: {exc.rpc_message}", code="codex_rpc") from None
    threads = []
    for thread in result.get("data") or []:
        threads.append({
            "id": thread.get("id"),
            "name": thread.get("name"),
            "preview": thread.get("preview"),
            "cwd": thread.get("cwd"),
            "created_at": thread.get("createdAt"),
            "updated_at": thread.get("updatedAt"),
            "model_provider": thread.get("modelProvider"),
            "cli_version": thread.get("cliVersion"),
        })
    return threads


async def thread_cwd(config: AgentConfig, thread_id: str) -> str | None:
    """The directory a stored Codex thread ran in; None when Codex knows no such thread or it
    names none (the host checks it before a restricted caller adopts the thread)."""
    async with await _app_server(config) as server:
        try:
            result = await server.thread_read(thread_id)
        except RpcError:
            return None
    cwd = (result.get("thread") or {}).get("cwd")
    return cwd if isinstance(cwd, str) and cwd else None


async def _app_server(config: AgentConfig) -> AppServer:
    """A short-lived app-server on the configured binary and CODEX_HOME, for a query."""
    binary = await asyncio.to_thread(find_codex, config.options.get("binary"))
    return await AppServer.start(binary, codex_home=codex_home(config), client_version=__version__)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _question(asked: dict[str, Any]) -> Question:
    """One of Codex's requestUserInput questions as tether puts it."""
    options = [o for o in asked.get("options") or [] if isinstance(o, dict)]
    return {
        "id": str(asked.get("id")),
        "header": str(asked.get("header") or ""),
        "question": str(asked.get("question") or ""),
        "options": [{"label": str(o.get("label") or ""), "description": str(o.get("description") or "")}
                    for o in options],
        "is_other": bool(asked.get("isOther")) or not options,
        "is_secret": bool(asked.get("isSecret")),
    }


def _review_target(review: Review) -> dict[str, Any]:
    """What Codex's review/start reviews."""
    if review.base is not None:
        return {"type": "baseBranch", "branch": review.base}
    if review.commit is not None:
        return {"type": "commit", "sha": review.commit}
    if review.instructions is not None:
        return {"type": "custom", "instructions": review.instructions}
    return {"type": "uncommittedChanges"}


def _elicitation_answer(decision: Decision) -> dict[str, Any]:
    """An MCP tool-call approval's answer, as Codex takes it (``persist`` observed with 0.169.0:
    "session" approves that tool for the rest of the thread)."""
    if decision is Decision.DENY:
        return {"action": "decline"}
    reply: dict[str, Any] = {"action": "accept", "content": {}}
    if decision is Decision.APPROVE_FOR_SESSION:
        reply["_meta"] = {"persist": "session"}
    return reply


def _model(listed: dict[str, Any]) -> dict[str, Any]:
    """One entry of Codex's model/list as tether offers it."""
    efforts = [e.get("reasoningEffort") for e in listed.get("supportedReasoningEfforts") or [] if isinstance(e, dict)]
    return {
        "id": str(listed.get("id") or listed.get("model")),
        "name": str(listed.get("displayName") or listed.get("id")),
        "description": str(listed.get("description") or ""),
        "efforts": [e for e in efforts if isinstance(e, str)],
        "default_effort": listed.get("defaultReasoningEffort"),
        "default": bool(listed.get("isDefault")),
    }


def _readable(message: str) -> str:
    """Codex passes a model server's error body on as the message: its own message, when it has one."""
    try:
        body = json.loads(message)
    except ValueError:
        return message
    error = body.get("error") if isinstance(body, dict) else None
    inner = error.get("message") if isinstance(error, dict) else None
    return inner if isinstance(inner, str) and inner else message


def _options(params: dict[str, Any]) -> list[Decision]:
    """What a person may answer: approve for the session only where Codex offers it."""
    available = params.get("availableDecisions")
    offers_session = not isinstance(available, list) or "acceptForSession" in available
    if offers_session:
        return [Decision.APPROVE, Decision.APPROVE_FOR_SESSION, Decision.DENY]
    return [Decision.APPROVE, Decision.DENY]


def _started(item: dict[str, Any], turn: str, item_id: str) -> ItemStarted | None:
    """The ``item.started`` of a Codex item, as item ``item_id`` of ``turn``; None for the prompt
    (the host logs its own)."""
    kind = item.get("type")
    if kind == "agentMessage":
        return AgentMessageStarted(turn=turn, item=item_id)
    if kind == "reasoning":
        return ReasoningStarted(turn=turn, item=item_id)
    if kind == "commandExecution":
        return CommandStarted(turn=turn, item=item_id, command=str(item.get("command") or ""),
                              cwd=str(item.get("cwd") or ""))
    if kind == "fileChange":
        changes = [c for c in item.get("changes") or [] if isinstance(c, dict)]
        paths = [str(c.get("path")) for c in changes]
        return FileChangeStarted(turn=turn, item=item_id, path=paths[0] if paths else "", paths=paths,
                                 diff="".join(_unified(c) for c in changes))
    if kind == "plan":
        return PlanStarted(turn=turn, item=item_id, steps=[])
    if kind in TOOL_ITEMS:
        if kind == "webSearch":
            return ToolCallStarted(turn=turn, item=item_id, tool="web search", input=str(item.get("query") or ""))
        server = item.get("server")
        return ToolCallStarted(turn=turn, item=item_id, tool=str(item.get("tool") or "tool"),
                               server=server if isinstance(server, str) else None,
                               input=_tool_input(item.get("arguments")))
    if kind == "userMessage" or not isinstance(kind, str):
        return None
    if kind not in OTHER_ITEMS:
        log_unknown("codex", "item", kind)
    return OtherStarted(turn=turn, item=item_id, type=kind, title=OTHER_ITEMS.get(kind, kind),
                        summary=_other_summary(kind, item))


def _other_summary(kind: str, item: dict[str, Any]) -> str:
    """What a person reads on an item shown generically: the gist of a review's start and end and
    of a compaction, else every field."""
    if kind == "enteredReviewMode":
        return str(item.get("review") or "")
    if kind == "exitedReviewMode":
        return ""  # the review itself is the agent's next message
    if kind == "contextCompaction":
        return "the conversation so far was summarized to free the model's context"
    if kind == "imageView":
        return str(item.get("path") or "")
    if kind == "imageGeneration":  # its prompt and file: the picture itself (base64 `result`) is no text
        prompt, saved = str(item.get("revisedPrompt") or ""), item.get("savedPath")
        return f"{prompt}; saved as {saved}" if saved else prompt
    if kind == "sleep" and isinstance(item.get("durationMs"), int):
        return f"for {item['durationMs'] / 1000:g} s"
    if kind == "hookPrompt":  # what the host user's hook told the agent to do before it stops
        return " ".join(str(f.get("text") or "") for f in item.get("fragments") or [] if isinstance(f, dict))
    if kind == "subAgentActivity":
        return f"{item.get('agentPath') or item.get('agentThreadId') or 'a subagent'}: {item.get('kind') or ''}"
    return summarize({k: v for k, v in item.items() if k not in ("status", "aggregatedOutput")})


def _tool_input(arguments: Any) -> str:
    """A tool call's arguments (an MCP server's tool, a dynamic tool), as a person reads them."""
    shown = json.dumps(arguments, indent=1, ensure_ascii=False) if arguments not in (None, {}, []) else ""
    return shown[:MAX_TOOL_TEXT]


def _tool_output(item: dict[str, Any]) -> tuple[str, bool]:
    """(what a tool call returned, as text; whether it failed)."""
    error = item.get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:MAX_TOOL_TEXT], True
    result = item.get("result")
    if isinstance(result, dict) and isinstance(result.get("content"), list):
        texts = [str(c.get("text")) for c in result["content"] if isinstance(c, dict) and c.get("type") == "text"]
        return "\n".join(texts)[:MAX_TOOL_TEXT], False
    items = item.get("contentItems")  # a dynamic tool's
    if isinstance(items, list):
        texts = [str(c.get("text")) for c in items if isinstance(c, dict) and c.get("text")]
        return "\n".join(texts)[:MAX_TOOL_TEXT], item.get("success") is False
    return "", False


def _unified(change: dict[str, Any]) -> str:
    """One Codex file change as a unified diff (Codex gives an added file's content, a deleted
    file's content, or an update's hunks)."""
    path = str(change.get("path"))
    diff = str(change.get("diff") or "")
    kind = change.get("kind") or {}
    kind_type = kind.get("type") if isinstance(kind, dict) else None
    if kind_type == "add":
        lines = diff.splitlines()
        body = "".join(f"+{line}\n" for line in lines)
        return f"--- /dev/null\n+++ {path}\n@@ -0,0 +1,{len(lines)} @@\n{body}" if lines else \
            f"--- /dev/null\n+++ {path}\n"
    if kind_type == "delete":
        lines = diff.splitlines()
        body = "".join(f"-{line}\n" for line in lines)
        return f"--- {path}\n+++ /dev/null\n@@ -1,{len(lines)} +0,0 @@\n{body}" if lines else \
            f"--- {path}\n+++ /dev/null\n"
    if diff.startswith("--- "):
        return diff if diff.endswith("\n") else diff + "\n"
    target = kind.get("move_path") if isinstance(kind, dict) and kind.get("move_path") else path
    body = diff if diff.endswith("\n") or not diff else diff + "\n"
    return f"--- {path}\n+++ {target}\n{body}"


__all__ = ["THREAD_OPTION", "CodexAgent", "codex_home", "codex_policy", "list_threads"]
