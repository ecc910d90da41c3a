"""The scripted Messages-API server the claude tests rely on: its stream format, what consumes the
script, and the proxy trap that makes "nothing left loopback" a real check."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.support.fake_anthropic import FakeAnthropic


async def post(server: FakeAnthropic, body: dict[str, Any]) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    data = json.dumps(body).encode()
    writer.write(b"POST /v1/messages?beta=true HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 + f"content-length: {len(data)}\r\nconnection: close\r\n\r\n".encode() + data)
    await writer.drain()
    response = await reader.read()
    writer.close()
    return response


def sse_events(response: bytes) -> list[dict[str, Any]]:
    body = response.split(b"\r\n\r\n", 1)[1].decode()
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


async def test_a_tool_call_turn_streams_in_the_messages_format() -> None:
    async with FakeAnthropic([{"text": ["a", "b"], "bash": {"command": "ls"}}]) as server:
        events = sse_events(await post(server, {"stream": True, "tools": [{"name": "Bash"}], "messages": []}))
    assert [e["type"] for e in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop",
    ]
    assert events[5]["content_block"]["name"] == "Bash"
    assert json.loads(events[6]["delta"]["partial_json"]) == {
        "command": "ls", "description": "the test model wants to run this"}
    assert events[8]["delta"]["stop_reason"] == "tool_use"
    assert len(server.requests) == 1


async def test_side_requests_do_not_consume_the_script() -> None:
    async with FakeAnthropic([{"text": "scripted"}]) as server:
        side = json.loads((await post(server, {"messages": []})).split(b"\r\n\r\n", 1)[1])
        assert side["content"] == [{"type": "text", "text": "ok"}] and side["stop_reason"] == "end_turn"
        events = sse_events(await post(server, {"stream": True, "tools": [{"name": "Bash"}], "messages": []}))
    assert events[2]["delta"]["text"] == "scripted"
    assert len(server.side_requests) == 1 and len(server.requests) == 1


async def test_traffic_meant_for_elsewhere_is_refused_and_recorded() -> None:
    async with FakeAnthropic() as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"CONNECT api.anthropic.com:443 HTTP/1.1\r\nhost: api.anthropic.com:443\r\n\r\n")
        await writer.drain()
        response = await reader.read()
        writer.close()
    assert response.startswith(b"HTTP/1.1 403")
    assert server.escaped == ["CONNECT api.anthropic.com:443"]
    assert set(server.env()) >= {"ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "HTTPS_PROXY", "NO_PROXY"}
