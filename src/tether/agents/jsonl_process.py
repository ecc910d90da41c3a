"""A child process that speaks one JSON message a line on its stdin and stdout.

The agent CLIs tether drives (``codex app-server``, Claude Code in stream-json mode) live as long
as a session and run commands of their own. This is their lifecycle: each starts in a process
group of its own, so closing it stops those commands too; the last lines of its stderr are kept,
since they say why it stopped; writes are whole lines, one at a time; closing sends TERM, then
KILL after a grace period, then KILL to whatever is left in the group. Reading stdout — which
protocol it speaks — is the subclass's (:meth:`JsonlProcess._read_stdout`), as is what happens
once the process is gone (:meth:`JsonlProcess._after_exit`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from tether.errors import TetherError

log = logging.getLogger("tether.agents.jsonl_process")

STDERR_TAIL_LINES = 40
TERMINATE_GRACE_SECONDS = 3.0
DEFAULT_STDOUT_LIMIT = 64 * 1024  # asyncio's own default for one readline()

T = TypeVar("T")


@dataclass(frozen=True)
class Exited:
    """The process ended: the last event delivered."""

    returncode: int | None
    message: str
    stderr_tail: tuple[str, ...] = ()


class JsonlProcess(ABC):
    """The process, its stdio and the tasks reading it."""

    # How messages name the program ("Claude Code", "codex app-server").
    label: ClassVar[str]
    # How long the end of the process waits for stderr to close, so its last lines are kept.
    stderr_drain_seconds: ClassVar[float] = 0.0

    def __init__(self) -> None:
        self.returncode: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._tasks: list[asyncio.Task[None]] = []
        self._write_lock = asyncio.Lock()
        self._exited = asyncio.Event()
        self._closing = False

    async def _spawn(
        self, argv: Sequence[str], *, cwd: str | os.PathLike[str] | None, env: Mapping[str, str],
        task_name: str, stdout_limit: int = DEFAULT_STDOUT_LIMIT,
    ) -> None:
        """Start ``argv`` with exactly ``env`` and the reading tasks; OSError when it cannot start."""
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=os.fspath(cwd) if cwd is not None else None, env=dict(env),
            limit=stdout_limit,
            # Its own process group: close() signals the program and the commands it runs.
            start_new_session=True,
        )
        self._tasks = [
            asyncio.create_task(self._pump_stdout(), name=f"{task_name}-stdout"),
            asyncio.create_task(self._read_stderr(), name=f"{task_name}-stderr"),
        ]

    async def _handshake(self, answer: Awaitable[T], timeout: float, error: Callable[..., TetherError]) -> T:
        """Await the first exchange; if it fails, close the process, and say so if it timed out."""
        try:
            async with asyncio.timeout(timeout):
                return await answer
        except BaseException as exc:
            await self.close()
            if isinstance(exc, TimeoutError):
                raise error(
                    f"{self.label} did not answer initialize within {timeout:.0f} s", hint=self.stderr_hint(),
                ) from None
            raise

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
            # Commands the program started may outlive it in the group; they must not outlive tether.
            _signal_group(proc.pid, signal.SIGKILL)
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), TERMINATE_GRACE_SECONDS)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if not self._exited.is_set():
            await self._on_exit()

    async def _write_line(self, data: bytes) -> None:
        """Write one encoded message (ending in a newline); the exited error when it cannot."""
        proc = self._proc
        if proc is None or proc.stdin is None or self._exited.is_set():
            raise self.exited_error("cannot write")
        async with self._write_lock:
            try:
                proc.stdin.write(data)
                await proc.stdin.drain()
            except (ConnectionError, RuntimeError) as exc:
                raise self.exited_error(f"write failed ({exc})") from None

    # -- reading -------------------------------------------------------------------------------

    @abstractmethod
    async def _read_stdout(self, stdout: asyncio.StreamReader) -> None:
        """Read and handle messages until the end of ``stdout``."""

    @abstractmethod
    async def _after_exit(self) -> None:
        """Fail what still waits for an answer and deliver the :class:`Exited` event."""

    @abstractmethod
    def exited_error(self, what: str) -> TetherError:
        """The error for something that could not be done because the process is gone."""

    async def _pump_stdout(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        try:
            await self._read_stdout(proc.stdout)
        finally:
            if not self._exited.is_set():
                await self._on_exit()

    async def _read_stderr(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stderr is not None
        while line := await proc.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            self._stderr_tail.append(text)
            log.debug("%s: %s", self.label, text)

    async def _on_exit(self) -> None:
        if self._exited.is_set():
            return
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(Exception):
                self.returncode = await asyncio.wait_for(proc.wait(), TERMINATE_GRACE_SECONDS)
        if self.stderr_drain_seconds and len(self._tasks) > 1:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._tasks[1]), self.stderr_drain_seconds)
        self._exited.set()
        await self._after_exit()

    def exit_message(self) -> str:
        if self._closing:
            return f"{self.label} was stopped"
        code = self.returncode
        if code is None:
            how = "closed its output"
        elif code < 0:
            how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        return f"{self.label} {how} unexpectedly"

    def stderr_hint(self) -> str | None:
        lines = [line for line in self._stderr_tail if line.strip()]
        return f"its last output: {lines[-1][:300]}" if lines else None

    def _exited_event(self) -> Exited:
        return Exited(self.returncode, self.exit_message(), tuple(self._stderr_tail))


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
