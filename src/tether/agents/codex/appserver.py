"""A client of ``codex app-server`` over stdio: JSON-RPC without the ``"jsonrpc"`` field, one
JSON message per line (see /work/shared/notes/codex-app-server.md for the protocol as observed).

Three kinds of message arrive from the server:

- responses to our requests (``request()`` awaits them);
- notifications (``turn/started``, ``item/agentMessage/delta`` …), delivered as
  :class:`Notification`;
- requests *to us* — above all approvals (``item/commandExecution/requestApproval``,
  ``item/fileChange/requestApproval``) — delivered as :class:`ServerRequest`, which stays open
  until someone calls :meth:`ServerRequest.respond` (a person on a phone may take minutes). When
  Codex stops waiting by itself (interrupt, turn end) it says ``serverRequest/resolved``; the
  request is then marked resolved and a late answer is dropped.

When the process exits, every request still waiting fails with :class:`AppServerExited`, open
server requests are closed, and an :class:`Exited` event is delivered last.

**Security boundary.** app-server will do whatever its client asks, including reading any file
(``fs/readFile``), running commands outside any approval (``command/exec``,
``thread/shellCommand``), rewriting its own config and handing out account tokens. tether's
remote clients must never reach those, so this client refuses every method not in
:data:`ALLOWED_METHODS` — before anything is written to the process — and refuses parameters that
smuggle the same powers into allowed methods (:data:`FORBIDDEN_PARAMS`).
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import itertools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tether.agents.codex.binary import CodexBinary, CodexError
from tether.agents.jsonl_process import Exited as Exited  # re-exported: the last event of this process
from tether.agents.jsonl_process import JsonlProcess
from tether.backoff import Backoff

log = logging.getLogger("tether.agents.codex.appserver")

# -- what tether may ask of app-server -------------------------------------------------------

# Every app-server method tether calls at all, with the tether scope (tether.protocol.scopes)
# a remote party needs for it. ``initialize`` is sent once by this client itself.
METHOD_SCOPES: dict[str, Literal["read", "prompt"]] = {
    "thread/list": "read",
    "thread/loaded/list": "read",
    "thread/read": "read",
    "thread/turns/list": "read",
    "thread/items/list": "read",
    "model/list": "read",
    "thread/start": "prompt",
    "thread/resume": "prompt",
    "thread/fork": "prompt",
    "thread/unsubscribe": "prompt",
    "thread/name/set": "prompt",
    "turn/start": "prompt",
    "turn/steer": "prompt",
    "turn/interrupt": "prompt",
    "review/start": "prompt",
    "thread/compact/start": "prompt",
}
ALLOWED_METHODS: frozenset[str] = frozenset(METHOD_SCOPES)

# Parameters of allowed methods that would widen what a caller can do: ``config`` overrides any
# config key (MCP servers = arbitrary commands, shell environment, providers); ``path`` and
# ``history`` make thread/resume read an arbitrary file; ``dynamicTools`` registers tools that
# call back into the client.
FORBIDDEN_PARAMS: frozenset[str] = frozenset({"config", "path", "history", "dynamicTools"})

# Server→client requests that are handed to the handler; any other one is refused at once so a
# turn never hangs on a question nobody will answer (attestation, token refresh…), but for those
# the client answers itself (ANSWERED).
COMMAND_APPROVAL = "item/commandExecution/requestApproval"
FILE_CHANGE_APPROVAL = "item/fileChange/requestApproval"
APPROVAL_METHODS: frozenset[str] = frozenset({COMMAND_APPROVAL, FILE_CHANGE_APPROVAL})
DELIVERED_SERVER_REQUESTS: frozenset[str] = APPROVAL_METHODS | {
    "item/permissions/requestApproval",
    "item/tool/requestUserInput",
    "mcpServer/elicitation/request",
}

# Answered at once by the client, without a person: the time (Codex asks when its user's config
# says the clock is external, and fails the turn without an answer) is the host's own.
ANSWERED_SERVER_REQUESTS: dict[str, Callable[[], dict[str, Any]]] = {
    "currentTime/read": lambda: {"currentTimeAt": int(time.time())},
}

APPROVAL_POLICIES: frozenset[str] = frozenset({"untrusted", "on-request", "never"})
SANDBOX_MODES: frozenset[str] = frozenset({"read-only", "workspace-write", "danger-full-access"})

# JSON-RPC error codes.
OVERLOADED = -32001  # app-server's bounded ingress queue is full: back off and retry
METHOD_NOT_FOUND = -32601
INTERNAL_ERROR = -32603

OVERLOAD_RETRIES = 6
STDOUT_LIMIT = 64 * 1024 * 1024  # one line = one message; thread/read with turns can be large
INITIALIZE_TIMEOUT_SECONDS = 30.0


class AppServerError(CodexError):
    code = "codex_appserver"


class RpcError(AppServerError):
    """app-server answered a request with a JSON-RPC error."""

    code = "codex_rpc"

    def __init__(self, method: str, rpc_code: int, rpc_message: str, data: Any = None) -> None:
        super().__init__(f"codex app-server refused {method}: {rpc_message} (code {rpc_code})")
        self.method = method
        self.rpc_code = rpc_code
        self.rpc_message = rpc_message
        self.data = data


class MethodNotAllowed(AppServerError):
    """tether never sends this method (or parameter) to app-server."""

    code = "codex_method_not_allowed"


class AppServerExited(AppServerError):
    """The app-server process is gone."""

    code = "codex_exited"

    def __init__(self, message: str, *, returncode: int | None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.returncode = returncode


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    method: str
    params: dict[str, Any]
    emitted_at_ms: int | None = None


@dataclass(frozen=True)
class RefusedRequest:
    """A server request refused at once (not in :data:`DELIVERED_SERVER_REQUESTS`), handed on
    after the refusal so the session can say what Codex was told no to."""

    method: str
    params: dict[str, Any]


class RequestState(enum.Enum):
    PENDING = "pending"
    ANSWERED = "answered"  # we sent a result or an error
    RESOLVED = "resolved"  # Codex stopped waiting (serverRequest/resolved) before we answered
    FAILED = "failed"  # the process exited before anyone answered


@dataclass(eq=False)
class ServerRequest:
    """A request from app-server to us, answered once, possibly much later.

    For approvals the result is ``{"decision": "accept" | "acceptForSession" | "decline" |
    "cancel"}`` (commands also allow the amendment objects listed in
    ``params["availableDecisions"]``).
    """

    id: int | str
    method: str
    params: dict[str, Any]
    _client: AppServer = field(repr=False)
    state: RequestState = RequestState.PENDING
    _closed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def thread_id(self) -> str | None:
        value = self.params.get("threadId")
        return value if isinstance(value, str) else None

    @property
    def item_id(self) -> str | None:
        value = self.params.get("itemId")
        return value if isinstance(value, str) else None

    @property
    def is_approval(self) -> bool:
        return self.method in APPROVAL_METHODS

    @property
    def pending(self) -> bool:
        return self.state is RequestState.PENDING

    async def respond(self, result: Mapping[str, Any]) -> bool:
        """Send ``result``. False (and nothing sent) when it is no longer pending."""
        if not self.pending:
            return False
        self._finish(RequestState.ANSWERED)
        return await self._client._send_reply({"id": self.id, "result": dict(result)})

    async def reject(self, message: str, code: int = INTERNAL_ERROR) -> bool:
        """Answer with a JSON-RPC error. False when it is no longer pending."""
        if not self.pending:
            return False
        self._finish(RequestState.ANSWERED)
        return await self._client._send_reply({"id": self.id, "error": {"code": code, "message": message}})

    async def wait_closed(self) -> RequestState:
        """Wait until it is answered, resolved by Codex, or failed."""
        await self._closed.wait()
        return self.state

    def _finish(self, state: RequestState) -> None:
        if self.state is RequestState.PENDING:
            self.state = state
            self._closed.set()
            self._client._server_requests.pop(self.id, None)


Event = Notification | ServerRequest | RefusedRequest | Exited
Handler = Callable[[Event], Awaitable[None] | None]


# -- the client --------------------------------------------------------------------------------


class AppServer(JsonlProcess):
    """One ``codex app-server`` process and the JSON-RPC connection to it.

    Events go to ``handler`` in the order they arrived (it runs on the reading task, so it must
    be quick: keep a :class:`ServerRequest` and answer it later), or, without a handler, into
    :attr:`events`.
    """

    label = "codex app-server"

    def __init__(self, binary: CodexBinary, *, handler: Handler | None = None) -> None:
        super().__init__()
        self.binary = binary
        self.handler = handler
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.info: dict[str, Any] = {}
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self._server_requests: dict[int | str, ServerRequest] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        binary: CodexBinary,
        *,
        codex_home: str | os.PathLike[str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        handler: Handler | None = None,
        client_version: str = "0",
        experimental_api: bool = False,
        opt_out_notifications: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        wrapper: Sequence[str] = (),
    ) -> AppServer:
        """Spawn ``codex app-server`` and complete the ``initialize`` handshake.

        The process gets the host's environment plus ``env`` (credentials stay on the host:
        tether never sends them anywhere), and ``CODEX_HOME`` when given. ``wrapper`` is an argv
        prefix it runs under (the sandbox's :func:`~tether.agents.sandbox.hiding`).
        """
        self = cls(binary, handler=handler)
        child_env = {**os.environ, **(env or {})}
        if codex_home is not None:
            child_env["CODEX_HOME"] = os.fspath(codex_home)
        try:
            await self._spawn(
                [*wrapper, os.fspath(binary.path), "app-server", *extra_args], cwd=cwd, env=child_env,
                task_name="codex-appserver", stdout_limit=STDOUT_LIMIT,
            )
        except OSError as exc:
            raise AppServerError(f"could not start {binary.path} app-server: {exc}") from None
        self.info = await self._handshake(
            self._initialize(client_version, experimental_api, opt_out_notifications),
            INITIALIZE_TIMEOUT_SECONDS, AppServerError,
        )
        return self

    async def _initialize(
        self, client_version: str, experimental_api: bool, opt_out_notifications: Sequence[str],
    ) -> dict[str, Any]:
        capabilities: dict[str, Any] = {"experimentalApi": experimental_api}
        if opt_out_notifications:
            capabilities["optOutNotificationMethods"] = list(opt_out_notifications)
        info: dict[str, Any] = await self._call(
            "initialize",
            {"clientInfo": {"name": "tether", "title": "tether", "version": client_version},
             "capabilities": capabilities},
        )
        await self._write({"method": "initialized"})
        return info

    @property
    def pending_server_requests(self) -> list[ServerRequest]:
        return list(self._server_requests.values())

    async def __aenter__(self) -> AppServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- requests ------------------------------------------------------------------------------

    async def request(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Call an allowed method and return its result; :class:`RpcError` on an error answer."""
        check_allowed(method, params)
        backoff = Backoff(first=0.05, maximum=2.0)
        for attempt in range(OVERLOAD_RETRIES + 1):
            try:
                return await self._call(method, dict(params or {}))
            except RpcError as exc:
                if exc.rpc_code != OVERLOADED or attempt == OVERLOAD_RETRIES:
                    raise
                delay = backoff.next_delay()
                log.info("codex app-server overloaded on %s; retrying in %.2f s", method, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def thread_start(
        self, cwd: str | os.PathLike[str], approval_policy: str, sandbox: str, model: str | None = None,
    ) -> dict[str, Any]:
        """Start a thread; the result is ``{"thread": {...}, "model", "cwd", "approvalPolicy", …}``."""
        _check_policy(approval_policy, sandbox)
        params = {"cwd": os.fspath(cwd), "approvalPolicy": approval_policy, "sandbox": sandbox, **_given(model=model)}
        result: dict[str, Any] = await self.request("thread/start", params)
        return result

    async def thread_resume(
        self, thread_id: str, *, approval_policy: str | None = None, sandbox: str | None = None,
        cwd: str | os.PathLike[str] | None = None, model: str | None = None,
    ) -> dict[str, Any]:
        """Reopen a stored thread (one started elsewhere too) and subscribe to its events.

        ``cwd`` moves the thread's work to that directory from now on (tether resumes a desktop
        thread in a workspace the host allows, whatever directory it was started in).
        """
        if approval_policy is not None or sandbox is not None:
            _check_policy(approval_policy, sandbox)
        params = {"threadId": thread_id, "excludeTurns": True, **_given(
            cwd=os.fspath(cwd) if cwd is not None else None, model=model, approvalPolicy=approval_policy,
            sandbox=sandbox)}
        result: dict[str, Any] = await self.request("thread/resume", params)
        return result

    async def thread_list(
        self, *, limit: int | None = None, cursor: str | None = None, cwd: str | None = None,
    ) -> dict[str, Any]:
        """Stored threads, newest first: ``{"data": [thread…], "nextCursor": …}``."""
        result: dict[str, Any] = await self.request("thread/list", _given(limit=limit, cursor=cursor, cwd=cwd))
        return result

    async def thread_read(self, thread_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("thread/read", {"threadId": thread_id})
        return result

    async def turn_start(
        self, thread_id: str, text: str, *, model: str | None = None, effort: str | None = None,
        collaboration_mode: dict[str, Any] | None = None, image_urls: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Send a user message (with images, as URLs: ``data:`` ones included); returns the new turn
        (``status: "inProgress"``) at once. ``model`` and ``effort`` apply to this turn and, in
        Codex, stay for the next ones."""
        given = [{"type": "text", "text": text}, *({"type": "image", "url": url} for url in image_urls)]
        params = {"threadId": thread_id, "input": given,
                  **_given(model=model, effort=effort, collaborationMode=collaboration_mode)}
        result: dict[str, Any] = await self.request("turn/start", params)
        turn: dict[str, Any] = result["turn"]
        return turn

    async def review_start(self, thread_id: str, target: dict[str, Any]) -> dict[str, Any]:
        """Start a review turn on the thread (inline); returns the turn at once."""
        result: dict[str, Any] = await self.request("review/start", {"threadId": thread_id, "target": target})
        turn: dict[str, Any] = result["turn"]
        return turn

    async def compact_start(self, thread_id: str) -> None:
        """Compact the thread's context; the turn that does it is announced by ``turn/started``."""
        await self.request("thread/compact/start", {"threadId": thread_id})

    async def turn_interrupt(self, thread_id: str, turn_id: str) -> None:
        """Interrupt a turn; it then ends with ``turn/completed`` status ``interrupted``."""
        await self.request("turn/interrupt", {"threadId": thread_id, "turnId": turn_id})

    async def model_list(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("model/list", {})
        return result

    # -- wire ----------------------------------------------------------------------------------

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        if self._exited.is_set() or self._proc is None:
            raise self.exited_error(f"cannot send {method}")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (method, future)
        try:
            await self._write({"id": request_id, "method": method, "params": params})
            return await future
        finally:
            self._pending.pop(request_id, None)

    async def _write(self, message: dict[str, Any]) -> None:
        await self._write_line(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    async def _send_reply(self, message: dict[str, Any]) -> bool:
        try:
            await self._write(message)
        except AppServerExited:
            return False
        return True

    async def _read_stdout(self, stdout: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await stdout.readline()
            except ValueError:  # a line above STDOUT_LIMIT: the stream is unusable now
                log.error("codex app-server sent a message larger than %d bytes", STDOUT_LIMIT)
                break
            if not line:
                break
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("codex app-server wrote a non-JSON line: %.200r", line)
                continue
            if isinstance(message, dict):
                await self._dispatch(message)

    async def _dispatch(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        if isinstance(method, str):
            params = message.get("params")
            params = params if isinstance(params, dict) else {}
            if "id" in message:
                await self._on_server_request(message["id"], method, params)
            else:
                emitted = message.get("emittedAtMs")
                await self._on_notification(
                    Notification(method, params, emitted if isinstance(emitted, int) else None)
                )
            return
        request_id = message.get("id")
        entry = self._pending.get(request_id) if isinstance(request_id, int) else None
        if entry is None:
            log.debug("codex app-server answered an unknown request id %r", request_id)
            return
        name, future = entry
        if future.done():
            return
        error = message.get("error")
        if isinstance(error, dict):
            future.set_exception(RpcError(name, int(error.get("code", 0)), str(error.get("message", "")),
                                          error.get("data")))
        else:
            future.set_result(message.get("result"))

    async def _on_server_request(self, request_id: int | str, method: str, params: dict[str, Any]) -> None:
        request = ServerRequest(request_id, method, params, self)
        answer = ANSWERED_SERVER_REQUESTS.get(method)
        if answer is not None:
            await request.respond(answer())
            return
        if method not in DELIVERED_SERVER_REQUESTS:
            log.info("refusing codex server request %s", method)
            await request.reject(f"tether does not handle {method}", METHOD_NOT_FOUND)
            await self._deliver(RefusedRequest(method, params))
            return
        self._server_requests[request_id] = request
        await self._deliver(request)

    async def _on_notification(self, notification: Notification) -> None:
        if notification.method == "serverRequest/resolved":
            request = self._server_requests.get(notification.params.get("requestId"))  # type: ignore[arg-type]
            if request is not None:
                request._finish(RequestState.RESOLVED)
        await self._deliver(notification)

    async def _deliver(self, event: Event) -> None:
        if self.handler is None:
            self.events.put_nowait(event)
            return
        try:
            outcome = self.handler(event)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            log.exception("codex event handler failed on %s", _describe(event))

    async def _after_exit(self) -> None:
        error = self.exited_error("request lost")
        for _name, future in list(self._pending.values()):
            if not future.done():
                future.set_exception(error)
        for request in list(self._server_requests.values()):
            request._finish(RequestState.FAILED)
        await self._deliver(self._exited_event())

    def exited_error(self, what: str) -> AppServerExited:
        return AppServerExited(f"{self.exit_message()}: {what}", returncode=self.returncode, hint=self.stderr_hint())


def check_allowed(method: str, params: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`MethodNotAllowed` unless tether may send ``method`` with ``params``."""
    if method not in ALLOWED_METHODS:
        raise MethodNotAllowed(
            f"the codex app-server method {method!r} is not available through tether",
            hint="tether passes on only thread, turn and model methods (see ALLOWED_METHODS)",
        )
    bad = sorted(FORBIDDEN_PARAMS.intersection(params or {}))
    if bad:
        raise MethodNotAllowed(f"parameter {bad[0]!r} of {method} is not available through tether")


def _given(**params: Any) -> dict[str, Any]:
    """The optional params of a request that were given (Codex takes an absent one as "keep")."""
    return {k: v for k, v in params.items() if v is not None}


def _check_policy(approval_policy: str | None, sandbox: str | None) -> None:
    if approval_policy is not None and approval_policy not in APPROVAL_POLICIES:
        raise CodexError(f"unknown approval policy {approval_policy!r}",
                         hint="use one of: " + ", ".join(sorted(APPROVAL_POLICIES)))
    if sandbox is not None and sandbox not in SANDBOX_MODES:
        raise CodexError(f"unknown sandbox mode {sandbox!r}", hint="use one of: " + ", ".join(sorted(SANDBOX_MODES)))


def _describe(event: Event) -> str:
    if isinstance(event, Exited):
        return "exit"
    return event.method


def default_codex_home() -> Path:
    """Where Codex keeps its state when CODEX_HOME is not set (threads started on the desktop)."""
    return Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex")
