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
     "delay": 0.5,                               # seconds to wait before answering
     "hang": true}                               # never complete: stream forever (until closed)

Codex only asks for approval when a command needs to leave the sandbox: under
``approval_policy = "on-request"`` an ``exec_command`` with ``sandbox_permissions:
"require_escalated"`` does that, which is what ``"escalated": true`` (the default) sends.

When the script has run out, every further request gets a short text reply ("(end of script)").

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

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("tether.tests.fake_responses")

Turn = dict[str, Any]
END_OF_SCRIPT: Turn = {"text": "(end of script)"}
MAX_BODY = 64 * 1024 * 1024


class FakeResponses:
    """The server. ``requests`` holds every JSON body received, in order."""

    def __init__(self, script: Sequence[Turn] = (), *, log_path: Path | None = None) -> None:
        self.script: list[Turn] = list(script)
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.log_path = log_path
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._request_seen = asyncio.Event()
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._handle, host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def __aenter__(self) -> FakeResponses:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def add(self, *turns: Turn) -> None:
        """Append turns to the script (tests may script the next reply after seeing the last)."""
        self.script.extend(turns)

    async def wait_requests(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        """Wait until at least ``count`` model requests have arrived."""
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                self._request_seen.clear()
                await self._request_seen.wait()
        return self.requests

    # -- HTTP --------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                method, path, body = request
                keep_going = await self._route(method, path, body, writer)
                if not keep_going:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            log.debug("connection ended: %s", exc)
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _route(self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        self.paths.append(f"{method} {path}")
        if method == "POST" and path.split("?")[0].endswith("/responses"):
            try:
                payload = json.loads(body)
            except ValueError:
                await _send_simple(writer, 400, {"error": {"message": "body is not JSON"}})
                return True
            self._record(payload)
            turn = self.script.pop(0) if self.script else END_OF_SCRIPT
            await self._stream_turn(turn, writer)
            return False  # the SSE body ends with the connection
        await _send_simple(writer, 404, {"error": {"message": f"no route for {method} {path}"}})
        return True

    def _record(self, payload: dict[str, Any]) -> None:
        self.requests.append(payload)
        self._request_seen.set()
        if self.log_path is not None:
            with self.log_path.open("a") as f:
                f.write(json.dumps(payload) + "\n")

    async def _stream_turn(self, turn: Turn, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"connection: close\r\n\r\n"
        )
        await writer.drain()
        if turn.get("delay"):
            await asyncio.sleep(float(turn["delay"]))
        n = next(self._ids)
        response_id = f"resp_{n}"
        for event in _turn_events(turn, n, response_id):
            writer.write(_sse(event))
            await writer.drain()
        if turn.get("hang"):
            await asyncio.Event().wait()  # until the server closes this connection
        writer.write(_sse({"type": "response.completed", "response": _response(response_id, "completed")}))
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
    calls: list[tuple[str, dict[str, Any]]] = []
    if turn.get("exec"):
        spec = dict(turn["exec"])
        args: dict[str, Any] = {"cmd": spec["cmd"]}
        if spec.get("escalated", True):
            args["sandbox_permissions"] = "require_escalated"
            args["justification"] = spec.get("justification", "the test model wants to run this")
        if spec.get("workdir"):
            args["workdir"] = spec["workdir"]
        calls.append(("exec_command", args))
    if turn.get("call"):
        calls.append((str(turn["call"]["name"]), dict(turn["call"].get("arguments", {}))))
    for k, (name, arguments) in enumerate(calls):
        item = {"type": "function_call", "id": f"fc_{n}_{k}", "call_id": f"call_{n}_{k}", "name": name,
                "arguments": json.dumps(arguments), "status": "completed"}
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


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    if headers.get("content-encoding") not in (None, "identity"):
        # Codex compresses request bodies with zstd unless [features] enable_request_compression = false.
        raise ValueError(f"compressed request body ({headers['content-encoding']}); disable request compression")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            if len(body) + size > MAX_BODY:
                raise ValueError("request body too large")
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        return method, path, bytes(body)
    length = int(headers.get("content-length", "0"))
    if length > MAX_BODY:
        raise ValueError("request body too large")
    return method, path, await reader.readexactly(length)


async def _send_simple(writer: asyncio.StreamWriter, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def _main(args: argparse.Namespace, script: list[Turn]) -> None:
    server = FakeResponses(script, log_path=Path(args.log) if args.log else None)
    port = await server.start(port=args.port)
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--script", help="a JSON file: a list of turns (or {\"turns\": [...]})")
    parser.add_argument("--log", help="append every request body to this file as JSON lines")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    script = json.loads(Path(args.script).read_text()) if args.script else []
    if isinstance(script, dict):
        script = script.get("turns", [])
    asyncio.run(_main(args, script))


if __name__ == "__main__":
    main()
