"""The built-in agent as a tether adapter: the loop of :mod:`.loop`, reported as session events.

How the loop's hooks become items (shapes: :class:`tether.protocol.events.EventType`):

- streamed text → one ``agent_message`` item per stretch of text (``item.started``, an
  ``item.delta`` per chunk with ``stream: "text"``, ``item.completed`` with the whole text);
  streamed reasoning the same as a ``reasoning`` item;
- ``run_command`` → a ``command`` item {command, cwd}; its output as ``stream: "output"`` deltas;
  completed with {exit_code, output, status completed | failed | declined};
- ``write_file`` / ``edit_file`` → a ``file_change`` item {path, diff}, started once the diff is
  known (it is what the approval shows), completed with {path, diff, status};
- a tool call the model got wrong (unknown tool, arguments that are not JSON) → an ``error`` item;
  the model is told too, and the turn goes on;
- ``read_file`` / ``list_dir`` are not items: they change nothing and never ask;
- a turn the loop ends as failed (model server error, prompt too large, too many steps) raises
  :class:`BuiltinTurnFailed`, which the host records as a failed turn with an error item.

Secrets (:mod:`tether.agents.secrets`): commands run without the model's API key and without any
variable whose name says it holds a secret (the tool runner gets the host's environment without
them), and the values of those variables are redacted from everything the events and the model
receive, like the API key, even when split across streamed chunks.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from tether.agents.approvals import ApprovalKind, ApprovalMemory
from tether.agents.base import Agent, AgentContext, Decision, ItemKind
from tether.agents.builtin import resolve_endpoint
from tether.agents.builtin.llm import DEFAULT_TIMEOUT_SECONDS, ChatClient
from tether.agents.builtin.loop import (
    DEFAULT_MAX_STEPS,
    LoopConfig,
    run_turn,
)
from tether.agents.builtin.loop import Decision as LoopDecision
from tether.agents.builtin.tools import HIDDEN_ENV, ToolRunner, truncate_middle
from tether.agents.sandbox import Sandbox
from tether.agents.secrets import env_secrets, without_secrets
from tether.errors import TetherError
from tether.protocol.events import (
    AgentMessageStarted,
    CommandStarted,
    ErrorDone,
    EventData,
    FileChangeStarted,
    ItemDelta,
    ItemStatus,
    ReasoningStarted,
    completed,
)

log = logging.getLogger(__name__)

# What item.completed repeats of a command's output; the deltas carried all of it already.
MAX_COMPLETED_OUTPUT = 64 * 1024
# Consecutive deltas of one item waiting to be appended are merged up to this many characters:
# a model streaming a token per chunk must not cost one log transaction per token.
MAX_MERGED_DELTA = 64 * 1024
OPTIONS = [Decision.APPROVE, Decision.APPROVE_FOR_SESSION, Decision.DENY]


class BuiltinAgentError(TetherError):
    code = "builtin_agent"


class BuiltinTurnFailed(TetherError):
    code = "turn_failed"


class _Client(ChatClient):
    """A ChatClient whose redaction also covers the host's other secrets."""

    def __init__(self, *args: Any, extra_secrets: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._extra_secrets = tuple(extra_secrets)

    @property
    def secrets(self) -> tuple[str, ...]:
        own = super().secrets
        return own + tuple(s for s in self._extra_secrets if s not in own)


def system_prompt(workspace: str, sandbox: str) -> str:
    return (
        "You are tether's built-in coding agent. You work in the workspace "
        f"{workspace} on the user's machine; paths are relative to it and you cannot leave it. "
        "Use the tools to inspect and change files and to run commands; a person may have to "
        f"approve each command and file change. Commands run in a {sandbox} sandbox. "
        "If an action is denied, do not retry it: explain and ask. Be concise and say what you changed."
    )


class _Emitter:
    """Hands events to the log in order, from the loop's synchronous hooks.

    Events wait in a queue drained by one task at a time; consecutive deltas of one item are merged
    while they wait.
    """

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self._pending: list[EventData] = []
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None

    def put(self, event: EventData) -> None:
        last = self._pending[-1] if self._pending else None
        if (isinstance(event, ItemDelta) and isinstance(last, ItemDelta) and last.item == event.item
                and last.stream == event.stream and len(last.data) < MAX_MERGED_DELTA):
            last.data += event.data
            return
        self._pending.append(event)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain_quietly())

    async def _drain_quietly(self) -> None:
        try:
            await self.flush()
        except Exception as exc:  # e.g. the log closed under us; the next flush() reports it
            self._failed = exc

    async def flush(self) -> None:
        async with self._lock:
            if self._failed is not None:
                failed, self._failed = self._failed, None
                raise failed
            while self._pending:
                await self.ctx.emit(self._pending.pop(0))


