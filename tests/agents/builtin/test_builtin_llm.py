import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.fake_openai import FakeOpenAI
from tether.agents.builtin import resolve_endpoint
from tether.agents.builtin.llm import Accumulator, ChatClient, Delta, LLMError, SSEDecoder, parse_chunk

KEY = "sk-test-SECRET-0123456789abcdef"


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as srv:
        yield srv


def client(srv: FakeOpenAI, **kw: Any) -> ChatClient:
    return ChatClient(srv.base_url, KEY, "fake-model", kw.pop("timeout", 5.0), **kw)


async def collect(c: ChatClient, messages: list[dict[str, Any]] | None = None) -> Accumulator:
    acc = Accumulator()
    async for delta in c.stream(messages or [{"role": "user", "content": "hi"}], [{"type": "function"}]):
        acc.feed(delta)
    return acc


async def failure(c: ChatClient) -> LLMError:
    with pytest.raises(LLMError) as info:
        await collect(c)
    err = info.value
    assert KEY not in str(err) and KEY not in repr(err) and KEY not in (err.hint or "")
    return err


async def test_text_stream_and_request(server: FakeOpenAI) -> None:
    server.add({"chunks": ["Hel", "lo"], "reasoning": "thinking"})
    acc = await collect(client(server))
    assert acc.text == "Hello" and acc.reasoning == "thinking" and acc.finish_reason == "stop"
    assert acc.tool_calls == []
    [req] = server.requests
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    # The key went in the Authorization header and nowhere else.
    assert KEY not in req.body.decode() and KEY not in req.path
    assert [v for k, v in req.headers.items() if KEY in v and k != "authorization"] == []
    body = req.json
    assert body["model"] == "fake-model" and body["stream"] is True
    assert body["messages"] == [{"role": "user", "content": "hi"}] and body["tools"] == [{"type": "function"}]


async def test_no_key_sends_no_authorization(server: FakeOpenAI) -> None:
    server.add({"text": "ok"})
    acc = Accumulator()
    async for d in ChatClient(server.base_url + "/", None, "m").stream([{"role": "user", "content": "x"}]):
        acc.feed(d)
    assert acc.text == "ok"
    assert "authorization" not in server.requests[0].headers
    assert "tools" not in server.requests[0].json


async def test_tool_call_fragments_are_accumulated(server: FakeOpenAI) -> None:
    server.add({"text": "let me", "tool_calls": [
        {"id": "c1", "name": "write_file", "arguments": '{"path": "a.txt", "content": "hi"}'},
        {"id": "c2", "name": "list_dir", "arguments": '{"path": "."}'},
    ]})
    acc = await collect(client(server))
    assert acc.finish_reason == "tool_calls"
    assert [(c.id, c.name, json.loads(c.arguments)) for c in acc.tool_calls] == [
        ("c1", "write_file", {"path": "a.txt", "content": "hi"}),
        ("c2", "list_dir", {"path": "."}),
    ]


async def test_invalid_tool_json_is_passed_through(server: FakeOpenAI) -> None:
    # The client does not judge the arguments: the loop turns bad JSON into a tool error.
    server.add({"tool_calls": [{"id": "c1", "name": "read_file", "arguments": '{"path": '}]})
    acc = await collect(client(server))
    assert acc.tool_calls[0].arguments == '{"path": '


async def test_http_500(server: FakeOpenAI) -> None:
    server.add({"status": 500, "body": json.dumps({"error": {"message": "model overloaded"}})})
    err = await failure(client(server))
    assert "HTTP 500" in err.message and "model overloaded" in err.message


