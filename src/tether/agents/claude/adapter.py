"""tether's ``claude`` agent: the real Claude Code CLI in stream-json mode (ARCHITECTURE §7).

One session is one long-lived ``claude --print --input-format stream-json --output-format
stream-json`` process (see :mod:`.stream` for the protocol); one tether turn is one ``user``
message and ends with Claude Code's ``result``. What Claude Code reports is mapped onto tether's
items:

=====================================================  ========================================
Claude Code                                            tether
=====================================================  ========================================
``stream_event`` text block start / ``text_delta``     ``item.started`` agent_message, then
/ stop (the ``assistant`` text block completes it)      ``item.delta`` stream ``text``
thinking blocks / ``thinking_delta``                   the same as a ``reasoning`` item
``assistant`` ``tool_use`` Bash                         ``item.started`` command {command, cwd}
``assistant`` ``tool_use`` Edit / Write                 ``item.started`` file_change {path, diff}
``user`` ``tool_result`` of that tool                   ``item.delta`` output, ``item.completed``
                                                       {exit_code, output} / {path, diff},
                                                       status completed / failed / declined
``control_request`` ``can_use_tool``                    ``ctx.request_approval`` (command /
                                                       file_change) → ``allow`` / ``deny``
``control_cancel_request``                             the question is withdrawn
``result`` success / error / after our interrupt       return / TetherError / TurnInterrupted
the process exits                                      :class:`AgentDied`
=====================================================  ========================================

Read, Glob and Grep are not items: they change nothing (as the built-in agent's read tools).

**Policy.** Claude Code is started with ``--permission-prompt-tool stdio``, so every permission
question comes to tether. Under ``untrusted`` and ``on-request`` an *ask* rule for Bash, Edit and
Write (``--settings``) makes Claude Code ask before *every* command and file change — without it,
Claude Code runs commands it judges read-only (``echo …``) unasked. tether then answers from the
session's memory of "approve for the session" (``on-request``: the whole kind; ``untrusted``: that
exact command or file) or asks the people watching. Under ``never`` nobody is asked; every
question Claude Code still has is allowed. The sandbox is Claude Code's own (bubblewrap + socat on
Linux, Seatbelt on macOS) with ``failIfUnavailable`` and no unsandboxed escape hatch:
``workspace-write`` lets commands write the workspace only, ``read-only`` nothing (and the file
tools are not offered), neither has network; the tether home is unreadable to commands and to the
file tools. ``full-access`` turns it off. See docs/claude.md.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import logging
import os
import re
import shutil
import sys
import uuid
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.agents.approvals import ApprovalMemory
from tether.agents.base import AgentContext, AgentDied, Decision, ItemKind, Question, TurnInterrupted, TurnSettings
from tether.agents.claude import stream
from tether.agents.claude.binary import QUIET_ENV, ClaudeBinary, ClaudeError, find_claude
from tether.agents.claude.process import ClaudeExited, ClaudeProcess, Event, Exited
from tether.agents.claude.shell import write_shell
from tether.agents.forms import fill_form, form_questions
from tether.agents.policy import AgentConfig, Approval, Policy, Sandbox
from tether.agents.secrets import Redactor, env_secrets, is_secret_name, without_secrets
from tether.agents.turn import (
    FollowingAgent,
    OpenItem,
    emit_delta,
    emit_notice,
    emit_plan,
    fail_items,
    flush_delta,
    recap,
    stream_delta,
)
from tether.agents.unknown import log_unknown, summarize
from tether.protocol.events import (
    AgentMessageStarted,
    AgentUsage,
    ApprovalKind,
    CommandStarted,
    DeltaStream,
    FileChangeStarted,
    ItemCompleted,
    ItemStarted,
    ItemStatus,
    OtherStarted,
    PlanStep,
    ReasoningStarted,
    StepStatus,
    ToolCallStarted,
    TurnRetrying,
    completed,
)

log = logging.getLogger(__name__)

# The built-in tools Claude Code is offered: the ones tether can show and ask about, and read-only
# ones. (Sub-agents, skills, scheduling… would act without an item tether can show.)
FILE_TOOLS = frozenset({"Edit", "Write"})
COMMAND_TOOLS = frozenset({"Bash"})
READ_TOOLS = frozenset({"Read", "Glob", "Grep", "TaskList", "TaskGet"})  # change nothing: not items
TASK_TOOLS = frozenset({"TaskCreate", "TaskUpdate"})  # the to-do list (2.1.332's TodoWrite): a plan item
# Reach the network from Claude Code's own process, outside the sandbox: offered only when someone
# is asked first, or when the session has network anyway (full-access).
WEB_TOOLS = frozenset({"WebFetch", "WebSearch"})
QUESTION_TOOL = "AskUserQuestion"  # a question card
# A sub-agent: shown as a tool call with its task and report; each of its own tool uses is an item
# and asked about like the session's. Always run in the foreground, so none outlives its turn.
AGENT_TOOL = "Agent"
PLAN_TOOL = "ExitPlanMode"  # in plan mode: the plan, for a person to approve
TOOLS = ("Bash", "Edit", "Write", "Read", "Glob", "Grep", "TaskCreate", "TaskUpdate", "TaskList", "TaskGet",
         QUESTION_TOOL, PLAN_TOOL, "WebFetch", "WebSearch", AGENT_TOOL)
# Every use of these asks tether first, whatever Claude Code thinks of the command.
ASK_RULES = ("Bash", "Edit", "Write", "WebFetch", "WebSearch")
OPTIONS = [Decision.APPROVE, Decision.APPROVE_FOR_SESSION, Decision.DENY]
DENIED_WHAT = {ApprovalKind.COMMAND: "command", ApprovalKind.FILE_CHANGE: "file change"}
PLAN_OPTIONS = [Decision.APPROVE, Decision.DENY]
# The permission modes a person may switch a session to ("acceptEdits", "bypassPermissions" and
# "auto" would take tether's approvals away).
MODES = ("plan", "default")
# The effort levels Claude Code 2.1.332 takes in its flag settings (its model list also names "max",
# which those settings ignore).
EFFORTS = ("low", "medium", "high", "xhigh")
# What Claude Code says that tether does not show, and why; anything else is shown as a notice (a
# newer Claude Code may say something these lists do not know) and logged once.
QUIET_SYSTEM = frozenset({
    "init", "status",  # session facts; the permission mode is kept from them
    "task_started", "task_progress", "task_updated", "task_notification",  # a sub-agent's: its Agent call shows it
    "hook_started", "hook_progress", "hook_response",  # the host user's own hooks
    "compact_boundary", "turn_duration", "thinking_tokens", "session_state_changed",
    "permission_denied",  # the tool's item shows it was not run
})
QUIET_MESSAGES = frozenset({
    "rate_limit_event",  # the account's limits, which the result's usage already says
    "keep_alive", "tool_use_summary", "prompt_suggestion",
})
QUIET_BLOCKS = frozenset({"redacted_thinking"})  # reasoning the model keeps to itself
# A tool's result as shown on the phone: the start of it.
MAX_TOOL_OUTPUT = 16 * 1024
TASK_STATUSES: dict[object, StepStatus] = {s: s for s in ("pending", "in_progress", "completed")}

# The current content of a file is read to show a change as a diff only below this size.
MAX_DIFF_SOURCE_BYTES = 1024 * 1024
_EXIT_CODE = re.compile(r"\AExit code (-?\d+)\n?")

DENIED_MESSAGE = "The person supervising this session through tether denied this {what}. Do not retry it; ask them."
PLAN_DENIED = ("The person supervising this session through tether did not approve this plan. Stay in plan mode "
               "and ask them what to change.")


@dataclass
class _Item(OpenItem):
    open: bool = True


@dataclass
class _Turn:
    id: str
    tools: dict[str, _Item] = field(default_factory=dict)  # by Claude's tool_use_id
    task_calls: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # tool_use_id → (tool, input)
    text: _Item | None = None  # the agent message being streamed
    thinking: _Item | None = None  # the reasoning being streamed
    interrupt_at: float | None = None
    result_seen: bool = False  # Claude Code's result for this turn came

    def open_items(self) -> list[_Item]:
        items = [i for i in self.tools.values() if i.open]
        items += [i for i in (self.text, self.thinking) if i is not None and i.open]
        return items


# Said on a session whose conversation Claude Code did not keep across the host's restart.
RESTARTED_FRESH = ("Claude Code had not kept this conversation when the host restarted: it goes on in a new one,"
                   " given the earlier turns from tether's record")

class ClaudeAgent(FollowingAgent[_Turn, ClaudeProcess]):
    name = "claude"
    takes_images = True

    find_binary = staticmethod(find_claude)

    def __init__(self, ctx: AgentContext) -> None:
        super().__init__(ctx)
        self.binary: ClaudeBinary | None = None
        self.process: ClaudeProcess | None = None
        self.memory = ApprovalMemory()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._approvals: dict[str, asyncio.Task[None]] = {}  # by control request id
        self._redact = Redactor(())
        self._shell: Path | None = None  # the wrapper commands run through (claude/shell.py)
        self._stale_results = 0  # results still to come for turns tether gave up on
        self._tokens = 0  # the session's tokens so far, summed from each turn's result
        self._tasks: dict[str, PlanStep] = {}  # Claude Code's task list by id (not redacted)
        self._chosen = TurnSettings()  # what a person chose for the next turn
        self._retries = 0  # Claude Code's API retries in the running turn
        self._mode = "default"  # Claude Code's permission mode, as it last reported it
        self._plans: Path | None = None  # where Claude Code writes its plans (its config dir's plans/)
        self._recap = ""  # the earlier turns, for the next prompt of a conversation Claude Code lost
        # Claude Code's id of the conversation: chosen here, so that a restarted host resumes it.
        resumed = ctx.resumed
        self._conversation = resumed.conversation if resumed and resumed.conversation else str(uuid.uuid4())

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        options = self.ctx.config.options
        self.binary = await asyncio.to_thread(find_claude, options.get("binary"))
        check_sandbox(self.ctx.policy)
        env = claude_env(self.ctx.config)
        # Every secret of the host is redacted, also those Claude Code's environment lacks.
        self._redact = Redactor(env_secrets({**os.environ, **env}))
        self._shell = await asyncio.to_thread(write_shell, [k for k in env if is_secret_name(k)])
        env["CLAUDE_CODE_SHELL_PREFIX"] = os.fspath(self._shell)
        self._plans = await asyncio.to_thread(plans_dir, env)
        hide = [path for path in self.ctx.hidden if path.is_dir()]
        mcp_config = options.get("mcp_config")
        args = claude_args(self.ctx.policy, self.ctx.workspace, model=options.get("model"), hide=hide,
                           mcp_config=str(mcp_config) if mcp_config else None)
        resumed = self.ctx.resumed
        try:
            # What the process says while it starts is held back: a resume Claude Code refuses
            # ends that process, which must not end the session.
            held: list[Event] = []
            try:
                self.process = await ClaudeProcess.start(
                    self.binary, [*args, "--resume" if resumed else "--session-id", self._conversation],
                    cwd=self.ctx.workspace, env=env, handler=held.append,
                )
                self.process.handler = self._on_event
                for event in held:
                    self._on_event(event)
            except ClaudeExited:
                if resumed is None:
                    raise
                # Claude Code keeps no conversation it never stored (the host died before its first
                # message was saved, or its projects/ were cleared): a new one under the same id,
                # told what came before from tether's log.
                self.process = await ClaudeProcess.start(
                    self.binary, [*args, "--session-id", self._conversation], cwd=self.ctx.workspace, env=env,
                    handler=self._on_event,
                )
                self._recap = recap(resumed.transcript)
                await emit_notice(self.ctx, None, "info", "claude", RESTARTED_FRESH)
        except BaseException:
            await self._remove_shell()  # the host closes only sessions that opened
            raise
        log.info("session %s: claude %s (%s, %s)", self.ctx.session_id, self.binary.version,
                 self.ctx.policy.approval.value, self.ctx.policy.sandbox.value)

    def conversation(self) -> str | None:
        return self._conversation

    @property
    def child(self) -> ClaudeProcess | None:
        return self.process

    async def close(self) -> None:
        for task in list(self._approvals.values()):
            task.cancel()
        await self._stop_process()
        await self._remove_shell()

    async def _remove_shell(self) -> None:
        if self._shell is not None:
            await asyncio.to_thread(shutil.rmtree, self._shell.parent, True)
            self._shell = None

    # -- turns -----------------------------------------------------------------------------

    async def run_turn(self, turn: str, text: str) -> None:
        process = self._live_child()
        state = self._turn = _Turn(turn)
        self._retries = 0
        sent = False
        try:
            chosen, self._chosen = self._chosen, TurnSettings()
            await self._apply(process, chosen)
            text, self._recap = f"{self._recap}{text}", ""
            try:
                await process.send(stream.user_message(text, chosen.images))
            except ClaudeExited:
                raise self._died() from None
            sent = True
            await self._follow(state)
        finally:
            self._turn = None
            if sent and not state.result_seen:
                # Given up on before Claude Code's result (cancelled, or it ignored an interrupt):
                # its messages until that result belong to this turn, not to the next one.
                self._stale_results += 1

    async def _apply(self, process: ClaudeProcess, chosen: TurnSettings) -> None:
        """What a person chose for this turn, told to Claude Code before the prompt; it keeps it."""
        changes: list[tuple[str, dict[str, Any]]] = []
        if chosen.model is not None:
            changes.append(("set_model", {"model": chosen.model}))
        if chosen.effort is not None:
            changes.append(("apply_flag_settings", {"settings": {"effortLevel": chosen.effort}}))
        if chosen.mode is not None:
            changes.append(("set_permission_mode", {"mode": chosen.mode}))
        for subtype, fields in changes:
            try:
                await process.request(subtype, **fields)
            except ClaudeExited:
                raise self._died() from None

    async def models(self) -> list[dict[str, Any]]:
        listed = self._live_child().info.get("models")
        return [_model(m) for m in listed if isinstance(m, dict) and isinstance(m.get("value"), str)] \
            if isinstance(listed, list) else []

    def choose(self, settings: TurnSettings) -> None:
        if settings.mode is not None and settings.mode not in MODES:
            raise ClaudeError(f"Claude Code has no mode {settings.mode!r} here", hint=f"use one of: {', '.join(MODES)}",
                              code="bad_params")
        self._chosen = settings

    async def interrupt(self, turn: str) -> bool:
        state = self._turn
        process = self.process
        if state is None or state.id != turn or process is None or not process.running:
            return False
        state.interrupt_at = asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(process.request("interrupt"), self.interrupt_grace)
        except TimeoutError:
            log.info("session %s: claude did not answer the interrupt", self.ctx.session_id)
            return False
        except ClaudeError as exc:
            log.info("session %s: claude interrupt failed: %s", self.ctx.session_id, exc.message)
            return False
        return True

    async def _on_turn_event(self, state: _Turn, event: stream.Message) -> bool:
        """Map one of Claude Code's messages into the log; the turn ends with its ``result``."""
        if self._stale_results:
            await self._drop_stale(event)
            return False
        if isinstance(event, stream.Result):
            state.result_seen = True
            await self._close_open_items(state)
            await self._usage(state, event)
            if state.interrupt_at is not None:
                raise TurnInterrupted("the turn was interrupted")
            if event.is_error or event.subtype != "success":
                raise ClaudeError(f"Claude Code: {self._redact(event.message)}", code="claude_turn_failed")
            return True
        await self._on_message(state, event)
        return False

    async def _usage(self, state: _Turn, result: stream.Result) -> None:
        """What the turn used, from Claude Code's result: tokens (the turn's, and the session's so
        far) and the session's cost."""
        if result.tokens is None and result.cost_usd is None:
            return
        self._tokens += result.tokens or 0
        await self.ctx.emit(AgentUsage(turn=state.id, total_tokens=self._tokens, last_tokens=result.tokens,
                                       cost_usd=result.cost_usd))

    async def _drop_stale(self, event: Event) -> None:
        """A message of a turn tether already ended: not shown; its questions are refused."""
        if isinstance(event, stream.Result):
            self._stale_results -= 1
        elif isinstance(event, stream.ControlRequest) and self.process is not None:
            answer = stream.deny("The turn was interrupted.") if event.subtype == "can_use_tool" else None
            await self.process.reply(stream.control_success(event.request_id, answer) if answer
                                     else stream.control_error(event.request_id, "the turn was interrupted"))

    async def _on_message(self, state: _Turn, message: stream.Message) -> None:
        if isinstance(message, stream.StreamEvent):
            if message.parent is None:  # a sub-agent's text is in its report (the Agent call's result)
                await self._on_stream_event(state, message.event)
        elif isinstance(message, stream.Assistant):
            for block in message.content:
                if message.parent is None or block.get("type") == "tool_use":
                    await self._on_block(state, block)
        elif isinstance(message, stream.User):
            for result in message.results:
                await self._tool_completed(state, result)
        elif isinstance(message, stream.ControlRequest):
            await self._on_control_request(state, message)
        elif isinstance(message, stream.ControlCancel):
            self._withdrawn(state, message.request_id)
        elif isinstance(message, stream.System):
            await self._on_system(state, message)
        elif isinstance(message, stream.Other) and message.type not in QUIET_MESSAGES:
            await self._unknown(state, "message", message.type, message.data)

    async def _on_system(self, state: _Turn, message: stream.System) -> None:
        if isinstance(message.data.get("permissionMode"), str):
            self._mode = message.data["permissionMode"]
        if message.subtype == "api_retry":
            await self._retrying(state, message.data)
        elif message.subtype not in QUIET_SYSTEM:
            await self._unknown(state, "system message", message.subtype, message.data)

    async def _unknown(self, state: _Turn, what: str, name: str, data: dict[str, Any]) -> None:
        """What a newer Claude Code may send that this tether does not know: shown as a notice,
        summarised, and logged once per type."""
        log_unknown("claude", what, name)
        shown = {k: v for k, v in data.items() if k not in ("type", "subtype", "uuid", "session_id")}
        said = self._redact(f"Claude Code said {name}: {summarize(shown)}")
        await emit_notice(self.ctx, state.id, "info", name, said)

    async def _retrying(self, state: _Turn, data: dict[str, Any]) -> None:
        """Claude Code could not reach its model server and tries again: shown live."""
        self._retries += 1
        status, error = data.get("error_status"), data.get("error")
        said = (f"the model server answered HTTP {status}" if isinstance(status, int)
                else "the model server did not answer")
        if isinstance(error, str) and error and error != "unknown":
            said += f" ({error})"
        details = []
        if isinstance(data.get("max_retries"), int):
            details.append(f"Claude Code tries {data['max_retries']} times")
        if isinstance(data.get("retry_delay_ms"), (int, float)):
            details.append(f"next in {data['retry_delay_ms'] / 1000:.0f} s")
        await self.ctx.emit(TurnRetrying(turn=state.id, attempt=self._retries, message=self._redact(said),
                                         details="; ".join(details) or None))

    # -- text and reasoning ----------------------------------------------------------------

    async def _on_stream_event(self, state: _Turn, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "text":
                await self._complete_text(state, "text", None)
                state.text = await self._start(AgentMessageStarted(turn=state.id, item=self.ctx.new_id("i")))
            elif block.get("type") == "thinking":
                await self._complete_text(state, "thinking", None)
                state.thinking = await self._start(ReasoningStarted(turn=state.id, item=self.ctx.new_id("i")))
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta" and state.text is not None and state.text.open:
                await self._delta(state.text, "text", delta.get("text"))
            elif delta.get("type") == "thinking_delta" and state.thinking is not None and state.thinking.open:
                await self._delta(state.thinking, "text", delta.get("thinking"))
        elif kind == "content_block_stop":
            # Claude Code sends the finished block as an ``assistant`` message first; this only
            # ends a block whose ``assistant`` message never came.
            for which in ("text", "thinking"):
                await self._complete_text(state, which, None)

    async def _on_block(self, state: _Turn, block: dict[str, Any]) -> None:
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            await self._whole_text(state, "text", ItemKind.AGENT_MESSAGE, block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            await self._whole_text(state, "thinking", ItemKind.REASONING, block["thinking"])
        elif kind == "tool_use":
            await self._tool_started(state, block)
        elif kind not in QUIET_BLOCKS and isinstance(kind, str):
            log_unknown("claude", "content block", kind)
            shown = self._redact(summarize({k: v for k, v in block.items() if k not in ("type", "id")}))
            item = await self._start(OtherStarted(turn=state.id, item=self.ctx.new_id("i"), type=kind, title=kind,
                                                  summary=shown))
            item.open = False
            await self.ctx.emit(completed(item.started, "completed"))

    async def _whole_text(self, state: _Turn, which: str, kind: ItemKind, text: str) -> None:
        current: _Item | None = getattr(state, which)
        if current is None or not current.open:
            # Not streamed (no partial messages for this block): show it as one delta.
            started_as = AgentMessageStarted if kind is ItemKind.AGENT_MESSAGE else ReasoningStarted
            current = await self._start(started_as(turn=state.id, item=self.ctx.new_id("i")))
            setattr(state, which, current)
            await self._delta(current, "text", text)
        await self._complete_text(state, which, text)

    async def _complete_text(self, state: _Turn, which: str, text: str | None) -> None:
        item: _Item | None = getattr(state, which)
        if item is None or not item.open:
            return
        await flush_delta(self.ctx, item)
        item.open = False
        final = self._redact(text) if text is not None else "".join(item.text)
        await self.ctx.emit(completed(item.started, "completed", text=final))

    # -- tools -----------------------------------------------------------------------------

    async def _tool_started(self, state: _Turn, block: dict[str, Any]) -> _Item | None:
        tool_use_id, name = block.get("id"), block.get("name")
        raw_input = block.get("input")
        tool_input: dict[str, Any] = raw_input if isinstance(raw_input, dict) else {}
        if not isinstance(tool_use_id, str) or not isinstance(name, str):
            return None
        if tool_use_id in state.tools:
            return state.tools[tool_use_id]
        if name in TASK_TOOLS:
            state.task_calls[tool_use_id] = (name, tool_input)
            return None  # shown as the whole list once Claude Code took it (its result)
        described = self._describe_tool(state.id, name, tool_input)
        if described is None:
            return None  # read-only tools are not items
        item = await self._start(described)
        state.tools[tool_use_id] = item
        return item

    def _describe_tool(self, turn: str, name: str, tool_input: Mapping[str, Any]) -> ItemStarted | None:
        """The item a tool call of ``turn`` starts; None for one shown otherwise, or not at all."""
        item = self.ctx.new_id("i")
        if name in COMMAND_TOOLS:
            return CommandStarted(turn=turn, item=item, command=self._redact(str(tool_input.get("command") or "")),
                                  cwd=str(self.ctx.workspace))
        if name in FILE_TOOLS:
            path = str(tool_input.get("file_path") or "")
            diff = self._redact(file_diff(name, tool_input, self.ctx.workspace, hidden=self.ctx.hidden))
            return FileChangeStarted(turn=turn, item=item, path=path, paths=[path] if path else [], diff=diff)
        if name in READ_TOOLS or name in (QUESTION_TOOL, PLAN_TOOL):
            return None  # reads change nothing; a question or a plan is shown by its card
        server, tool = mcp_name(name)
        return ToolCallStarted(turn=turn, item=item, tool=tool, server=server,
                               input=self._redact(tool_summary(name, tool_input)))

    async def _tool_completed(self, state: _Turn, result: stream.ToolResult) -> None:
        task_call = state.task_calls.pop(result.tool_use_id, None)
        if task_call is not None:
            if not result.is_error and not result.rejected and self._update_tasks(*task_call, result.detail):
                steps = [PlanStep(text=self._redact(t.text), status=t.status) for t in self._tasks.values()]
                await emit_plan(self.ctx, state.id, steps, None)
            return
        item = state.tools.get(result.tool_use_id)
        if item is None or not item.open:
            return
        item.open = False
        status: ItemStatus = "declined" if result.rejected else "failed" if result.is_error else "completed"
        done: ItemCompleted
        if item.kind is ItemKind.COMMAND:
            exit_code, output = command_outcome(result)
            output = self._redact(output)
            if output and status != "declined":
                await emit_delta(self.ctx, item, "output", output)
            done = completed(item.started, status, exit_code=exit_code, output=output if status != "declined" else "")
        elif item.kind is ItemKind.TOOL_CALL:
            output = "" if status == "declined" else self._redact(result.content[:MAX_TOOL_OUTPUT])
            done = completed(item.started, status, output=output)
        else:
            done = completed(item.started, status)
        await self.ctx.emit(done)

    def _update_tasks(self, tool: str, tool_input: Mapping[str, Any], detail: Any) -> bool:
        """Apply a TaskCreate or TaskUpdate Claude Code carried out; whether the list changed."""
        if tool == "TaskCreate":
            task = detail.get("task") if isinstance(detail, dict) else None
            if not isinstance(task, dict) or task.get("id") is None:
                return False
            self._tasks[str(task["id"])] = PlanStep(text=str(task.get("subject") or tool_input.get("subject") or ""),
                                                    status="pending")
            return True
        task_id = str(tool_input.get("taskId") or "")
        current = self._tasks.get(task_id)
        if current is None:
            return False
        status = tool_input.get("status")
        if status == "deleted":
            del self._tasks[task_id]
            return True
        if status in TASK_STATUSES:
            current.status = TASK_STATUSES[status]
        if isinstance(tool_input.get("subject"), str):
            current.text = tool_input["subject"]
        return True

    async def _close_open_items(self, state: _Turn) -> None:
        """Items still open when a turn ends (interrupt, death) end as failed."""
        items = state.open_items()
        for item in items:
            await flush_delta(self.ctx, item)
            item.open = False
        await fail_items(self.ctx, items)

    # -- approvals -------------------------------------------------------------------------

    async def _on_control_request(self, state: _Turn, request: stream.ControlRequest) -> None:
        process = self.process
        assert process is not None
        if request.subtype == "elicitation":
            await self._on_elicitation(state, request)
            return
        if request.subtype != "can_use_tool":
            # Hooks and SDK MCP servers are not registered by tether: nothing else should come.
            await process.reply(stream.control_error(request.request_id, f"tether does not handle {request.subtype}"))
            log_unknown("claude", "request", request.subtype)
            await self._refused(state, request.subtype, request.request, "tether does not know this request")
            return
        name = str(request.request.get("tool_name") or "")
        raw_input = request.request.get("input")
        tool_input: dict[str, Any] = raw_input if isinstance(raw_input, dict) else {}
        tool_use_id = request.request.get("tool_use_id")
        item = state.tools.get(tool_use_id) if isinstance(tool_use_id, str) else None
        if item is None and isinstance(tool_use_id, str):
            item = await self._tool_started(state, {"type": "tool_use", "id": tool_use_id, "name": name,
                                                    "input": tool_input})
        # Questions and plans are for the person whatever the approval policy: they asked for them.
        if name == QUESTION_TOOL:
            self._answer_later(request.request_id, self._question(request.request_id, tool_input))
            return
        if name == AGENT_TOOL:
            foreground = {**tool_input, "run_in_background": False}
            await process.reply(stream.control_success(request.request_id, stream.allow(foreground)))
            return
        if name == PLAN_TOOL:
            path = tool_input.get("planFilePath")
            plan = {"plan": self._redact(str(tool_input.get("plan") or "")),
                    "path": path if isinstance(path, str) else None}
            self._answer_later(request.request_id, self._ask(request.request_id, ApprovalKind.PLAN, None, plan,
                                                             None, tool_input))
            return
        if name in FILE_TOOLS and self._is_plan_file(tool_input):
            # Plan mode's one write: the plan itself, which is then put to the person to approve.
            await process.reply(stream.control_success(request.request_id, stream.allow(tool_input)))
            return
        refusal = self._refusal(name, tool_input)
        if refusal is not None:
            await process.reply(stream.control_success(request.request_id, stream.deny(refusal)))
            return
        policy = self.ctx.policy.approval
        if policy is Approval.NEVER:
            await process.reply(stream.control_success(request.request_id, stream.allow(tool_input)))
            return
        assert item is not None  # _refusal refuses every tool that is not an item
        kind: ApprovalKind
        if name in COMMAND_TOOLS:
            kind, key = ApprovalKind.COMMAND, str(tool_input.get("command") or "")
            details: dict[str, Any] = {
                "command": self._redact(key), "cwd": str(self.ctx.workspace),
                "reason": self._redact(str(tool_input.get("description") or "")) or None,
            }
        elif name in FILE_TOOLS:
            kind, key = ApprovalKind.FILE_CHANGE, str(tool_input.get("file_path") or "")
            assert isinstance(item.started, FileChangeStarted)  # _describe_tool made it
            details = {"path": item.started.path, "paths": item.started.paths, "diff": item.started.diff,
                       "reason": None}
        else:
            kind, key = ApprovalKind.TOOL, tool_summary(name, tool_input)
            assert isinstance(item.started, ToolCallStarted)  # _describe_tool made it
            details = {"tool": item.started.tool, "server": item.started.server, "input": item.started.input,
                       "reason": None}
        # Approving one tool for the session does not approve another.
        memory_kind = f"tool:{name}" if kind is ApprovalKind.TOOL else kind.value
        if not self.memory.needs_approval(policy.value, memory_kind, key):  # type: ignore[arg-type]
            await process.reply(stream.control_success(request.request_id, stream.allow(tool_input)))
            return
        self._answer_later(request.request_id,
                           self._ask(request.request_id, kind, (memory_kind, key), details, item.id, tool_input))

    async def _on_elicitation(self, state: _Turn, request: stream.ControlRequest) -> None:
        """A form an MCP server asks the person to fill in: a question card; the answers go back typed."""
        asked = request.request
        schema = asked.get("requested_schema")
        form = form_questions(schema, str(asked.get("message") or "")) if asked.get("mode") != "url" else None
        if form is None or not isinstance(schema, dict):
            await self._reply(request.request_id, {"action": "decline"})
            await self._refused(state, "elicitation", asked, "tether puts only forms of text, number, yes/no and "
                                "choice fields to a person (not a link to open, or nested fields)")
            return
        self._answer_later(request.request_id, self._fill_form(request.request_id, self._redact.value(form), schema))

    async def _fill_form(self, request_id: str, questions: list[Question], schema: dict[str, Any]) -> None:
        reply = await fill_form(self.ctx, questions, schema)
        if reply is not None:
            await self._reply(request_id, reply)

    async def _refused(self, state: _Turn, name: str, asked: dict[str, Any], why: str) -> None:
        """Say on the session what Claude Code asked and was told no."""
        shown = summarize({k: v for k, v in asked.items() if k != "subtype"})
        await emit_notice(self.ctx, state.id, "warning", name,
                          self._redact(f"refused: Claude Code asked {name} ({shown}); {why}"))

    def _withdrawn(self, state: _Turn, request_id: str) -> None:
        """Claude Code stopped waiting for an answer in the middle of a turn (an MCP server withdrew
        its form, or the tool call's time ran out): stop asking people, and answer nothing. It
        comes in order, after its request, which Claude Code may withdraw at once. (After our
        interrupt it withdraws every question too; the host clears those itself as the turn ends.)"""
        task = self._approvals.get(request_id)
        if task is not None and state.interrupt_at is None:
            task.cancel()

    def _answer_later(self, request_id: str, asking: Coroutine[Any, Any, None]) -> None:
        """Ask people without holding up Claude Code's other messages; the task answers it."""
        task = asyncio.create_task(asking, name=f"tether-claude-approval-{request_id}")
        self._approvals[request_id] = task
        task.add_done_callback(lambda _t: self._approvals.pop(request_id, None))

    def _is_plan_file(self, tool_input: Mapping[str, Any]) -> bool:
        """Whether, in plan mode, a write is of a plan in Claude Code's own plans directory."""
        path = str(tool_input.get("file_path") or "")
        if self._mode != "plan" or self._plans is None or not os.path.isabs(path):
            return False
        target = Path(path).resolve()
        return target.parent == self._plans and target.suffix == ".md"

    def _refusal(self, name: str, tool_input: Mapping[str, Any]) -> str | None:
        """Why tether refuses a tool use without asking anyone, or None."""
        if name in COMMAND_TOOLS or name in WEB_TOOLS or mcp_name(name)[0] is not None:
            return None
        if name not in FILE_TOOLS:
            if self.ctx.policy.approval is Approval.NEVER:
                return None
            return (f"tether cannot show a person what {name} would do, so it is not allowed here "
                    "(Read, Glob and Grep work inside the workspace; Bash, Edit, Write, the web tools and MCP "
                    "tools are asked about).")
        sandbox = self.ctx.policy.sandbox
        if sandbox is Sandbox.READ_ONLY:
            return "This session's sandbox is read-only: files cannot be changed."
        if sandbox is Sandbox.WORKSPACE_WRITE and not inside(str(tool_input.get("file_path") or ""),
                                                              self.ctx.workspace):
            return f"This session may only change files inside the workspace {self.ctx.workspace}."
        return None

    async def _ask(
        self, request_id: str, kind: ApprovalKind, remember: tuple[str, str] | None, details: dict[str, Any],
        item: str | None, tool_input: dict[str, Any],
    ) -> None:
        """Put an approval to the people watching and answer Claude Code with their decision;
        ``remember`` is the (kind, key) "approve for the session" covers."""
        options = PLAN_OPTIONS if kind is ApprovalKind.PLAN else OPTIONS
        try:
            decision = await self.ctx.request_approval(kind, details, item=item, options=options)
        except asyncio.CancelledError:
            return  # the turn ended, or Claude Code withdrew the question: nothing to answer
        except Exception:
            log.exception("session %s: asking for approval failed; denying", self.ctx.session_id)
            decision = Decision.DENY
        if decision is Decision.APPROVE_FOR_SESSION and remember is not None:
            self.memory.remember(self.ctx.policy.approval.value, *remember)
        if decision is not Decision.DENY:
            answer = stream.allow(tool_input)
        elif kind is ApprovalKind.PLAN:
            answer = stream.deny(PLAN_DENIED)
        else:
            answer = stream.deny(DENIED_MESSAGE.format(what=DENIED_WHAT.get(kind, "use of a tool")))
        await self._reply(request_id, answer)

    async def _question(self, request_id: str, tool_input: dict[str, Any]) -> None:
        """AskUserQuestion: a question card; the first answer goes back as Claude Code's ``answers``."""
        questions = claude_questions(tool_input)
        if not questions:
            await self._reply(request_id, stream.deny("tether could not read these questions: ask in plain text."))
            return
        try:
            answers = await self.ctx.ask([{**q, "question": self._redact(q["question"])} for q in questions], item=None)
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("session %s: asking a question failed", self.ctx.session_id)
            await self._reply(request_id, stream.deny("The question could not be put to the person."))
            return
        given = {q["question"]: ", ".join(answers.get(q["id"], [])) for q in questions}
        await self._reply(request_id, stream.allow({**tool_input, "answers": given}))

    async def _reply(self, request_id: str, answer: dict[str, Any]) -> None:
        if self.process is None or not await self.process.reply(stream.control_success(request_id, answer)):
            log.info("session %s: claude went away before the answer to %s", self.ctx.session_id, request_id)

    # -- events from the process (on its reading task: quick) ------------------------------

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Exited):
            self._process_exited(event, self._exit_text(event))
        self._events.put_nowait(event)

    # -- helpers ---------------------------------------------------------------------------

    async def _start(self, started: ItemStarted) -> _Item:
        item = _Item(started)
        await self.ctx.emit(started)
        return item

    async def _delta(self, item: _Item, stream_name: DeltaStream, data: Any) -> None:
        if not isinstance(data, str) or not data:
            return
        await stream_delta(self.ctx, item, stream_name, data, self._redact)

    def _exit_text(self, exited: Exited) -> str:
        message = exited.message
        lines = [line.strip() for line in exited.stderr_tail
                 if line.strip() and not line.startswith("[claude-code:")]
        if lines:
            message += f"; its last output: {lines[-1][:300]}"
        return self._redact(message)

    def _died(self) -> AgentDied:
        exited = self._exited
        if exited is None and self.process is not None:
            exited = Exited(self.process.returncode, self.process.exit_message())
        assert exited is not None
        return AgentDied(self._exit_text(exited), hint="start a new session; the host's log has Claude Code's output")


# -- module functions: what Claude Code is started with ----------------------------------------


def claude_settings(policy: Policy, workspace: Path, hide: Sequence[Path] = ()) -> dict[str, Any]:
    """The ``--settings`` that carry tether's policy into Claude Code."""
    deny = [f"{tool}(/{path}/**)" for path in hide for tool in ("Read", "Edit", "Write")]
    permissions: dict[str, Any] = {"deny": deny, "defaultMode": "default"}
    # Agent always comes to tether, which runs it in the foreground whatever the model asked.
    permissions["ask"] = [*ASK_RULES, AGENT_TOOL] if policy.approval is not Approval.NEVER else [AGENT_TOOL]
    settings: dict[str, Any] = {"permissions": permissions}
    if policy.sandbox is not Sandbox.FULL_ACCESS:
        filesystem: dict[str, Any] = {"denyRead": [str(p) for p in hide]}
        if policy.sandbox is Sandbox.READ_ONLY:
            filesystem["denyWrite"] = [str(workspace)]
        settings["sandbox"] = {
            "enabled": True,
            "failIfUnavailable": True,  # never run a command unconfined because the sandbox broke
            "autoAllowBashIfSandboxed": False,  # tether's approval policy decides, not the sandbox
            "allowUnsandboxedCommands": False,  # no dangerouslyDisableSandbox escape for the model
            "filesystem": filesystem,
        }
    return settings


def claude_args(
    policy: Policy, workspace: Path, *, model: str | None = None, hide: Sequence[Path] = (),
    mcp_config: str | None = None,
) -> list[str]:
    """The command line of a session's Claude Code process (after the binary). MCP servers only
    from ``mcp_config`` (``[agents.claude] mcp_config``): each of their tools is asked about."""
    tools = [t for t in TOOLS if not (policy.sandbox is Sandbox.READ_ONLY and t in FILE_TOOLS)
             and not (t in WEB_TOOLS and not web_allowed(policy))]
    args = [
        "--print", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose",
        "--include-partial-messages",
        "--permission-prompt-tool", "stdio",  # permission questions come to us as control requests
        "--permission-mode", "default",  # not whatever the user's settings make the default
        "--tools", ",".join(tools),
        # Only the host user's own settings: project settings live in the workspace, and a
        # repository's .claude/settings.json could add hooks that run commands nobody approved.
        "--setting-sources", "user",
        "--strict-mcp-config",  # no MCP servers but those of [agents.claude] mcp_config
        "--disable-slash-commands",
        "--settings", json.dumps(claude_settings(policy, workspace, hide), separators=(",", ":")),
    ]
    if policy.sandbox is Sandbox.READ_ONLY:
        args += ["--disallowedTools", ",".join(sorted(FILE_TOOLS))]
    if model:
        args += ["--model", str(model)]
    if mcp_config:
        args += ["--mcp-config", os.path.expanduser(mcp_config)]
    return args


def plans_dir(env: Mapping[str, str]) -> Path:
    """Where Claude Code, started with ``env``, writes the plans of plan mode."""
    config_dir = env.get("CLAUDE_CONFIG_DIR") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".claude")
    return Path(config_dir, "plans").resolve()


