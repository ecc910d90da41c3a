"""Request/response correlation over any message transport.

A *message transport* moves whole application messages (bytes) in order: the end-to-end
channel through the relay, or the host's local unix socket. :class:`RpcPeer` runs on top of
one: it sends requests and matches responses by id, passes incoming requests to a handler,
and incoming notifications to a callback. Both the host and the clients use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from tether.errors import TetherError
from tether.protocol.messages import (
    MAX_MESSAGE_BYTES,
    ErrorBody,
    Notification,
    ProtocolError,
    Request,
    Response,
    decode,
    encode,
)
from tether.protocol.transport import TransportClosed

log = logging.getLogger("tether.rpc")


class RemoteError(TetherError):
    """The other side answered a request with an error."""


class MessageTransport(Protocol):
    async def send(self, data: bytes) -> None: ...

    async def recv(self) -> bytes:
        """The next whole message; raises :class:`TransportClosed` when the transport ends."""
        ...

    async def close(self) -> None: ...


RequestHandler = Callable[[Request], Awaitable[Any]]
NotificationHandler = Callable[[Notification], Awaitable[None]]


class RpcPeer:
    """One side of an RPC conversation. Call :meth:`run` (or start it as a task)."""

    def __init__(
        self,
        transport: MessageTransport,
        *,
        on_request: RequestHandler | None = None,
        on_notification: NotificationHandler | None = None,
        max_concurrent_requests: int = 32,
    ) -> None:
        self.transport = transport
        self._on_request = on_request
        self._on_notification = on_notification
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        # Bounds the work one peer can make the other do at once.
        self._slots = asyncio.Semaphore(max_concurrent_requests)
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()
        self.close_error: TetherError = TransportClosed("the connection is closed")

    async def call(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = 30) -> Any:
        if self.closed.is_set():
            raise self.close_error
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self.transport.send(encode(Request(id=request_id, method=method, params=params or {})))
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(request_id, None)

    async def notify(self, method: str, params: dict[str, Any]) -> int:
        """Send a notification; returns its size in bytes (for flow control)."""
        data = encode(Notification(method=method, params=params))
        await self.transport.send(data)
        return len(data)

    async def run(self) -> None:
        """Read messages until the transport closes; then fail every pending call."""
        try:
            while True:
                data = await self.transport.recv()
                try:
                    message = decode(data)
                except ProtocolError as exc:
                    # An undecodable message may carry no readable id: then answer id 0.
                    await self._respond(exc.request_id, error=exc)
                    continue
                if isinstance(message, Response):
                    self._resolve(message)
                elif isinstance(message, Request):
                    await self._slots.acquire()
                    task = asyncio.create_task(self._handle(message))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif self._on_notification is not None:
                    # Awaited, not queued: a slow consumer slows this reader, the relay then
                    # closes the channel as too slow, and the client resumes from its cursor.
                    await self._on_notification(message)
        except TetherError as exc:
            # Kept as raised: callers tell a lost connection from a refusal by its type and code.
            self.close_error = exc
        finally:
            self.closed.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(self.close_error)
            for task in list(self._tasks):
                task.cancel()

    async def close(self) -> None:
        with contextlib.suppress(TetherError):
            await self.transport.close()

    def _resolve(self, response: Response) -> None:
        future = self._pending.get(response.id)
        if future is None or future.done():
            return
        if response.error is not None:
            err = response.error
            future.set_exception(RemoteError(err.message, hint=err.hint, code=err.code))
        else:
            future.set_result(response.result)

    async def _handle(self, request: Request) -> None:
        try:
            if self._on_request is None:
                raise ProtocolError(f"unknown method {request.method!r}", code="unknown_method")
            result = await self._on_request(request)
        except TetherError as exc:
            await self._respond(request.id, error=exc)
        except Exception:
            log.exception("request %s failed", request.method)
            await self._respond(
                request.id, error=TetherError("internal error on the host; see its log", code="internal")
            )
        else:
            await self._respond(request.id, result=result)
        finally:
            self._slots.release()

    async def _respond(self, request_id: int, *, result: Any = None, error: TetherError | None = None) -> None:
        body = None if error is None else ErrorBody(code=error.code, message=error.message, hint=error.hint)
        data = encode(Response(id=request_id, result=result, error=body))
        if len(data) > MAX_MESSAGE_BYTES:
            # The other side would refuse it and drop the connection: say so instead.
            body = ErrorBody(
                code="too_large", message=f"the answer would be {len(data)} bytes, more than {MAX_MESSAGE_BYTES}",
                hint="ask for less (a smaller limit or one session)",
            )
            data = encode(Response(id=request_id, result=None, error=body))
        with contextlib.suppress(TetherError):
            await self.transport.send(data)