class _TurnHooks:
    """The loop's hooks for one turn, turning its callbacks into items."""

    def __init__(self, agent: BuiltinAgent, turn: str) -> None:
        self.agent = agent
        self.ctx = agent.ctx
        self.turn = turn
        self.out = _Emitter(agent.ctx)
        self.cwd = str(agent.workspace)
        # The open stretch of text or reasoning: how it started, and its parts.
        self._stream: tuple[AgentMessageStarted | ReasoningStarted, list[str]] | None = None
        # call id -> {kind, started: its item.started (None until started), path, name}
        self._calls: dict[str, dict[str, Any]] = {}
        self.error: str | None = None

    # -- text and reasoning ---------------------------------------------------------------

    def _streamed(self, kind: type[AgentMessageStarted | ReasoningStarted], text: str) -> None:
        if self._stream is None or type(self._stream[0]) is not kind:
            self.close_stream()
            self._stream = (kind(turn=self.turn, item=self.ctx.new_id("i")), [])
            self.out.put(self._stream[0])
        started, parts = self._stream
        parts.append(text)
        self.out.put(ItemDelta(item=started.item, stream="text", data=text))

    def close_stream(self, status: ItemStatus = "completed") -> None:
        if self._stream is None:
            return
        started, parts = self._stream
        self._stream = None
        self.out.put(completed(started, status, text="".join(parts)))

    def on_text_delta(self, text: str) -> None:
        self._streamed(AgentMessageStarted, text)

    def on_reasoning_delta(self, text: str) -> None:
        self._streamed(ReasoningStarted, text)

    # -- tools ----------------------------------------------------------------------------

    def on_tool_started(self, call_id: str, name: str, args: dict[str, Any]) -> None:
        self.close_stream()
        if set(args) == {"raw"} or name not in ("run_command", "write_file", "edit_file"):
            # The loop reports arguments it could not parse as {"raw": ...}; reads are not items.
            kind = "invalid" if set(args) == {"raw"} else "read"
            self._calls[call_id] = {"kind": kind, "name": name, "started": None}
            return
        if name == "run_command":
            started = CommandStarted(turn=self.turn, item=self.ctx.new_id("i"), command=str(args.get("command", "")),
                                     cwd=self.cwd)
            self._calls[call_id] = {"kind": ItemKind.COMMAND, "started": started}
            self.out.put(started)
        else:
            # Started once the diff is known: at the approval, or when the change is done.
            self._calls[call_id] = {"kind": ItemKind.FILE_CHANGE, "started": None, "path": args.get("path", "")}

    def _start_file_change(self, call: dict[str, Any], path: str, diff: str) -> FileChangeStarted:
        started: FileChangeStarted | None = call["started"]
        if started is None:
            started = call["started"] = FileChangeStarted(turn=self.turn, item=self.ctx.new_id("i"), path=path,
                                                          diff=diff)
            self.out.put(started)
        return started

    def on_command_output(self, call_id: str, chunk: str) -> None:
        call = self._calls.get(call_id)
        if call is not None and call["started"] is not None:
            self.out.put(ItemDelta(item=call["started"].item, stream="output", data=chunk))

    def on_tool_finished(self, call_id: str, result: dict[str, Any]) -> None:
        call = self._calls.pop(call_id, None)
        if call is None or call["kind"] == "read":
            return
        status: ItemStatus = "completed" if result.get("ok") else "declined" if result.get("denied") else "failed"
        error = result.get("error")
        if call["kind"] == "invalid":
            self.out.put(ErrorDone(
                turn=self.turn, item=self.ctx.new_id("i"), status="failed",
                message=f"the model's {call['name']} call was refused: {error}; the model was told",
            ))
            return
        if call["kind"] == ItemKind.COMMAND:
            self.out.put(completed(call["started"], status, exit_code=result.get("exit_code"), error=error or None,
                                   output=truncate_middle(result.get("output") or "", MAX_COMPLETED_OUTPUT)))
        else:
            path = result.get("path") or call["path"]
            diff = result.get("diff") or ""
            self.out.put(completed(self._start_file_change(call, path, diff), status, path=path, diff=diff,
                                   error=error or None))

    async def request_approval(self, kind: ApprovalKind, details: dict[str, Any]) -> LoopDecision:
        self.close_stream()
        call = self._calls.get(str(details.get("call_id")))
        shown: dict[str, Any]
        if kind == "command":
            shown = {"command": details["command"], "cwd": details["cwd"], "sandbox": details.get("sandbox")}
            item = call["started"].item if call is not None else None
        else:
            shown = {"path": details["path"], "diff": details["diff"], "change": details.get("kind")}
            item = self._start_file_change(call, details["path"], details["diff"]).item if call is not None else None
        # The item must be in the log before the approval that points at it.
        await self.out.flush()
        decision = await self.ctx.request_approval(kind, shown, item=item, options=OPTIONS)
        return Decision(decision).value

    def on_error(self, message: str) -> None:
        self.close_stream()
        self.error = message

    def interrupted(self) -> None:
        """Close what is still open when the turn is cancelled."""
        self.close_stream("failed")
        for call_id in list(self._calls):
            self.on_tool_finished(call_id, {"ok": False, "error": "interrupted by the user"})