def web_allowed(policy: Policy) -> bool:
    """Whether the web tools are offered: they reach the network from Claude Code's own process,
    so only when someone approves each use, or the session has the network anyway."""
    return policy.approval is not Approval.NEVER or policy.sandbox is Sandbox.FULL_ACCESS


def mcp_name(name: str) -> tuple[str | None, str]:
    """(server, tool) of an MCP tool's name ``mcp__SERVER__TOOL``; (None, name) for the others."""
    parts = name.split("__", 2)
    if len(parts) == 3 and parts[0] == "mcp" and parts[1] and parts[2]:
        return parts[1], parts[2]
    return None, name


def tool_summary(name: str, tool_input: Mapping[str, Any]) -> str:
    """A tool call's arguments as a person reads them: a fetch's URL and question, a search's
    query, else the arguments as JSON."""
    if name == "WebFetch":
        return "\n".join(str(tool_input[k]) for k in ("url", "prompt") if tool_input.get(k))
    if name == "WebSearch":
        return str(tool_input.get("query") or "")
    if name == AGENT_TOOL:
        return "\n".join(str(tool_input[k]) for k in ("description", "prompt") if tool_input.get(k))
    return json.dumps(tool_input, indent=1, ensure_ascii=False)[:MAX_TOOL_OUTPUT] if tool_input else ""


