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
import collections
import contextlib
import itertools
import logging
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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

log = logging.getLogger("tether.agents.claude.process")

READ_CHUNK = 256 * 1024
STDERR_TAIL_LINES = 40
INITIALIZE_TIMEOUT_SECONDS = 60.0
TERMINATE_GRACE_SECONDS = 3.0


class ClaudeExited(ClaudeError):
    """The Claude Code process is gone."""

    code = "claude_exited"


@dataclass(frozen=True)
class Exited:
    """The process ended: the last event delivered."""

    returncode: int | None
    message: str
    stderr_tail: tuple[str, ...] = ()


Event = Message | Exited
Handler = Callable[[Event], None]


class ClaudeProcess:
    """The process and its stdio. ``handler`` runs on the reading task: it must be quick."""

    def __init__(self, binary: ClaudeBinary, handler: Handler) -> None:
        self.binary = binary
        self.handler = handler
        self.returncode: int | None = None
        self.info: dict[str, Any] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._last_result: Result | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._write_lock = asyncio.Lock()
        self._exited = asyncio.Event()
        self._closing = False

    @classmethod
    async def start(
        cls, binary: ClaudeBinary, args: Sequence[str], *, cwd: str | os.PathLike[str],
        env: Mapping[str, str], handler: Handler,
    ) -> ClaudeProcess:
        """Spawn ``binary args`` with exactly ``env`` and complete the ``initialize`` handshake."""
        self = cls(binary, handler)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                os.fspath(binary.path), *args,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                cwd=os.fspath(cwd), env=dict(env),
                # Its own process group: close() stops Claude Code and the commands it runs.
                start_new_session=True,
            )
        except OSError as exc:
            raise ClaudeError(f"could not start {binary.path}: {exc}") from None
        self._tasks = [
            asyncio.create_task(self._read_stdout(), name="claude-stdout"),
            asyncio.create_task(self._read_stderr(), name="claude-stderr"),
        ]
        try:
            async with asyncio.timeout(INITIALIZE_TIMEOUT_SECONDS):
                self.info = await self.request("initialize")
        except BaseException as exc:
            await self.close()
            if isinstance(exc, TimeoutError):
                raise ClaudeError(
                    f"Claude Code did not answer initialize within {INITIALIZE_TIMEOUT_SECONDS:.0f} s",
                    hint=self.stderr_hint(),
                ) from None
            raise
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and not self._exited.is_set()

    async def wait_exited(self) -> int | None:
        await self._exited.wait()
        return self.returncode

    async def close(self) -> None:
        """Stop the process group (TERM, then KILL after a grace period) and the reading tasks."""
        self._closing = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), TERMINATE_GRACE_SECONDS)
            except TimeoutError:
                _signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
        if proc is not None and proc.returncode is not None:
            # Commands Claude Code started may outlive it in the group; they must not outlive tether.
            _signal_group(proc.pid, signal.SIGKILL)
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), TERMINATE_GRACE_SECONDS)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if not self._exited.is_set():
            await self._on_exit()

    # -- writing -------------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or self._exited.is_set():
            raise self.exited_error("cannot write")
        data = encode(message)
        async with self._write_lock:
            try:
                proc.stdin.write(data)
                await proc.stdin.drain()
            except (ConnectionError, RuntimeError) as exc:
                raise self.exited_error(f"write failed ({exc})") from None

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

    async def _read_stdout(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        decoder = LineDecoder()
        try:
            while True:
                chunk = await proc.stdout.read(READ_CHUNK)
                for item in decoder.feed(chunk) if chunk else decoder.end():
                    self._dispatch(item)
                if not chunk:
                    break
        finally:
            if not self._exited.is_set():
                await self._on_exit()

    async def _read_stderr(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stderr is not None
        while line := await proc.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            self._stderr_tail.append(text)
            log.debug("claude: %s", text)

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

    async def _on_exit(self) -> None:
        if self._exited.is_set():
            return
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(Exception):
                self.returncode = await asyncio.wait_for(proc.wait(), TERMINATE_GRACE_SECONDS)
        # Let stderr drain: its last lines say why Claude Code stopped.
        if len(self._tasks) > 1:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._tasks[1]), 1.0)
        self._exited.set()
        error = self.exited_error("request lost")
        for future in list(self._pending.values()):
            if not future.done():
                future.set_exception(error)
        self._deliver(Exited(self.returncode, self.exit_message(), tuple(self._stderr_tail)))

    def exit_message(self) -> str:
        if self._closing:
            return "Claude Code was stopped"
        code = self.returncode
        if code is None:
            how = "closed its output"
        elif code < 0:
            how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        return f"Claude Code {how} unexpectedly"

    def exited_error(self, what: str) -> ClaudeExited:
        return ClaudeExited(f"{self.exit_message()}: {what}", hint=self.stderr_hint())

    def stderr_hint(self) -> str | None:
        lines = [line.strip() for line in self._stderr_tail if line.strip() and not line.startswith("[claude-code:")]
        if self._last_result is not None and self._last_result.is_error:
            lines.append(self._last_result.message)
        return f"its last output: {lines[-1][:300]}" if lines else None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
