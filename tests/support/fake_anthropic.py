"""A scripted Anthropic Messages API server, so tests can drive the real Claude Code CLI offline.

Claude Code (``ANTHROPIC_BASE_URL`` pointing here, any ``ANTHROPIC_API_KEY``) sends
``POST /v1/messages`` with ``"stream": true`` and reads server-sent events. The requests of the
agent loop itself — those that offer the model tools — are answered with the next *turn* of the
script, and recorded in :attr:`FakeAnthropic.requests`, so tests can assert on what the model was
shown (a command's output, a refusal). Every other model request (Claude Code's side calls: a
session title, a quota probe) gets a short text and is recorded in :attr:`FakeAnthropic.side_requests`.

A script is a list of turns; each turn is one model reply, a dict with any of::

    {"thinking": "Let me see",                   # a thinking block first (streamed, signed)
     "text": "Hello there" | ["Hel", "lo"],      # assistant text, streamed as these deltas
     "bash": {"command": "echo hi", "description": "why"},     # a Bash tool call
     "write": {"file_path": "/abs/path", "content": "..."},    # a Write tool call
     "edit": {"file_path": "/abs/path", "old_string": "a", "new_string": "b"},  # an Edit call
     "tool": {"name": "Read", "input": {...}},   # any other tool call
     "plan_file": "# Plan ...",                  # plan mode: a Write of this plan to the plan file
                                                 # Claude Code named in the request
     "delay": 0.5,                               # seconds to wait before answering
     "hang": true}                               # stream a ping now and then, never finish

A turn with a tool call ends with ``stop_reason: "tool_use"`` (Claude Code runs the tool and asks
again with its result); one without ends the model's turn (``"end_turn"``). When the script has
run out, every further request gets a short text reply ("(end of script)").

The SSE events and their order are the Messages streaming format: ``message_start``, per content
block ``content_block_start`` → deltas (``text_delta`` / ``input_json_delta``) →
``content_block_stop``, then ``message_delta`` with the stop reason and ``message_stop``.

**Nothing may leave loopback.** Tests also point ``HTTPS_PROXY``/``HTTP_PROXY`` here (with
``NO_PROXY`` for 127.0.0.1), so a request Claude Code tries to make anywhere else arrives as a
proxy request: it is refused and recorded in :attr:`FakeAnthropic.escaped`, which tests assert
is empty.

Run in-process (``FakeAnthropic``) or as a process::

    python -m tests.support.fake_anthropic --script turns.json [--log requests.jsonl]

which prints ``PORT <n>`` on stdout once it listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support import scripted_model
from tests.support.scripted_model import ScriptedModel, Turn, send_json, sse

log = logging.getLogger("tether.tests.fake_anthropic")

SIDE_REPLY = "ok"
MODEL = "claude-fake-model"
HANG_PING_SECONDS = 0.5
# Plan mode's system prompt names the one file the model may write: its plan.
PLAN_FILE = re.compile(r'/[^"\s\\]*/plans/[A-Za-z0-9_-]+\.md')


class FakeAnthropic(ScriptedModel):
    """The server. ``requests`` holds every agent-loop request body received, in order."""

    def __init__(self, script: Sequence[Turn] = (), *, log_path: Path | None = None) -> None:
        super().__init__(script, log_path=log_path)
        self.side_requests: list[dict[str, Any]] = []
        self.escaped: list[str] = []  # proxy requests: traffic meant for somewhere else
        self.headers: list[dict[str, str]] = []

    @property
    def base_url(self) -> str:
        """What ``ANTHROPIC_BASE_URL`` is set to (Claude Code appends ``/v1/messages``)."""
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment that points Claude Code here and keeps everything else on loopback."""
        return claude_env_for(self.port)

    # -- HTTP --------------------------------------------------------------------------------

    async def _route(
        self, method: str, path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter,
    ) -> bool:
        if method == "CONNECT" or not path.startswith("/"):
            # A proxy request: Claude Code tried to reach a host that is not this server.
            self.escaped.append(f"{method} {path}")
            log.warning("refused traffic leaving loopback: %s %s", method, path)
            await send_json(writer, 403, {"error": {"message": "tests allow no traffic off loopback"}})
            return False
        self.paths.append(f"{method} {path}")
        route = path.split("?")[0]
        if method == "POST" and route.endswith("/messages/count_tokens"):
            await send_json(writer, 200, {"input_tokens": 10})
            return True
        if method == "POST" and route.endswith("/messages"):
            try:
                payload = json.loads(body)
            except ValueError:
                await send_json(writer, 400, {"type": "error", "error": {"type": "invalid_request_error",
                                                                            "message": "body is not JSON"}})
                return True
            self.headers.append(headers)
            if payload.get("tools"):
                turn = _with_plan_file(self._next_turn(payload), payload)
            else:
                self.side_requests.append(payload)
                turn = {"text": SIDE_REPLY}
            if payload.get("stream"):
                await self._stream_turn(turn, writer)
                return False  # the SSE body ends with the connection
            await send_json(writer, 200, _message(turn, next(self._ids)))
            return headers.get("connection", "").lower() != "close"
        await send_json(writer, 404, {"type": "error", "error": {"type": "not_found_error",
                                                                    "message": f"no route for {method} {path}"}})
        return True

    async def _stream_turn(self, turn: Turn, writer: asyncio.StreamWriter) -> None:
        await self._start_stream(turn, writer)
        n = next(self._ids)
        events = _turn_events(turn, n)
        if turn.get("hang"):
            events = events[:1]
        for event in events:
            writer.write(sse(event))
            await writer.drain()
        while turn.get("hang"):  # until Claude Code (or the server) closes this connection
            await asyncio.sleep(HANG_PING_SECONDS)
            writer.write(sse({"type": "ping"}))
            await writer.drain()