def claude_questions(tool_input: Mapping[str, Any]) -> list[Question]:
    """AskUserQuestion's questions as tether's (agents/base.py); Claude Code always lets the person
    answer in their own words. Empty when the input is not what the tool takes."""
    raw = tool_input.get("questions")
    if not isinstance(raw, list):
        return []
    questions: list[Question] = []
    for n, q in enumerate(raw, 1):
        if not isinstance(q, dict) or not isinstance(q.get("question"), str):
            return []
        options = [{"label": str(o["label"]), "description": str(o.get("description") or "")}
                   for o in q.get("options") or [] if isinstance(o, dict) and isinstance(o.get("label"), str)]
        questions.append({"id": f"q{n}", "header": str(q.get("header") or ""), "question": q["question"],
                          "options": options, "is_other": True, "is_secret": False,
                          "multi_select": bool(q.get("multiSelect"))})
    return questions


def _model(listed: dict[str, Any]) -> dict[str, Any]:
    """One entry of Claude Code's model list (its initialize answer) as tether offers it."""
    efforts = listed.get("supportedEffortLevels") if listed.get("supportsEffort") else []
    return {
        "id": listed["value"],
        "name": str(listed.get("displayName") or listed["value"]),
        "description": str(listed.get("description") or ""),
        "efforts": [e for e in efforts or [] if e in EFFORTS],
        "default_effort": None,
        "default": listed["value"] == "default",
    }


