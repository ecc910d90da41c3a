"""One Claude Code process in stream-json mode, and the control channel to it.

The process lives as long as the session: each prompt is one ``user`` line on its stdin, and
Claude Code keeps the conversation between them. Everything it writes is decoded by
:class:`~tether.agents.claude.stream.LineDecoder` and handed, in order, to the handler — except
the answers to our own control requests (``initialize``, ``interrupt``), which complete
:meth:`ClaudeProcess.request`. When the process ends, waiting requests fail with
:class:`ClaudeExited` and an :class:`Exited` event is delivered last.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tether.agents.claude.binary import ClaudeBinary, ClaudeError
from tether.agents.claude.stream import (
    ControlResponse,
    LineDecoder,
    Message,
    Result,
    StreamError,
    control_request,
    encode,
)
from tether.agents.jsonl_process import Exited as Exited  # re-exported: the last event of this process
from tether.agents.jsonl_process import JsonlProcess

log = logging.getLogger("tether.agents.claude.process")

READ_CHUNK = 256 * 1024
INITIALIZE_TIMEOUT_SECONDS = 60.0


class ClaudeExited(ClaudeError):
    """The Claude Code process is gone."""

    code = "claude_exited"


Event = Message | Exited
Handler = Callable[[Event], None]


class ClaudeProcess(JsonlProcess):
    """The process and its stdio. ``handler`` runs on the reading task: it must be quick."""

    label = "Claude Code"
    stderr_drain_seconds = 1.0  # its last lines say why Claude Code stopped

    def __init__(self, binary: ClaudeBinary, handler: Handler) -> None:
        super().__init__()
        self.binary = binary
        self.handler = handler
        self.info: dict[str, Any] = {}
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._last_result: Result | None = None

    @classmethod
    async def start(
        cls, binary: ClaudeBinary, args: Sequence[str], *, cwd: str | os.PathLike[str],
        env: Mapping[str, str], handler: Handler,
    ) -> ClaudeProcess:
        """Spawn ``binary args`` with exactly ``env`` and complete the ``initialize`` handshake."""
        self = cls(binary, handler)
        try:
            await self._spawn([os.fspath(binary.path), *args], cwd=cwd, env=env, task_name="claude")
        except OSError as exc:
            raise ClaudeError(f"could not start {binary.path}: {exc}") from None
        self.info = await self._handshake(self.request("initialize"), INITIALIZE_TIMEOUT_SECONDS, ClaudeError)
        return self

    # -- writing -------------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        await self._write_line(encode(message))

    async def request(self, subtype: str, **fields: Any) -> dict[str, Any]:
        """Send a control request and wait for its answer; :class:`ClaudeError` if refused."""
        request_id = f"tether-{next(self._ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self.send(control_request(request_id, subtype, **fields))
            return await future
        finally:
            self._pending.pop(request_id, None)

    async def reply(self, message: dict[str, Any]) -> bool:
        """Send an answer to one of Claude Code's requests; False when the process is gone."""
        try:
            await self.send(message)
        except ClaudeExited:
            return False
        return True

    # -- reading -------------------------------------------------------------------------------

    async def _read_stdout(self, stdout: asyncio.StreamReader) -> None:
        decoder = LineDecoder()
        while True:
            chunk = await stdout.read(READ_CHUNK)
            for item in decoder.feed(chunk) if chunk else decoder.end():
                self._dispatch(item)
            if not chunk:
                break

    def _dispatch(self, item: Message | StreamError) -> None:
        if isinstance(item, StreamError):
            log.warning("Claude Code wrote a line tether cannot read: %s", item.message)
            return
        if isinstance(item, ControlResponse):
            future = self._pending.get(item.request_id)
            if future is None or future.done():
                log.debug("Claude Code answered an unknown control request %r", item.request_id)
            elif item.ok:
                future.set_result(item.response)
            else:
                future.set_exception(ClaudeError(f"Claude Code refused the request: {item.error}"))
            return
        if isinstance(item, Result):
            self._last_result = item
        self._deliver(item)

    def _deliver(self, event: Event) -> None:
        try:
            self.handler(event)
        except Exception:
            log.exception("claude event handler failed on %s", type(event).__name__)

    async def _after_exit(self) -> None:
        error = self.exited_error("request lost")
        for future in list(self._pending.values()):
            if not future.done():
                future.set_exception(error)
        self._deliver(self._exited_event())

    def exited_error(self, what: str) -> ClaudeExited:
        return ClaudeExited(f"{self.exit_message()}: {what}", hint=self.stderr_hint())

    def stderr_hint(self) -> str | None:
        lines = [line.strip() for line in self._stderr_tail if line.strip() and not line.startswith("[claude-code:")]
        if self._last_result is not None and self._last_result.is_error:
            lines.append(self._last_result.message)
        return f"its last output: {lines[-1][:300]}" if lines else None

