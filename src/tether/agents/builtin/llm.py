"""A streaming client for OpenAI-compatible Chat Completions endpoints.

Works against OpenAI, Ollama, vLLM and llama.cpp: ``POST {base_url}/chat/completions`` with
``stream: true``, answered with server-sent events whose ``data:`` lines carry JSON chunks, ending
with ``data: [DONE]``.

Every way the server can misbehave (an HTTP error, a line that is not JSON, a chunk of the wrong
shape, a refused connection, silence, a stream cut short, an answer too large) ends as one
:class:`LLMError` with a message a person can act on. The API key is sent only in the
``Authorization`` header: it is redacted from every message this module produces, including text
the server echoes back.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from tether.agents.secrets import REDACTED
from tether.errors import TetherError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 120.0
# A whole streamed answer; a chat answer is kilobytes, so megabytes mean a broken server.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# One SSE line; OpenAI chunks are a few hundred bytes.
MAX_LINE_BYTES = 1024 * 1024
# What the server's error body may contribute to a message.
MAX_ERROR_SNIPPET = 300
# Refuse to send more than this in one request (conversation included).
MAX_REQUEST_BYTES = 8 * 1024 * 1024


class LLMError(TetherError):
    """The model server could not be reached or did not answer as an OpenAI-compatible server."""

    code = "llm"


@dataclass(frozen=True, slots=True)
class ToolCallFragment:
    """A piece of one tool call; pieces with the same ``index`` belong to the same call."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Delta:
    """What one streamed chunk added to the answer."""

    content: str = ""
    reasoning: str = ""
    tool_calls: tuple[ToolCallFragment, ...] = ()
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete tool call, its arguments still the raw string the model produced."""

    id: str
    name: str
    arguments: str


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class Accumulator:
    """Assembles streamed deltas into the answer: text, reasoning, tool calls, finish reason."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, _PartialCall] = {}
        self.finish_reason: str | None = None

    def feed(self, delta: Delta) -> None:
        if delta.content:
            self._text.append(delta.content)
        if delta.reasoning:
            self._reasoning.append(delta.reasoning)
        for frag in delta.tool_calls:
            call = self._calls.setdefault(frag.index, _PartialCall())
            if frag.id:
                call.id = frag.id
            if frag.name:
                # Servers send the name once; a few repeat it in every fragment.
                call.name = frag.name if not call.name or call.name == frag.name else call.name + frag.name
            if frag.arguments:
                call.arguments.append(frag.arguments)
        if delta.finish_reason:
            self.finish_reason = delta.finish_reason

    @property
    def text(self) -> str:
        return "".join(self._text)

    @property
    def reasoning(self) -> str:
        return "".join(self._reasoning)

    @property
    def tool_calls(self) -> list[ToolCall]:
        calls = []
        for index in sorted(self._calls):
            part = self._calls[index]
            # Some local servers omit ids; the conversation still needs one per call.
            calls.append(ToolCall(id=part.id or f"call_{index}", name=part.name, arguments="".join(part.arguments)))
        return calls


