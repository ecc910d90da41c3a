"""The built-in agent's loop: ask the model, run the tools it calls, ask again.

Independent of tether's event log: the adapter passes a :class:`Hooks` object and turns each
callback into events (agent message deltas, command executions with output, file changes with
diffs, approval requests, errors).

One turn: stream the model's answer → if it called tools, run each (asking for approval as the
policy says), append the results to the conversation, and call the model again → stop when the
model answers without tool calls, or after ``max_steps`` model calls.

Approval rules (``policy`` from the host's config; reading files and listing directories inside
the workspace never asks):

- ``untrusted``: every command and every file change asks. "approve for session" remembers only
  that exact command line, or that exact file.
- ``on-request``: every command and every file change asks, until one of that kind is approved
  for the session: from then on commands (or file changes) of that kind run without asking.
- ``never``: nothing asks; the sandbox is the only limit.

Whatever the approval, the sandbox applies: a file change in ``read-only`` is refused even when
approved (it is refused before anyone is asked), and commands run inside bubblewrap.

Failures never escape as exceptions: a model server error ends the turn as ``failed`` with
``on_error``; a bad tool call (unknown tool, invalid JSON, a path outside the workspace) becomes a
tool error the model is told about and the hooks see, and the loop goes on. Cancelling the task
that runs :func:`run_turn` closes the HTTP stream, kills a running command, reports the open tool
call as interrupted and leaves the conversation consistent for the next turn.

Secrets (the API key) are redacted from everything handed to the hooks and from tool results
sent back to the model, even when split across streamed chunks.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from tether.agents.approvals import ApprovalKind, ApprovalMemory, ApprovalPolicy
from tether.agents.builtin.llm import Accumulator, ChatClient, LLMError, ToolCall
from tether.agents.builtin.tools import (
    FILE_CHANGE_TOOLS,
    TOOL_SPECS,
    ToolError,
    ToolResult,
    ToolRunner,
    parse_arguments,
    truncate_middle,
)
from tether.agents.sandbox import SandboxError
from tether.agents.secrets import Redactor, StreamRedactor

Decision = Literal["approve", "approve_for_session", "deny"]
TurnStatus = Literal["completed", "failed", "max_steps"]

DEFAULT_MAX_STEPS = 50
# A prompt this large is a paste accident or an attack, not a question: at ~4 bytes a token it
# overflows most models' context, and sending it would cost money for a certain error.
DEFAULT_MAX_PROMPT_BYTES = 256 * 1024
MAX_RAW_ARGS_SHOWN = 2000


class Hooks(Protocol):
    """What the adapter implements to see and steer a turn.

    ``on_reasoning_delta`` is optional: the loop calls it only if the object has it.
    """

    def on_text_delta(self, text: str) -> None: ...

    async def request_approval(self, kind: ApprovalKind, details: dict[str, Any]) -> Decision: ...

    def on_tool_started(self, call_id: str, name: str, args: dict[str, Any]) -> None: ...

    def on_command_output(self, call_id: str, chunk: str) -> None: ...

    def on_tool_finished(self, call_id: str, result: dict[str, Any]) -> None: ...

    def on_error(self, message: str) -> None: ...


@dataclass
class LoopConfig:
    policy: ApprovalPolicy = "on-request"
    max_steps: int = DEFAULT_MAX_STEPS
    max_prompt_bytes: int = DEFAULT_MAX_PROMPT_BYTES


@dataclass
class TurnResult:
    status: TurnStatus
    text: str = ""
    steps: int = 0
    error: str | None = None


def _prompt_bytes(messages: list[dict[str, Any]]) -> int:
    """Size of the trailing user messages: what this turn adds to the conversation."""
    total = 0
    for msg in reversed(messages):
        if msg.get("role") != "user":
            break
        total += len(json.dumps(msg.get("content"), ensure_ascii=False).encode())
    return total


def _drop_trailing_user(messages: list[dict[str, Any]]) -> None:
    while messages and messages[-1].get("role") == "user":
        messages.pop()


class _Turn:
    def __init__(
        self, client: ChatClient, messages: list[dict[str, Any]], tools: ToolRunner, hooks: Hooks,
        memory: ApprovalMemory, config: LoopConfig,
    ) -> None:
        self.client = client
        self.messages = messages
        self.tools = tools
        self.hooks = hooks
        self.memory = memory
        self.config = config
        self.redact = Redactor(client.secrets)
        self.unanswered: list[ToolCall] = []
        self.running: str | None = None

    def error(self, message: str) -> TurnResult:
        message = self.redact(message)
        self.hooks.on_error(message)
        return TurnResult(status="failed", error=message)

    async def run(self) -> TurnResult:
        size = _prompt_bytes(self.messages)
        if size > self.config.max_prompt_bytes:
            _drop_trailing_user(self.messages)
            result = self.error(
                f"the prompt is {size} bytes, over the limit of {self.config.max_prompt_bytes} bytes; it was not sent"
                " (attach large content as a file in the workspace and ask the agent to read it)"
            )
            return result
        try:
            return await self._steps()
        except asyncio.CancelledError:
            self._interrupted()
            raise

    async def _steps(self) -> TurnResult:
        text = ""
        for step in range(1, self.config.max_steps + 1):
            acc = Accumulator()
            text_out = self.redact.stream()
            reasoning_out = self.redact.stream()
            on_reasoning = getattr(self.hooks, "on_reasoning_delta", None)
            try:
                async for delta in self.client.stream(self.messages, TOOL_SPECS):
                    acc.feed(delta)
                    if delta.content and (piece := text_out.feed(delta.content)):
                        self.hooks.on_text_delta(piece)
                    if delta.reasoning and on_reasoning is not None and (piece := reasoning_out.feed(delta.reasoning)):
                        on_reasoning(piece)
            except LLMError as exc:
                self._flush(text_out, reasoning_out)
                return TurnResult(status="failed", steps=step, error=self.error(str(exc)).error)
            except asyncio.CancelledError:
                self._flush(text_out, reasoning_out)
                raise
            self._flush(text_out, reasoning_out)
            text = acc.text
            calls = acc.tool_calls
            # The conversation may be stored by the adapter, so it is redacted too.
            assistant: dict[str, Any] = {"role": "assistant", "content": self.redact(text) or None}
            if calls:
                assistant["tool_calls"] = [
                    {"id": c.id, "type": "function",
                     "function": {"name": c.name, "arguments": self.redact(c.arguments)}}
                    for c in calls
                ]
            elif not text:
                assistant["content"] = ""
            self.messages.append(assistant)
            if not calls:
                return TurnResult(status="completed", text=self.redact(text), steps=step)
            self.unanswered = list(calls)
            while self.unanswered:
                call = self.unanswered[0]
                result = await self._execute(call)
                self.messages.append(
                    {"role": "tool", "tool_call_id": call.id, "content": self.redact(result.for_model())}
                )
                self.unanswered.pop(0)
        message = (
            f"stopped after {self.config.max_steps} model calls in one turn without a final answer; "
            "send another prompt to continue"
        )
        self.hooks.on_error(message)
        return TurnResult(status="max_steps", text=self.redact(text), steps=self.config.max_steps, error=message)

    def _flush(self, text_out: StreamRedactor, reasoning_out: StreamRedactor) -> None:
        """Show what the redactors held back, however the model's stream ended."""
        if rest := text_out.flush():
            self.hooks.on_text_delta(rest)
        on_reasoning = getattr(self.hooks, "on_reasoning_delta", None)
        if on_reasoning is not None and (rest := reasoning_out.flush()):
            on_reasoning(rest)

    def _interrupted(self) -> None:
        # The conversation must stay valid for the next turn: every tool call gets an answer.
        for call in self.unanswered:
            if call.id == self.running:
                self.hooks.on_tool_finished(
                    call.id, ToolResult(ok=False, error="interrupted by the user").as_dict()
                )
            self.messages.append(
                {"role": "tool", "tool_call_id": call.id, "content": "Interrupted by the user before it finished."}
            )
        self.unanswered = []
        self.running = None

    def _finish(self, call_id: str, result: ToolResult) -> ToolResult:
        self.running = None
        self.hooks.on_tool_finished(call_id, self.redact.value(result.as_dict()))
        return result

    async def _execute(self, call: ToolCall) -> ToolResult:
        self.running = call.id
        try:
            args = parse_arguments(call.name, call.arguments)
        except ToolError as exc:
            self.hooks.on_tool_started(
                call.id, call.name or "?", {"raw": self.redact(truncate_middle(call.arguments, MAX_RAW_ARGS_SHOWN))}
            )
            return self._finish(call.id, ToolResult(ok=False, error=self.redact(exc.message)))
        self.hooks.on_tool_started(call.id, call.name, self.redact.value(args))
        try:
            if call.name == "run_command":
                result = await self._command(call, args["command"])
            elif call.name in FILE_CHANGE_TOOLS:
                result = await self._file_change(call, args)
            elif call.name == "read_file":
                result = await self.tools.read_file(args["path"])
            else:
                result = await self.tools.list_dir(args["path"])
        except ToolError as exc:
            result = ToolResult(ok=False, error=exc.message)
        return self._finish(call.id, result)

    async def _approve(self, kind: ApprovalKind, key: str, details: dict[str, Any]) -> bool:
        policy = self.config.policy
        if not self.memory.needs_approval(policy, kind, key):
            return True
        decision = await self.hooks.request_approval(kind, self.redact.value(details))
        if decision == "approve_for_session":
            self.memory.remember(policy, kind, key)
            return True
        # Anything but a clear yes is a no.
        return decision == "approve"

    async def _command(self, call: ToolCall, command: str) -> ToolResult:
        sandbox = self.tools.sandbox
        try:
            # Refuse before asking: approving a command that cannot run would be a lie.
            await sandbox.prepare()
        except SandboxError as exc:
            raise ToolError(str(exc)) from None
        details = {"call_id": call.id, "command": command, "cwd": str(self.tools.workspace), "sandbox": sandbox.mode}
        if not await self._approve("command", command, details):
            return ToolResult(ok=False, denied=True, error="the user denied this command")
        out = self.redact.stream()

        def sink(chunk: str) -> None:
            if piece := out.feed(chunk):
                self.hooks.on_command_output(call.id, piece)

        try:
            result = await self.tools.run_command(command, on_output=sink)
        finally:
            if rest := out.flush():
                self.hooks.on_command_output(call.id, rest)
        result.output = self.redact(result.output)
        return result

    async def _file_change(self, call: ToolCall, args: dict[str, str]) -> ToolResult:
        change = await self.tools.prepare_change(call.name, args)
        details = {"call_id": call.id, "path": change.display, "kind": change.kind, "diff": change.diff}
        if not await self._approve("file_change", change.display, details):
            return ToolResult(ok=False, denied=True, error="the user denied this file change", path=change.display,
                              diff=change.diff)
        return await self.tools.apply_change(change)


async def run_turn(
    client: ChatClient,
    messages: list[dict[str, Any]],
    tools: ToolRunner,
    hooks: Hooks,
    *,
    memory: ApprovalMemory | None = None,
    config: LoopConfig | None = None,
) -> TurnResult:
    """Run one turn of the conversation ``messages`` (which ends with the user's prompt).

    ``messages`` is the session's conversation in Chat Completions form and is extended in place
    with the assistant's messages and the tool results, ready for the next turn. A prompt over
    ``config.max_prompt_bytes`` is removed from it, reported with ``on_error`` and never sent.
    Returns how the turn ended; raises only :class:`asyncio.CancelledError` (interrupt).
    """
    turn = _Turn(client, messages, tools, hooks, memory or ApprovalMemory(), config or LoopConfig())
    return await turn.run()
