"""What the scripted model servers share (tests/support/fake_responses.py for Codex,
tests/support/fake_anthropic.py for Claude Code): a bare HTTP/1.1 server on loopback that answers
each model request with the next *turn* of its script, records the request bodies, and streams
server-sent events. Each subclass knows its API: the routes, and the events a turn becomes.

Also the command line both run as::

    python -m tests.support.<module> --script turns.json [--log requests.jsonl] [--port n]

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
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

log = logging.getLogger("tether.tests.scripted_model")

Turn = dict[str, Any]
END_OF_SCRIPT: Turn = {"text": "(end of script)"}
MAX_BODY = 64 * 1024 * 1024


class ScriptedModel(ABC):
    """The server. ``requests`` holds every scripted request body received, in order."""

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

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def add(self, *turns: Turn) -> None:
        """Append turns to the script (tests may script the next reply after seeing the last)."""
        self.script.extend(turns)

    async def wait_requests(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        """Wait until at least ``count`` scripted requests have arrived."""
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                self._request_seen.clear()
                await self._request_seen.wait()
        return self.requests

    # -- HTTP --------------------------------------------------------------------------------

    @abstractmethod
    async def _route(
        self, method: str, path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter,
    ) -> bool:
        """Answer one request; False when the connection ends with the answer."""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                request = await read_request(reader)
                if request is None:
                    return
                method, path, headers, body = request
                keep_going = await self._route(method, path, headers, body, writer)
                if not keep_going:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            log.debug("connection ended: %s", exc)
        finally:
            self._writers.discard(writer)
            writer.close()

    def _next_turn(self, payload: dict[str, Any]) -> Turn:
        """Record a scripted request and take the turn that answers it."""
        self.requests.append(payload)
        self._request_seen.set()
        if self.log_path is not None:
            with self.log_path.open("a") as f:
                f.write(json.dumps(payload) + "\n")
        return self.script.pop(0) if self.script else END_OF_SCRIPT

    @staticmethod
    async def _start_stream(turn: Turn, writer: asyncio.StreamWriter) -> None:
        """The head of an event stream that ends with the connection, then the turn's delay."""
        extra = "".join(f"{name}: {value}\r\n" for name, value in (turn.get("headers") or {}).items())
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"connection: close\r\n" + extra.encode() + b"\r\n"
        )
        await writer.drain()
        if turn.get("delay"):
            await asyncio.sleep(float(turn["delay"]))


def sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
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
        return method, path, headers, bytes(body)
    length = int(headers.get("content-length", "0"))
    if length > MAX_BODY:
        raise ValueError("request body too large")
    return method, path, headers, await reader.readexactly(length)


async def send_json(writer: asyncio.StreamWriter, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    reason = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found"}.get(status, "Error")
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def _serve(server: ScriptedModel, port: int) -> None:
    print(f"PORT {await server.start(port=port)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()


def main(server_class: type[ScriptedModel], description: str | None, argv: list[str] | None = None) -> None:
    """Run ``server_class`` as a process until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0] if description else None)
    parser.add_argument("--script", help="a JSON file: a list of turns (or {\"turns\": [...]})")
    parser.add_argument("--log", help="append every scripted request body to this file as JSON lines")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    script = json.loads(Path(args.script).read_text()) if args.script else []
    if isinstance(script, dict):
        script = script.get("turns", [])
    asyncio.run(_serve(server_class(script, log_path=Path(args.log) if args.log else None), args.port))