def claude_own_secrets(env: Mapping[str, str]) -> list[str]:
    """The secret variables Claude Code itself needs: its Anthropic credentials, and the cloud's
    when it is told to use Bedrock or Vertex."""
    prefixes = ["ANTHROPIC_", "CLAUDE_"]
    if env.get("CLAUDE_CODE_USE_BEDROCK"):
        prefixes.append("AWS_")
    if env.get("CLAUDE_CODE_USE_VERTEX"):
        prefixes += ["GOOGLE_", "CLOUD_ML_"]
    return [k for k in env if k.startswith(tuple(prefixes))]


def claude_env(config: AgentConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The host's environment without its secrets but Claude Code's own credentials, quietened,
    with ``[agents.claude] config_dir`` as ``CLAUDE_CONFIG_DIR`` when set.

    Claude Code passes its environment on to the commands it runs: they go through
    :func:`.shell.write_shell`, which removes the credentials kept here."""
    host = os.environ if base is None else base
    env = without_secrets(host, keep=claude_own_secrets(host))
    env.update(QUIET_ENV)
    env.pop("CLAUDECODE", None)  # a host started from inside Claude Code is not a nested session
    config_dir = config.options.get("config_dir")
    if config_dir:
        env["CLAUDE_CONFIG_DIR"] = os.path.expanduser(str(config_dir))
    return env


def check_sandbox(policy: Policy) -> None:
    """Fail before starting when Claude Code's sandbox cannot work here (it would refuse to start)."""
    if policy.sandbox is Sandbox.FULL_ACCESS or sys.platform != "linux":
        return
    missing = [tool for tool in ("bwrap", "socat") if shutil.which(tool) is None]
    if missing:
        raise ClaudeError(
            f"the {policy.sandbox.value} sandbox needs {' and '.join(missing)}, which this host lacks",
            hint="install bubblewrap and socat (apt install bubblewrap socat), or set "
            '[agents.claude] sandbox = "full-access"',
            code="sandbox_unavailable",
        )


def inside(path: str, workspace: Path) -> bool:
    """Whether ``path`` (absolute, or relative to the workspace) resolves into the workspace."""
    if not path:
        return False
    target = Path(path) if os.path.isabs(path) else workspace / path
    try:
        return target.resolve().is_relative_to(workspace.resolve())
    except (OSError, RuntimeError):
        return False


def file_diff(tool: str, tool_input: Mapping[str, Any], workspace: Path, hidden: Sequence[Path] = ()) -> str:
    """What an Edit or Write would change, as a unified diff.

    The current content is read only from files inside the workspace (and outside the hidden
    directories): the diff goes to every device watching, and must not carry a file the session
    could not read anyway.
    """
    path = str(tool_input.get("file_path") or "")
    before = _current(path, workspace, hidden)
    old = before if before is not None else ""
    if tool == "Write":
        new = str(tool_input.get("content") or "")
    else:
        old_string, new_string = str(tool_input.get("old_string") or ""), str(tool_input.get("new_string") or "")
        if before is None:
            old, new = old_string, new_string  # the file cannot be shown: show the replacement
        elif tool_input.get("replace_all"):
            new = old.replace(old_string, new_string)
        else:
            new = old.replace(old_string, new_string, 1)
    source = "/dev/null" if before is None and tool == "Write" else path
    lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True), source, path)
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _current(path: str, workspace: Path, hidden: Sequence[Path]) -> str | None:
    if not inside(path, workspace):
        return None
    target = (Path(path) if os.path.isabs(path) else workspace / path).resolve()
    if any(target.is_relative_to(h.resolve()) for h in hidden):
        return None
    try:
        if not target.is_file() or target.stat().st_size > MAX_DIFF_SOURCE_BYTES:
            return None
        return target.read_text(errors="replace")
    except OSError:
        return None


def command_outcome(result: stream.ToolResult) -> tuple[int | None, str]:
    """(exit code, output) of a Bash tool result: Claude Code reports a failure as
    ``Exit code N`` before the output, success as the output alone."""
    if result.rejected:
        return None, ""
    text = result.content
    if not result.is_error:
        return 0, text
    match = _EXIT_CODE.match(text)
    if match:
        return int(match.group(1)), text[match.end():]
    return None, text


__all__ = [
    "ClaudeAgent", "check_sandbox", "claude_args", "claude_env", "claude_settings", "command_outcome",
    "file_diff", "inside",
]
