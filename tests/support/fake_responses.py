"""A scripted OpenAI Responses API server, so tests can drive the real Codex CLI offline.

Codex (``wire_api = "responses"``) sends ``POST /v1/responses`` with ``"stream": true`` and reads
server-sent events. This server answers each request with the next *turn* of its script and records
every request body it got, so tests can assert on what the model was shown (for instance the
output of a command it asked to run).

A script is a list of turns; each turn is one model reply, a dict with any of::

    {"reasoning": "thinking about it",           # a reasoning item with one summary part
     "text": "Hello there" | ["Hel", "lo"],      # assistant message, streamed as these deltas
     "exec": {"cmd": "echo hi", "escalated": true, "justification": "why"},
                                                 # an exec_command tool call (Codex 0.169.0's shell)
     "call": {"name": "tool", "arguments": {...}},   # any other function call
                                                 # (+ "namespace": "mcp__SERVER" for an MCP tool)
     "web_search": "a query",                    # a web_search_call item (Codex: webSearch)
     "patch": "*** Begin Patch...",              # a call of the apply_patch tool (freeform)
     "headers": {"openai-model": "gpt-x"},       # response headers (Codex: the model that answered)
     "delay": 0.5,                               # seconds to wait before answering
     "hang": true}                               # never complete: stream forever (until closed)

Codex only asks for approval when a command needs to leave the sandbox: under
``approval_policy = "on-request"`` an ``exec_command`` with ``sandbox_permissions:
"require_escalated"`` does that, which is what ``"escalated": true`` (the default) sends.

When the script has run out, every further request gets a short text reply ("(end of script)").

It also answers ``POST /v1/images/generations``, which Codex's own ``image_gen`` tool sends to the
model provider (offered only with a ChatGPT login: tests/agents/codex/test_codex_rare_items.py),
with the PNG in ``image`` (base64, as the Images API does), and records each such request in
``image_requests`` (``{"path", "headers", "body"}``).

The headers of each ``/responses`` request are in ``response_headers`` (lower-case names); one
whose bearer token is in ``unauthorized`` gets ``401 Unauthorized`` instead of a turn (a ChatGPT
login that is no longer good: tests/agents/codex/test_codex_rare_items.py).

The SSE events and their order are what Codex's parser reads (codex-rs ``codex-api/src/sse``):
``response.created``, then per output item ``response.output_item.added`` → deltas
(``response.output_text.delta`` / ``response.reasoning_summary_text.delta``) →
``response.output_item.done``, then ``response.completed`` with the response id and usage; the
stream then ends (Codex treats an end without ``response.completed`` as a dropped stream).

Run in-process (``FakeResponses``) or as a process::

    python -m tests.support.fake_responses --script turns.json [--log requests.jsonl]

which prints ``PORT <n>`` on stdout once it listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support import scripted_model
from tests.support.images import png
from tests.support.scripted_model import ScriptedModel, Turn, send_json, sse


class FakeResponses(ScriptedModel):
    """The server. ``requests`` holds every JSON body received, in order."""

    def __init__(self, script: Sequence[Turn] = (), *, log_path: Path | None = None) -> None:
        super().__init__(script, log_path=log_path)
        self.image = png(4, 4, (0, 128, 128))  # what an image generation returns
        self.image_requests: list[dict[str, Any]] = []
        self.response_headers: list[dict[str, str]] = []  # of each /responses request
        self.unauthorized: set[str] = set()  # bearer tokens answered with 401

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _route(
        self, method: str, path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter,
    ) -> bool:
        self.paths.append(f"{method} {path}")
        if method == "POST" and path.split("?")[0].endswith("/responses"):
            self.response_headers.append(headers)
            if headers.get("authorization", "").removeprefix("Bearer ") in self.unauthorized:
                await send_json(writer, 401, {"error": {"message": "token expired", "code": "token_expired"}})
                return True
            try:
                payload = json.loads(body)
            except ValueError:
                await send_json(writer, 400, {"error": {"message": "body is not JSON"}})
                return True
            turn = self._next_turn(payload)
            await self._stream_turn(turn, writer)
            return False  # the SSE body ends with the connection
        if method == "POST" and path.split("?")[0].endswith("/images/generations"):
            try:
                payload = json.loads(body)
            except ValueError:
                await send_json(writer, 400, {"error": {"message": "body is not JSON"}})
                return True
            self.image_requests.append({"path": path, "headers": headers, "body": payload})
            await send_json(writer, 200, {"created": int(time.time()),
                                          "data": [{"b64_json": base64.b64encode(self.image).decode()}]})
            return True
        await send_json(writer, 404, {"error": {"message": f"no route for {method} {path}"}})
        return True

    async def _stream_turn(self, turn: Turn, writer: asyncio.StreamWriter) -> None:
        await self._start_stream(turn, writer)
        n = next(self._ids)
        response_id = f"resp_{n}"
        for event in _turn_events(turn, n, response_id):
            writer.write(sse(event))
            await writer.drain()
        if turn.get("hang"):
            await asyncio.Event().wait()  # until the server closes this connection
        writer.write(sse({"type": "response.completed", "response": _response(response_id, "completed")}))
        await writer.drain()


def _turn_events(turn: Turn, n: int, response_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": _response(response_id, "in_progress")},
    ]
    index = 0
    if turn.get("reasoning"):
        summary = str(turn["reasoning"])
        item = {"type": "reasoning", "id": f"rs_{n}", "summary": [], "content": None, "encrypted_content": None}
        events.append({"type": "response.output_item.added", "output_index": index, "item": item})
        events.append({"type": "response.reasoning_summary_part.added", "item_id": f"rs_{n}",
                       "output_index": index, "summary_index": 0})
        events.append({"type": "response.reasoning_summary_text.delta", "item_id": f"rs_{n}",
                       "output_index": index, "summary_index": 0, "delta": summary})
        done = {**item, "summary": [{"type": "summary_text", "text": summary}]}
        events.append({"type": "response.output_item.done", "output_index": index, "item": done})
        index += 1
    if turn.get("web_search"):
        item = {"type": "web_search_call", "id": f"ws_{n}", "status": "completed",
                "action": {"type": "search", "query": str(turn["web_search"])}}
        events.append({"type": "response.output_item.added", "output_index": index,
                       "item": {**item, "status": "in_progress"}})
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
        index += 1
    if turn.get("text") is not None:
        text = turn["text"]
        deltas = [text] if isinstance(text, str) else [str(d) for d in text]
        msg_id = f"msg_{n}"
        item = {"type": "message", "id": msg_id, "role": "assistant", "status": "in_progress", "content": []}
        events.append({"type": "response.output_item.added", "output_index": index, "item": item})
        for delta in deltas:
            events.append({"type": "response.output_text.delta", "item_id": msg_id, "output_index": index,
                           "content_index": 0, "delta": delta})
        done = {**item, "status": "completed",
                "content": [{"type": "output_text", "text": "".join(deltas), "annotations": []}]}
        events.append({"type": "response.output_item.done", "output_index": index, "item": done})
        index += 1
    calls: list[tuple[str, dict[str, Any], str | None]] = []
    if turn.get("exec"):
        spec = dict(turn["exec"])
        args: dict[str, Any] = {"cmd": spec["cmd"]}
        if spec.get("escalated", True):
            args["sandbox_permissions"] = "require_escalated"
            args["justification"] = spec.get("justification", "the test model wants to run this")
        if spec.get("workdir"):
            args["workdir"] = spec["workdir"]
        calls.append(("exec_command", args, None))
    if turn.get("call"):
        call = turn["call"]
        calls.append((str(call["name"]), dict(call.get("arguments", {})), call.get("namespace")))
    if turn.get("patch"):
        # A freeform (custom) tool call, as a model calls Codex's apply_patch tool.
        item = {"type": "custom_tool_call", "id": f"ctc_{n}", "call_id": f"call_{n}_p", "name": "apply_patch",
                "input": str(turn["patch"]), "status": "completed"}
        events.append({"type": "response.output_item.added", "output_index": index,
                       "item": {**item, "input": "", "status": "in_progress"}})
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
        index += 1
    for k, (name, arguments, namespace) in enumerate(calls):
        item = {"type": "function_call", "id": f"fc_{n}_{k}", "call_id": f"call_{n}_{k}", "name": name,
                "arguments": json.dumps(arguments), "status": "completed"}
        if namespace:  # a tool of a namespace (Codex offers an MCP server's tools as one)
            item["namespace"] = namespace
        events.append({"type": "response.output_item.added", "output_index": index,
                       "item": {**item, "arguments": "", "status": "in_progress"}})
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
        index += 1
    return events


def _response(response_id: str, status: str) -> dict[str, Any]:
    return {
        "id": response_id, "object": "response", "status": status, "model": "mock-model", "output": [],
        "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5,
                  "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15},
    }


def main(argv: list[str] | None = None) -> None:
    scripted_model.main(FakeResponses, __doc__, argv)


if __name__ == "__main__":
    main()
