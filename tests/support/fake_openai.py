"""A scripted OpenAI-compatible Chat Completions server for tests (HTTP/1.1 + SSE on 127.0.0.1).

Each ``POST …/chat/completions`` consumes the next reply of the script. A reply is a dict (so a
script can be a JSON file):

- ``{"text": "hi"}`` or ``{"chunks": ["h", "i"]}``: streamed content, then ``finish_reason``.
- ``{"reasoning": "…"}``: streamed ``reasoning_content`` before the text.
- ``{"tool_calls": [{"id": "c1", "name": "write_file", "arguments": "{…}"}]}``: tool calls, their
  argument strings sent as given (invalid JSON on purpose is fine) and split into fragments.
- ``{"garbage": ["not json", …]}``: these ``data:`` lines verbatim (``[DONE]`` after them).
- ``{"status": 500, "body": "…", "content_type": "…"}``: a plain HTTP answer.
- ``{"cut": true}``: stream the content, then drop the connection mid-stream (no final chunk).
- ``{"no_done": true}``: end the stream cleanly but with neither finish_reason nor ``[DONE]``.
- ``{"delay": 0.5}``: wait before answering; ``{"hang": true}``: never answer.
- ``{"huge": 100000}``: that many bytes of content, in 1 KiB chunks.
- ``{"finish_reason": "length"}``: override the finish reason.

When the script runs out, the server answers HTTP 500 "script exhausted". Every request is
recorded (headers and body) so tests can check what the model was sent and where the API key went.

As a process: ``python -m tests.support.fake_openai --script FILE [--record FILE]`` prints
``PORT n`` on stdout and serves until killed; ``--record`` appends each request as a JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024

Reply = dict[str, Any]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "headers": self.headers,
                "body": self.body.decode(errors="replace")}


def _chunk(obj: dict[str, Any]) -> str:
    return json.dumps(obj)


def _delta(delta: dict[str, Any], finish: str | None = None) -> str:
    return _chunk({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": "fake",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    })


def events_for(reply: Reply) -> list[str]:
    """The ``data:`` payloads of a streamed reply (the last being ``[DONE]`` unless told not to)."""
    if "garbage" in reply:
        lines = reply["garbage"]
        return [*([lines] if isinstance(lines, str) else lines), "[DONE]"]
    out = [_delta({"role": "assistant", "content": ""})]
    if reply.get("reasoning"):
        out.append(_delta({"reasoning_content": reply["reasoning"]}))
    chunks: list[str] = list(reply.get("chunks", []))
    if "text" in reply:
        chunks.append(reply["text"])
    if reply.get("huge"):
        size = int(reply["huge"])
        chunks.extend("x" * min(1024, size - i) for i in range(0, size, 1024))
    out.extend(_delta({"content": c}) for c in chunks)
    calls = reply.get("tool_calls") or []
    for index, call in enumerate(calls):
        args: str = call.get("arguments", "")
        cut = len(args) // 2
        first = {"index": index, "id": call.get("id", f"call_{index}"), "type": "function",
                 "function": {"name": call["name"], "arguments": args[:cut]}}
        out.append(_delta({"tool_calls": [first]}))
        if args[cut:]:
            out.append(_delta({"tool_calls": [{"index": index, "function": {"arguments": args[cut:]}}]}))
    if reply.get("no_done"):
        return out
    finish = reply.get("finish_reason") or ("tool_calls" if calls else "stop")
    out.append(_delta({}, finish))
    out.append("[DONE]")
    return out


class FakeOpenAI:
    """The server; use ``async with FakeOpenAI(script) as server`` and ``server.base_url``."""

    def __init__(self, script: Iterable[Reply] = (), *, record_path: Path | None = None) -> None:
        self.script: list[Reply] = list(script)
        self.requests: list[Recorded] = []
        self.port = 0
        self._record_path = record_path
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def add(self, *replies: Reply) -> None:
        self.script.extend(replies)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEADER_BYTES:
            return
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length > MAX_BODY_BYTES:
            await self._plain(writer, 413, "request too large")
            return
        body = await reader.readexactly(length) if length else b""
        recorded = Recorded(method, path, headers, body)
        self.requests.append(recorded)
        if self._record_path is not None:
            with self._record_path.open("a") as f:
                f.write(json.dumps(recorded.as_dict()) + "\n")
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            await self._plain(writer, 404, json.dumps({"error": {"message": f"no route {method} {path}"}}))
            return
        if not self.script:
            await self._plain(writer, 500, json.dumps({"error": {"message": "script exhausted"}}))
            return
        reply = self.script.pop(0)
        if reply.get("delay"):
            await asyncio.sleep(float(reply["delay"]))
        if reply.get("hang"):
            await asyncio.Event().wait()
        if "status" in reply or "body" in reply:
            await self._plain(writer, int(reply.get("status", 200)), str(reply.get("body", "")),
                              reply.get("content_type", "application/json"))
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        events = events_for(reply)
        if reply.get("cut"):
            events = [e for e in events if e != "[DONE]"][:-1]  # drop the finish too
        for data in events:
            payload = f"data: {data}\n\n".encode()
            writer.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
            await writer.drain()
        if reply.get("cut"):
            # A half-sent chunk, then the connection drops: a stream cut short.
            writer.write(b"40\r\ndata: {\"choi")
            await writer.drain()
            writer.transport.abort()
            return
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    @staticmethod
    async def _plain(writer: asyncio.StreamWriter, status: int, body: str, ctype: str = "application/json") -> None:
        data = body.encode()
        writer.write(
            f"HTTP/1.1 {status} Status\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
            f"Connection: close\r\n\r\n".encode() + data
        )
        await writer.drain()


async def _main(script: list[Reply], record: Path | None) -> None:
    server = FakeOpenAI(script, record_path=record)
    await server.start()
    print(f"PORT {server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--script", type=Path, required=True, help="a JSON file: a list of replies")
    parser.add_argument("--log", "--record", dest="record", type=Path,
                        help="append each request as a JSON line here")
    args = parser.parse_args(argv)
    script = json.loads(args.script.read_text())
    if not isinstance(script, list):
        print("the script must be a JSON list of replies", file=sys.stderr)
        return 2
    asyncio.run(_main(script, args.record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