class BuiltinAgent(Agent):
    """A coding agent against any OpenAI-compatible Chat Completions endpoint."""

    name = "builtin"

    def __init__(self, ctx: AgentContext) -> None:
        super().__init__(ctx)
        self.client: ChatClient | None = None
        self.tools: ToolRunner | None = None
        self.messages: list[dict[str, Any]] = []
        self.memory = ApprovalMemory()
        self.loop_config = LoopConfig()
        self.workspace = ctx.workspace

    async def open(self) -> None:
        options = self.ctx.config.options
        env = dict(os.environ)
        key_env = options.get("api_key_env")
        api_key = self.ctx.config.secret("api_key")
        if not api_key and key_env:
            api_key = env.get(str(key_env))
            if not api_key:
                raise BuiltinAgentError(
                    f"the builtin agent's API key should be in ${key_env}, which is not set in the host's environment",
                    hint="set it before starting the host, or change api_key_env/api_key in [agents.builtin]"
                         " of config.toml",
                    code="agent_config",
                )
        configured_url = options.get("base_url") or env.get("OPENAI_BASE_URL")
        if not configured_url and not (api_key or env.get("OPENAI_API_KEY")):
            raise BuiltinAgentError(
                "the builtin agent has no model server: no base_url in [agents.builtin] and no OPENAI_BASE_URL",
                hint="add base_url (e.g. http://127.0.0.1:11434/v1 for Ollama) and model to [agents.builtin] in"
                     " the host's config.toml, or set OPENAI_API_KEY for api.openai.com; then restart the host",
                code="agent_config",
            )
        base_url, key = resolve_endpoint(str(configured_url) if configured_url else None, api_key, env)
        model = options.get("model")
        if not model:
            raise BuiltinAgentError(
                "the builtin agent has no model: set model in [agents.builtin] of the host's config.toml",
                hint='e.g. model = "qwen2.5-coder" (Ollama) or "gpt-4.1" (OpenAI); then restart the host',
                code="agent_config",
            )
        # The tether home holds the host's private keys and the owner's socket: sandboxed commands
        # and the file tools never see it.
        sandbox = Sandbox(self.ctx.policy.sandbox.value, self.ctx.workspace, hide=self.ctx.hidden)
        # Refuses (SandboxUnavailable) when bubblewrap cannot enforce a sandboxed mode here.
        await sandbox.prepare()
        self.workspace = sandbox.workspace
        hidden = {*HIDDEN_ENV, *([str(key_env)] if key_env else [])}
        self.tools = ToolRunner(sandbox, env=without_secrets(env), hidden_env=hidden, secrets=[key] if key else [])
        others = [s for s in env_secrets({k: v for k, v in env.items() if k not in hidden}) if s != key]
        self.client = _Client(
            base_url, key, str(model), float(options.get("timeout") or DEFAULT_TIMEOUT_SECONDS),
            extra_secrets=others,
        )
        self.loop_config = LoopConfig(
            policy=self.ctx.policy.approval.value,
            max_steps=int(options.get("max_steps") or DEFAULT_MAX_STEPS),
        )
        self.messages = [{"role": "system", "content": system_prompt(str(self.workspace), sandbox.mode)}]
        if self.ctx.resumed is not None:  # after a host restart: the conversation, from the log
            for exchange in self.ctx.resumed.transcript:
                self.messages += [{"role": "user", "content": exchange.prompt},
                                  {"role": "assistant", "content": exchange.reply or "(no answer)"}]
        log.info("session %s: builtin agent with model %r at %r", self.ctx.session_id, model, self.client)

    async def run_turn(self, turn: str, text: str) -> None:
        if self.client is None or self.tools is None:
            raise BuiltinAgentError("the builtin agent was not opened", code="agent_state")
        hooks = _TurnHooks(self, turn)
        self.messages.append({"role": "user", "content": text})
        try:
            result = await run_turn(
                self.client, self.messages, self.tools, hooks, memory=self.memory, config=self.loop_config
            )
        except asyncio.CancelledError:
            hooks.interrupted()
            try:
                await asyncio.shield(hooks.out.flush())
            except Exception:  # the log closed: the host is going away
                log.debug("session %s: events of an interrupted turn lost", self.ctx.session_id)
            raise
        hooks.close_stream()
        await hooks.out.flush()
        if result.status != "completed":
            raise BuiltinTurnFailed(result.error or hooks.error or f"the turn ended as {result.status}")

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
