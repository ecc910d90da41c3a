"""Claude Code's stream-json protocol, as plain objects: bytes in, typed messages out (sans I/O).

``claude --print --input-format stream-json --output-format stream-json --verbose`` reads and
writes one JSON object per line (observed with Claude Code 2.1.332, tests/agents/claude/):

Claude Code → us (stdout)

- ``{"type": "system", "subtype": "init" | "status" | …}`` — session facts (cwd, tools, model).
- ``{"type": "stream_event", "event": {…}}`` — with ``--include-partial-messages``, the raw
  Messages-API streaming events (``content_block_start`` / ``content_block_delta`` with
  ``text_delta`` or ``thinking_delta`` / ``content_block_stop`` …) as the model produces them.
- ``{"type": "assistant", "message": {"content": [block]}}`` — one finished content block of
  the model's reply (text, thinking, or ``tool_use`` with the tool's complete input).
- ``{"type": "user", "message": {"content": [{"type": "tool_result", …}]}, "tool_use_result"}``
  — what a tool returned (or why it did not run), as the model will see it.
- ``{"type": "result", "subtype": "success" | "error_…", "is_error", "result", "errors"}`` — the
  turn is over.
- ``{"type": "control_request", "request_id", "request": {"subtype": "can_use_tool",
  "tool_name", "input", "tool_use_id", …}}`` — a permission question (we started Claude Code
  with ``--permission-prompt-tool stdio``); it waits for our ``control_response``.
- ``{"type": "control_cancel_request", "request_id"}`` — it stopped waiting for that answer: an
  MCP tool call whose form was waiting ran out of time or its server withdrew the form; and, as it
  stops for an ``interrupt``, every question still waiting (written before the interrupt's answer).
- ``{"type": "control_response", "response": {"subtype": "success" | "error", "request_id",
  "response" | "error"}}`` — the answer to one of *our* control requests.

us → Claude Code (stdin)

- ``{"type": "user", "message": {"role": "user", "content": "…"}}`` — a prompt (one turn).
- ``{"type": "control_request", "request_id", "request": {"subtype": "initialize" | "interrupt"}}``.
- ``{"type": "control_response", "response": {"subtype": "success", "request_id", "response":
  {"behavior": "allow", "updatedInput": {…}} | {"behavior": "deny", "message": "…"}}}``.

:class:`LineDecoder` turns bytes into these messages; every malformed line is a
:class:`StreamError` that says what was wrong with it, never another exception.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tether.agents.base import Image
from tether.errors import TetherError

# One line is one message; a tool_result with a big file or command output can be large.
MAX_LINE_BYTES = 16 * 1024 * 1024


class StreamError(TetherError):
    """A line Claude Code wrote that is not a stream-json message tether understands."""

    code = "claude_stream"


# -- messages from Claude Code -----------------------------------------------------------------


@dataclass(frozen=True)
class System:
    subtype: str
    data: dict[str, Any]


@dataclass(frozen=True)
class StreamEvent:
    """A raw Messages-API streaming event (``content_block_delta`` …)."""

    event: dict[str, Any]
    parent: str | None = None  # a sub-agent's: the tool_use_id of the Agent call it works for

    @property
    def kind(self) -> str:
        return str(self.event.get("type", ""))


@dataclass(frozen=True)
class Assistant:
    message_id: str | None
    content: tuple[dict[str, Any], ...]
    parent: str | None = None  # a sub-agent's: the tool_use_id of the Agent call it works for


@dataclass(frozen=True)
class ToolResult:
    tool_use_id: str
    content: str  # what the model sees, flattened to text
    is_error: bool
    detail: Any = None  # Claude Code's structured ``tool_use_result`` (stdout/stderr, patch…)
    rejected: bool = False  # the tool did not run: a permission was refused


@dataclass(frozen=True)
class User:
    """Tool results (and Claude Code's own notes, e.g. "[Request interrupted by user]")."""

    results: tuple[ToolResult, ...]
    texts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Result:
    subtype: str
    is_error: bool
    result: str | None
    errors: tuple[str, ...] = ()
    tokens: int | None = None  # this turn's, every kind counted (input, output, cache)
    cost_usd: float | None = None  # the session's so far, as Claude Code prices it

    @property
    def message(self) -> str:
        """What went wrong, in Claude Code's words."""
        parts = [e for e in self.errors if e] or ([self.result] if self.result else [])
        return "; ".join(parts) if parts else f"the turn ended with {self.subtype}"


@dataclass(frozen=True)
class ControlRequest:
    request_id: str
    subtype: str
    request: dict[str, Any]


@dataclass(frozen=True)
class ControlCancel:
    request_id: str


@dataclass(frozen=True)
class ControlResponse:
    request_id: str
    ok: bool
    response: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Other:
    """A message type this tether does not use (newer Claude Codes add some); ignored."""

    type: str
    data: dict[str, Any]


Message = System | StreamEvent | Assistant | User | Result | ControlRequest | ControlCancel | ControlResponse | Other


def parse_line(line: bytes | str) -> Message:
    """One line of Claude Code's output as a message; :class:`StreamError` if it is not one."""
    try:
        text = line.decode("utf-8", errors="strict") if isinstance(line, bytes) else line
    except UnicodeDecodeError:
        raise StreamError("a stream-json line is not UTF-8") from None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise StreamError(f"a stream-json line is not JSON ({_short(exc)}): {_snippet(text)}") from None
    return parse_message(obj)


def parse_message(obj: Any) -> Message:
    """A decoded JSON value as a message; :class:`StreamError` if it is not a valid one."""
    if not isinstance(obj, dict):
        raise StreamError(f"a stream-json message must be a JSON object, not {type(obj).__name__}")
    kind = obj.get("type")
    if not isinstance(kind, str) or not kind:
        raise StreamError("a stream-json message has no \"type\"")
    if kind == "system":
        return System(_str(obj, "subtype", kind, default=""), obj)
    parent = obj.get("parent_tool_use_id")
    parent = parent if isinstance(parent, str) else None
    if kind == "stream_event":
        return StreamEvent(_dict(obj, "event", kind), parent)
    if kind == "assistant":
        message = _dict(obj, "message", kind)
        content = _blocks(message.get("content"), kind)
        message_id = message.get("id")
        return Assistant(message_id if isinstance(message_id, str) else None, content, parent)
    if kind == "user":
        return _user(obj)
    if kind == "result":
        errors = obj.get("errors")
        result = obj.get("result")
        usage = obj.get("usage")
        counts = [v for v in usage.values() if isinstance(v, int) and not isinstance(v, bool)] \
            if isinstance(usage, dict) else []
        cost = obj.get("total_cost_usd")
        return Result(
            _str(obj, "subtype", kind), bool(obj.get("is_error")),
            result if isinstance(result, str) else None,
            tuple(str(e) for e in errors) if isinstance(errors, list) else (),
            tokens=sum(counts) if counts else None,
            cost_usd=float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None,
        )
    if kind == "control_request":
        request = _dict(obj, "request", kind)
        return ControlRequest(_str(obj, "request_id", kind), _str(request, "subtype", "control_request.request"),
                              request)
    if kind == "control_cancel_request":
        return ControlCancel(_str(obj, "request_id", kind))
    if kind == "control_response":
        response = _dict(obj, "response", kind)
        request_id = _str(response, "request_id", "control_response.response")
        subtype = _str(response, "subtype", "control_response.response")
        if subtype == "success":
            inner = response.get("response")
            return ControlResponse(request_id, True, inner if isinstance(inner, dict) else {})
        error = response.get("error")
        return ControlResponse(request_id, False, error=str(error) if error is not None else subtype)
    return Other(kind, obj)


def _user(obj: dict[str, Any]) -> User:
    message = _dict(obj, "message", "user")
    content = message.get("content")
    if isinstance(content, str):
        return User((), (content,))
    blocks = _blocks(content, "user")
    meta = obj.get("tool_result_meta")
    rejected_ids = set()
    if isinstance(meta, list):
        for entry in meta:
            if not isinstance(entry, dict):
                continue
            decision = entry.get("permission_decision")
            if entry.get("non_execution_kind") or (isinstance(decision, dict) and decision.get("decision") == "reject"):
                rejected_ids.add(entry.get("id"))
    results: list[ToolResult] = []
    texts: list[str] = []
    for block in blocks:
        if block.get("type") == "tool_result":
            tool_use_id = block.get("tool_use_id")
            if not isinstance(tool_use_id, str):
                raise StreamError("a tool_result has no tool_use_id")
            results.append(ToolResult(
                tool_use_id, flatten(block.get("content")), bool(block.get("is_error")),
                obj.get("tool_use_result"), tool_use_id in rejected_ids,
            ))
        elif block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
    return User(tuple(results), tuple(texts))


def flatten(content: Any) -> str:
    """A tool_result's content (a string, or a list of text/image blocks) as text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", "")) if isinstance(part, dict) and part.get("type") == "text" else ""
            for part in content
        )
    return str(content)


def _blocks(value: Any, where: str) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list):
        raise StreamError(f"a {where} message's content is not a list of blocks")
    blocks = tuple(b for b in value if isinstance(b, dict))
    if len(blocks) != len(value):
        raise StreamError(f"a {where} message's content holds something that is not a block")
    return blocks


def _dict(obj: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise StreamError(f"a {where} message has no {key!r} object")
    return value


def _str(obj: dict[str, Any], key: str, where: str, *, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise StreamError(f"a {where} message has no {key!r} string")
    return value


def _snippet(text: str) -> str:
    return repr(text[:80]) + ("…" if len(text) > 80 else "")


def _short(exc: BaseException) -> str:
    return str(exc).split("\n", 1)[0][:120] or type(exc).__name__


# -- the line decoder --------------------------------------------------------------------------


class LineDecoder:
    """Bytes from Claude Code's stdout in, messages out.

    ``feed`` returns the messages of every complete line and keeps a partial one for the next
    call. A bad line comes back as a :class:`StreamError` *in the list*, in its place, so one
    garbled line never hides the good ones after it; a line longer than ``max_line`` is one error
    (its bytes are skipped up to the next newline).
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self._skipping = False  # inside a line that was too long

    def feed(self, data: bytes) -> list[Message | StreamError]:
        out: list[Message | StreamError] = []
        self._buffer += data
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                if len(self._buffer) > self.max_line:
                    if not self._skipping:
                        out.append(StreamError(f"a stream-json line is longer than {self.max_line} bytes"))
                    self._skipping = True
                    self._buffer.clear()
                return out
            line = bytes(self._buffer[:newline])
            del self._buffer[: newline + 1]
            if self._skipping:
                self._skipping = False
                continue
            if len(line) > self.max_line:
                out.append(StreamError(f"a stream-json line is longer than {self.max_line} bytes"))
                continue
            if not line.strip():
                continue
            try:
                out.append(parse_line(line))
            except StreamError as exc:
                out.append(exc)

    def end(self) -> list[Message | StreamError]:
        """The stream ended: a last line without a newline is still a message."""
        rest, skipping = bytes(self._buffer), self._skipping
        self._buffer.clear()
        self._skipping = False
        if skipping or not rest.strip():
            return []
        return self.feed(rest + b"\n")


# -- messages to Claude Code -------------------------------------------------------------------


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def user_message(text: str, images: Sequence[Image] = ()) -> dict[str, Any]:
    """A prompt; images go before the text, as Messages-API image blocks."""
    content: str | list[dict[str, Any]] = text
    if images:
        content = [*({"type": "image", "source": {"type": "base64", "media_type": i.mime,
                                                  "data": base64.b64encode(i.data).decode()}} for i in images),
                   {"type": "text", "text": text}]
    return {"type": "user", "message": {"role": "user", "content": content}, "parent_tool_use_id": None,
            "session_id": ""}


def control_request(request_id: str, subtype: str, **fields: Any) -> dict[str, Any]:
    return {"type": "control_request", "request_id": request_id, "request": {"subtype": subtype, **fields}}


def allow(tool_input: dict[str, Any]) -> dict[str, Any]:
    """A ``can_use_tool`` answer that lets the tool run with the input that was shown."""
    return {"behavior": "allow", "updatedInput": tool_input}


def deny(message: str) -> dict[str, Any]:
    """A ``can_use_tool`` answer that refuses; the model is told ``message``."""
    return {"behavior": "deny", "message": message}


def control_success(request_id: str, response: dict[str, Any]) -> dict[str, Any]:
    return {"type": "control_response",
            "response": {"subtype": "success", "request_id": request_id, "response": response}}


def control_error(request_id: str, error: str) -> dict[str, Any]:
    return {"type": "control_response", "response": {"subtype": "error", "request_id": request_id, "error": error}}