async def test_http_401_echoing_the_key_is_redacted(server: FakeOpenAI) -> None:
    server.add({"status": 401, "body": json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}"}})})
    err = await failure(client(server))
    assert "HTTP 401" in err.message and "[redacted]" in err.message
    assert err.hint and "API key" in err.hint


async def test_garbage_lines(server: FakeOpenAI) -> None:
    server.add({"garbage": ["this is not json"]})
    err = await failure(client(server))
    assert "not JSON" in err.message and "this is not json" in err.message


async def test_html_page_instead_of_a_stream(server: FakeOpenAI) -> None:
    server.add({"status": 200, "body": "<html>captive portal</html>", "content_type": "text/html"})
    err = await failure(client(server))
    assert "no server-sent events (content type 'text/html')" in err.message and "captive portal" in err.message


@pytest.mark.parametrize("chunk,expected", [
    ({"nochoices": 1}, "without 'choices'"),
    ({"choices": "x"}, "'choices' is not a list"),
    ({"choices": [{"delta": {"content": 5}}]}, "delta.content is not a string"),
    ({"choices": [{"delta": {"tool_calls": [{"index": "a"}]}}]}, "bad tool call index"),
    ({"choices": [{}]}, "neither 'delta' nor 'finish_reason'"),
    ({"error": {"message": "context length exceeded"}}, "reported an error: context length exceeded"),
    ([1, 2], "not a JSON object"),
])
async def test_malformed_chunks(server: FakeOpenAI, chunk: Any, expected: str) -> None:
    server.add({"garbage": [json.dumps(chunk)]})
    err = await failure(client(server))
    assert expected in err.message


async def test_stream_cut_mid_chunk(server: FakeOpenAI) -> None:
    server.add({"chunks": ["partial"], "cut": True})
    err = await failure(client(server))
    assert "broke off" in err.message


async def test_stream_ended_without_finish(server: FakeOpenAI) -> None:
    server.add({"text": "partial", "no_done": True})
    err = await failure(client(server))
    assert "before the answer was finished" in err.message


async def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = await failure(ChatClient(f"http://user:{KEY}@127.0.0.1:{port}/v1", KEY, "m", 2.0))
    assert "cannot connect to the model server at http://127.0.0.1:" in err.message
    assert "user" not in err.message


async def test_timeout(server: FakeOpenAI) -> None:
    server.add({"hang": True})
    err = await failure(client(server, timeout=0.3))
    assert "did not answer within 0.3 s" in err.message


async def test_response_size_is_bounded(server: FakeOpenAI) -> None:
    server.add({"huge": 200_000})
    err = await failure(client(server, max_response_bytes=50_000))
    assert "larger than 50000 bytes" in err.message


async def test_request_size_is_bounded(server: FakeOpenAI) -> None:
    c = client(server, max_request_bytes=1000)
    with pytest.raises(LLMError, match="over the limit of 1000"):
        await collect(c, [{"role": "user", "content": "x" * 2000}])
    assert server.requests == []


async def test_non_streaming_json_answer(server: FakeOpenAI) -> None:
    body = {"choices": [{"message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}]}
    server.add({"status": 200, "body": json.dumps(body)})
    acc = await collect(client(server))
    assert acc.text == "whole" and acc.finish_reason == "stop"


async def test_cancel_closes_the_stream(server: FakeOpenAI) -> None:
    server.add({"hang": True})
    task = asyncio.create_task(collect(client(server, timeout=30)))
    while not server.requests:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_connections_are_pooled_and_closed(server: FakeOpenAI) -> None:
    server.add({"text": "a"}, {"text": "b"})
    async with client(server) as c:
        assert (await collect(c)).text == "a"
        assert (await collect(c)).text == "b"
    await c.aclose()  # twice is fine


async def test_key_never_logged(server: FakeOpenAI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server.add({"text": "ok"}, {"status": 401, "body": KEY})
    c = client(server)
    await collect(c)
    await failure(c)
    assert KEY not in caplog.text
    assert KEY not in repr(c)


def test_sse_decoder() -> None:
    d = SSEDecoder(max_line=100)
    assert d.feed(b": comment\r\nevent: x\r\ndata: {\"a\"") == []
    assert d.feed(b": 1}\r\n\r\ndata:[DONE]\n\n") == ['{"a": 1}', "[DONE]"]
    assert d.feed(b"data: a\ndata: b\n") == []
    assert d.close() == ["a\nb"]
    with pytest.raises(LLMError, match="longer than 100 bytes"):
        d.feed(b"data: " + b"x" * 200)


def test_parse_chunk_edge_cases() -> None:
    assert parse_chunk({"choices": []}) is None  # usage-only chunk
    assert parse_chunk({"choices": [{"finish_reason": "stop"}]}) == Delta(finish_reason="stop")
    d = parse_chunk({"choices": [{"delta": {"tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}}]})
    assert d is not None and d.tool_calls[0].arguments == '{"a": 1}'


def test_accumulator_fills_missing_ids() -> None:
    acc = Accumulator()
    acc.feed(parse_chunk({"choices": [{"delta": {"tool_calls": [
        {"index": 0, "function": {"name": "list_dir", "arguments": "{}"}}]}}]}) or Delta())
    assert acc.tool_calls[0].id == "call_0"


def test_resolve_endpoint() -> None:
    env = {"OPENAI_BASE_URL": "http://env/v1", "OPENAI_API_KEY": "envkey"}
    assert resolve_endpoint("http://cfg/v1", "cfgkey", env) == ("http://cfg/v1", "cfgkey")
    assert resolve_endpoint(None, "", env) == ("http://env/v1", "envkey")
    assert resolve_endpoint(None, None, {}) == ("https://api.openai.com/v1", None)