def claude_env_for(port: int) -> dict[str, str]:
    """The environment that points Claude Code at this server on ``port`` (in-process or not) and
    keeps everything else on loopback."""
    url = f"http://127.0.0.1:{port}"
    return {
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": "sk-ant-fake-key-for-tests",
        "HTTPS_PROXY": url, "HTTP_PROXY": url, "https_proxy": url, "http_proxy": url,
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    }


def _with_plan_file(turn: Turn, payload: dict[str, Any]) -> Turn:
    """A ``plan_file`` turn as the Write of the plan file the request names."""
    if "plan_file" not in turn:
        return turn
    found = PLAN_FILE.search(json.dumps(payload))
    if found is None:
        return {"text": "(no plan file was named: is the session in plan mode?)"}
    return {**turn, "write": {"file_path": found.group(0), "content": turn["plan_file"]}}


def _blocks(turn: Turn, n: int) -> list[dict[str, Any]]:
    """The content blocks of a turn's reply: text first, then tool calls."""
    blocks: list[dict[str, Any]] = []
    if turn.get("thinking"):
        blocks.append({"type": "thinking", "thinking": str(turn["thinking"]), "signature": f"sig-{n}"})
    if turn.get("text") is not None:
        text = turn["text"]
        blocks.append({"type": "text", "deltas": [text] if isinstance(text, str) else [str(d) for d in text]})
    calls: list[tuple[str, dict[str, Any]]] = []
    if turn.get("bash"):
        spec = dict(turn["bash"])
        spec.setdefault("description", "the test model wants to run this")
        calls.append(("Bash", spec))
    if turn.get("write"):
        calls.append(("Write", dict(turn["write"])))
    if turn.get("edit"):
        calls.append(("Edit", {"replace_all": False, **dict(turn["edit"])}))
    if turn.get("tool"):
        calls.append((str(turn["tool"]["name"]), dict(turn["tool"].get("input", {}))))
    for k, (name, arguments) in enumerate(calls):
        blocks.append({"type": "tool_use", "id": f"toolu_{n:04d}_{k}", "name": name, "input": arguments})
    return blocks


def _stop_reason(blocks: list[dict[str, Any]]) -> str:
    return "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"


def _usage() -> dict[str, Any]:
    return {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def _turn_events(turn: Turn, n: int) -> list[dict[str, Any]]:
    blocks = _blocks(turn, n)
    events: list[dict[str, Any]] = [{
        "type": "message_start",
        "message": {"id": f"msg_fake_{n:04d}", "type": "message", "role": "assistant", "model": MODEL,
                    "content": [], "stop_reason": None, "stop_sequence": None, "usage": _usage()},
    }]
    for index, block in enumerate(blocks):
        if block["type"] == "thinking":
            events.append({"type": "content_block_start", "index": index,
                           "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
            events.append({"type": "content_block_delta", "index": index,
                           "delta": {"type": "thinking_delta", "thinking": block["thinking"]}})
            events.append({"type": "content_block_delta", "index": index,
                           "delta": {"type": "signature_delta", "signature": block["signature"]}})
        elif block["type"] == "text":
            events.append({"type": "content_block_start", "index": index,
                           "content_block": {"type": "text", "text": ""}})
            for delta in block["deltas"]:
                events.append({"type": "content_block_delta", "index": index,
                               "delta": {"type": "text_delta", "text": delta}})
        else:
            events.append({"type": "content_block_start", "index": index,
                           "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"],
                                             "input": {}}})
            events.append({"type": "content_block_delta", "index": index,
                           "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}})
        events.append({"type": "content_block_stop", "index": index})
    events.append({"type": "message_delta", "delta": {"stop_reason": _stop_reason(blocks), "stop_sequence": None},
                   "usage": {"output_tokens": 5}})
    events.append({"type": "message_stop"})
    return events


def _message(turn: Turn, n: int) -> dict[str, Any]:
    """A turn as one non-streamed Messages API response."""
    blocks = _blocks(turn, n)
    content: list[dict[str, Any]] = []
    for block in blocks:
        if block["type"] == "text":
            content.append({"type": "text", "text": "".join(block["deltas"])})
        elif block["type"] == "thinking":
            content.append(block)
        else:
            content.append(block)
    return {"id": f"msg_fake_{n:04d}", "type": "message", "role": "assistant", "model": MODEL,
            "content": content, "stop_reason": _stop_reason(blocks), "stop_sequence": None, "usage": _usage()}


def main(argv: list[str] | None = None) -> None:
    scripted_model.main(FakeAnthropic, __doc__, argv)


if __name__ == "__main__":
    main()