class SSEDecoder:
    """Server-sent events, sans I/O: feed bytes, get the ``data`` of each complete event.

    Only ``data:`` fields matter here; ``event:``, ``id:``, ``retry:`` and comments are skipped.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._buf = bytearray()
        self._data: list[str] = []
        self._max_line = max_line

    def feed(self, chunk: bytes) -> list[str]:
        self._buf += chunk
        events: list[str] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > self._max_line:
                    raise LLMError(f"the model server sent a line longer than {self._max_line} bytes")
                return events
            raw = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            if len(raw) > self._max_line:
                raise LLMError(f"the model server sent a line longer than {self._max_line} bytes")
            self._line(raw.rstrip(b"\r"), events)

    def close(self) -> list[str]:
        """The end of the stream: an unterminated last event still counts."""
        events: list[str] = []
        if self._buf:
            self._line(bytes(self._buf).rstrip(b"\r"), events)
            self._buf.clear()
        self._dispatch(events)
        return events

    def _line(self, raw: bytes, events: list[str]) -> None:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise LLMError("the model server sent a line that is not UTF-8 text") from None
        if not line:
            self._dispatch(events)
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)

    def _dispatch(self, events: list[str]) -> None:
        if self._data:
            events.append("\n".join(self._data))
            self._data = []


def _display_url(url: str) -> str:
    """The URL without credentials someone may have put in it (``https://user:key@host``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _snippet(text: str, limit: int = MAX_ERROR_SNIPPET) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise LLMError(f"the model server sent a malformed chunk: {what}")


def parse_chunk(obj: Any) -> Delta | None:
    """One decoded JSON chunk of a stream as a :class:`Delta` (``None`` when it carries nothing)."""
    _expect(isinstance(obj, dict), "not a JSON object")
    if obj.get("error"):
        err = obj["error"]
        message = err.get("message") if isinstance(err, dict) else err
        raise LLMError(f"the model server reported an error: {_snippet(str(message))}")
    if "choices" not in obj:
        raise LLMError("the model server sent a chunk without 'choices'")
    choices = obj["choices"]
    _expect(isinstance(choices, list), "'choices' is not a list")
    if not choices:
        return None  # usage-only chunks (stream_options.include_usage) have no choices
    choice = choices[0]
    _expect(isinstance(choice, dict), "choices[0] is not an object")
    finish = choice.get("finish_reason")
    _expect(finish is None or isinstance(finish, str), "finish_reason is not a string")
    # A non-streaming answer (some servers ignore stream=true) has 'message' instead of 'delta'.
    delta = choice.get("delta", choice.get("message"))
    if delta is None:
        _expect(finish is not None, "choices[0] has neither 'delta' nor 'finish_reason'")
        return Delta(finish_reason=finish)
    _expect(isinstance(delta, dict), "choices[0].delta is not an object")
    content = delta.get("content") or ""
    _expect(isinstance(content, str), "delta.content is not a string")
    reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
    _expect(isinstance(reasoning, str), "delta.reasoning_content is not a string")
    fragments: list[ToolCallFragment] = []
    raw_calls = delta.get("tool_calls") or []
    _expect(isinstance(raw_calls, list), "delta.tool_calls is not a list")
    for position, raw in enumerate(raw_calls):
        _expect(isinstance(raw, dict), "a tool call is not an object")
        index = raw.get("index", position)
        _expect(isinstance(index, int) and not isinstance(index, bool) and 0 <= index < 1024, "bad tool call index")
        call_id = raw.get("id")
        _expect(call_id is None or isinstance(call_id, str), "tool call id is not a string")
        fn = raw.get("function") or {}
        _expect(isinstance(fn, dict), "tool call function is not an object")
        name = fn.get("name")
        _expect(name is None or isinstance(name, str), "tool call name is not a string")
        args = fn.get("arguments") or ""
        if not isinstance(args, str):
            # Ollama's non-streaming form gives the arguments as an object.
            args = json.dumps(args)
        fragments.append(ToolCallFragment(index=index, id=call_id or None, name=name or None, arguments=args))
    return Delta(content=content, reasoning=reasoning, tool_calls=tuple(fragments), finish_reason=finish)


class ChatClient:
    """One model on one OpenAI-compatible server.

    ``timeout`` bounds connecting and each wait for more bytes (an idle timeout), not the whole
    answer: a long answer that keeps streaming is fine.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        model: str,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        *,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        extra_body: Mapping[str, Any] | None = None,
        trust_env: bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.max_request_bytes = max_request_bytes
        self._api_key = api_key or ""
        self._extra_body = dict(extra_body or {})
        self.url = self.base_url + "/chat/completions"
        self._trust_env = trust_env  # HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE
        self._http: httpx.AsyncClient | None = None

    async def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            # Building the client loads the CA bundle from disk: done once, off the loop.
            http = await asyncio.to_thread(
                httpx.AsyncClient, timeout=httpx.Timeout(self.timeout), trust_env=self._trust_env
            )
            if self._http is None:
                self._http = http
            else:
                await http.aclose()
        return self._http

    async def aclose(self) -> None:
        """Close pooled connections; the client can still be used afterwards (it reconnects)."""
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def secrets(self) -> tuple[str, ...]:
        """Strings that must never appear in events, errors or logs."""
        return (self._api_key,) if self._api_key else ()

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def __repr__(self) -> str:
        return f"ChatClient({_display_url(self.base_url)!r}, model={self.model!r})"

    def _error(self, message: str, hint: str | None = None) -> LLMError:
        return LLMError(self.redact(message), hint=self.redact(hint) if hint else None)

    async def stream(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None
    ) -> AsyncIterator[Delta]:
        """Send the conversation and yield the answer as it streams.

        Raises :class:`LLMError` for anything but a complete, well-formed answer. Cancelling the
        consuming task closes the HTTP connection.
        """
        body: dict[str, Any] = {"model": self.model, "messages": list(messages), "stream": True}
        if tools:
            body["tools"] = list(tools)
        body.update(self._extra_body)
        try:
            payload = json.dumps(body, ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise self._error(f"cannot encode the conversation as JSON: {exc}") from None
        if len(payload) > self.max_request_bytes:
            raise self._error(
                f"the request to the model is {len(payload)} bytes, over the limit of {self.max_request_bytes}",
                "shorten the prompt or start a new session",
            )
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        where = _display_url(self.url)
        log.debug("chat completion request to %s (model %s, %d bytes)", where, self.model, len(payload))
        http = await self._client()
        try:
            async with http.stream("POST", self.url, content=payload, headers=headers) as response:
                if response.status_code != 200:
                    raise await self._http_error(response, where)
                ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if ctype == "application/json":
                    async for delta in self._whole(response):
                        yield delta
                    return
                async for delta in self._events(response, ctype):
                    yield delta
        except LLMError:
            raise
        except httpx.ConnectError as exc:
            raise self._error(
                f"cannot connect to the model server at {where}: {_snippet(str(exc)) or type(exc).__name__}",
                "check the base URL in the host config (or OPENAI_BASE_URL) and that the server runs",
            ) from None
        except httpx.TimeoutException:
            raise self._error(
                f"the model server at {where} did not answer within {self.timeout:g} s",
                "the server may be overloaded; try again, or raise the timeout",
            ) from None
        except httpx.RemoteProtocolError as exc:
            raise self._error(
                f"the model server at {where} broke off the answer: {_snippet(str(exc)) or 'connection closed'}"
            ) from None
        except httpx.HTTPError as exc:
            raise self._error(f"talking to the model server at {where} failed: {type(exc).__name__}: "
                              f"{_snippet(str(exc))}") from None
        except httpx.InvalidURL:
            raise self._error(f"the model server URL {where!r} is not valid") from None

    async def _http_error(self, response: httpx.Response, where: str) -> LLMError:
        raw = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                raw += chunk
                if len(raw) > 64 * 1024:
                    break
        except httpx.HTTPError:
            pass
        text = raw.decode("utf-8", errors="replace")
        detail = text
        try:
            obj = json.loads(text)
            if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
                detail = str(obj["error"].get("message", text))
            elif isinstance(obj, dict) and isinstance(obj.get("error"), str):
                detail = obj["error"]
        except ValueError:
            pass
        status = response.status_code
        hint = None
        if status in (401, 403):
            hint = "check the API key in the host config (or OPENAI_API_KEY)"
        elif status == 404:
            hint = "check the base URL (it usually ends in /v1) and the model name"
        elif status == 429:
            hint = "the server is rate limiting; wait and try again"
        detail = _snippet(detail) or response.reason_phrase
        return self._error(f"the model server at {where} answered HTTP {status}: {detail}", hint)

    async def _bounded(self, response: httpx.Response) -> AsyncIterator[bytes]:
        total = 0
        async for chunk in response.aiter_bytes():
            total += len(chunk)
            if total > self.max_response_bytes:
                raise self._error(f"the model's answer is larger than {self.max_response_bytes} bytes; gave up")
            yield chunk

    async def _whole(self, response: httpx.Response) -> AsyncIterator[Delta]:
        raw = bytearray()
        async for chunk in self._bounded(response):
            raw += chunk
        try:
            obj = json.loads(raw)
        except ValueError:
            shown = _snippet(raw.decode(errors="replace"))
            raise self._error(f"the model server sent a body that is not JSON: {shown!r}") from None
        delta = self._parse(obj)
        if delta is None or delta.finish_reason is None:
            raise self._error("the model server's answer has no finish_reason")
        yield delta

    def _parse(self, obj: Any) -> Delta | None:
        try:
            return parse_chunk(obj)
        except LLMError as exc:
            raise self._error(exc.message) from None

    async def _events(self, response: httpx.Response, ctype: str) -> AsyncIterator[Delta]:
        decoder = SSEDecoder()
        finished = False
        done = False
        seen_event = False
        head = bytearray()  # the first bytes, to show when no event ever comes (an HTML page...)
        async for chunk in self._bounded(response):
            if len(head) < MAX_ERROR_SNIPPET:
                head += chunk[: MAX_ERROR_SNIPPET - len(head)]
            try:
                events = decoder.feed(chunk)
            except LLMError as exc:
                raise self._error(exc.message) from None
            seen_event = seen_event or bool(events)
            for data in events:
                if data.strip() == "[DONE]":
                    done = True
                    break
                delta = self._decode(data)
                if delta is not None:
                    finished = finished or delta.finish_reason is not None
                    yield delta
            if done:
                return
        for data in decoder.close():
            seen_event = True
            if data.strip() == "[DONE]":
                return
            delta = self._decode(data)
            if delta is not None:
                finished = finished or delta.finish_reason is not None
                yield delta
        if not seen_event:
            shown = _snippet(head.decode("utf-8", errors="replace")) or "an empty body"
            raise self._error(
                f"the model server sent no server-sent events (content type {ctype or 'none'!r}): {shown!r}",
                "is the base URL an OpenAI-compatible API (it usually ends in /v1)?",
            )
        if not finished:
            raise self._error("the model server closed the stream before the answer was finished (no [DONE])")

    def _decode(self, data: str) -> Delta | None:
        try:
            obj = json.loads(data)
        except ValueError:
            raise self._error(f"the model server sent a line that is not JSON: {_snippet(data, 120)!r}") from None
        return self._parse(obj)
