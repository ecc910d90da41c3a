"""One terminal session on the host: a program in a pseudo-terminal, recorded as events.

Its output goes into the log as ``session.output`` (batched, decoded as UTF-8 across reads),
keystrokes and resizes are delivered to the program and then logged, and its end is
``session.exited`` with the exit code or signal. It is the terminal counterpart of
:class:`~tether.host.agent_session.AgentSession`: the session manager drives both the same way.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Any, Protocol

from tether.agents.base import Decision, TurnSettings
from tether.agents.pty import PtyError
from tether.errors import TetherError
from tether.host.eventlog import Event, EventLog
from tether.protocol.events import EventType

log = logging.getLogger(__name__)

# Output arriving within this window is appended as one event: a burst of small writes becomes
# one row and one wake-up for subscribers, at the cost of a few ms of latency.
OUTPUT_BATCH_SECONDS = 0.005
OUTPUT_BATCH_BYTES = 256 * 1024
OUTPUT_EVENT_CHARS = 64 * 1024


class TerminalError(TetherError):
    code = "session"


class TerminalProcess(Protocol):
    """What a terminal session needs of its program (PtyProcess is one)."""

    async def read(self) -> bytes: ...
    def read_nowait(self) -> bytes | None: ...
    def write(self, data: bytes) -> None: ...
    def resize(self, cols: int, rows: int) -> None: ...
    def interrupt(self) -> None: ...
    def terminate(self) -> None: ...
    async def wait(self) -> int: ...
    def close(self) -> None: ...


class TerminalSession:
    def __init__(self, *, session_id: str, proc: TerminalProcess, log: EventLog, status_lock: asyncio.Lock) -> None:
        self.session_id = session_id
        self.proc = proc
        self.log = log
        # The manager's: the exit is appended under it, like every status change.
        self._status_lock = status_lock
        self.ended = asyncio.Event()
        self._stop_reason: str | None = None
        self._pump: asyncio.Task[None] | None = None

    async def begin(self) -> None:
        """Start moving output into the log (once ``session.started`` is in it)."""
        self._pump = asyncio.create_task(self._run(), name=f"tether-session-{self.session_id}")

    async def abandon(self) -> None:
        """The session could not be recorded as started: stop the program, log nothing."""
        self.proc.terminate()
        self.proc.close()
        self.ended.set()

    async def models(self) -> list[dict[str, Any]]:
        raise TerminalError("a terminal session has no model to choose", code="bad_params")

    async def send_input(self, text: str, cid: str | None = None, settings: TurnSettings | None = None) -> Event:
        if settings is not None:
            raise TerminalError("a terminal session has no model to choose", code="bad_params")
        # Delivered first, then logged: input the program cannot take (input_full) or that comes
        # after it ended leaves no trace in the log. The append is queued to the database before
        # the output pump can run again, so the input still comes before the output it causes.
        self._deliver(lambda: self.proc.write(text.encode("utf-8")))
        return await self.log.append(self.session_id, EventType.SESSION_INPUT, {"text": text}, cid)

    async def interrupt(self, cid: str | None = None) -> Event:
        self._deliver(self.proc.interrupt)
        return await self.log.append(self.session_id, EventType.SESSION_INTERRUPTED, {}, cid)

    async def resize(self, cols: int, rows: int, cid: str | None = None) -> Event:
        self._deliver(lambda: self.proc.resize(cols, rows))
        return await self.log.append(self.session_id, EventType.SESSION_RESIZED, {"cols": cols, "rows": rows}, cid)

    async def approve(self, approval: str, decision: Decision, by: dict[str, str], cid: str | None = None) -> Event:
        raise TerminalError("a terminal session asks for no approvals", code="bad_params")

    async def answer(
        self, approval: str, answers: dict[str, list[str]], by: dict[str, str], cid: str | None = None
    ) -> Event:
        raise TerminalError("a terminal session asks no questions", code="bad_params")

    async def unqueue(self, queued: str, by: dict[str, str], cid: str | None = None) -> Event:
        raise TerminalError("a terminal session queues no prompts", code="bad_params")

    async def close(self) -> None:
        """Stop the program and wait until its end is recorded."""
        self._stop_reason = "host shutdown"
        self.proc.terminate()
        if self._pump is not None:
            with contextlib.suppress(Exception):
                await self._pump

    async def suspend(self) -> None:
        """The host stops: a terminal's program cannot outlive it, so it ends (recorded)."""
        await self.close()

    def _deliver(self, action: Callable[[], None]) -> None:
        try:
            action()
        except PtyError as exc:
            if exc.code == "exited":
                raise TerminalError(
                    "the session has finished", hint="start a new session", code="session_finished"
                ) from None
            raise TerminalError(exc.message, hint=exc.hint, code=exc.code) from None

    async def _run(self) -> None:
        """Move the program's output into the log, then record how it ended."""
        proc = self.proc
        # Incremental: a multibyte character split across two reads is decoded whole.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            eof = False
            while not eof:
                chunk = await proc.read()
                if not chunk:
                    break
                parts, size = [chunk], len(chunk)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + OUTPUT_BATCH_SECONDS
                while size < OUTPUT_BATCH_BYTES:
                    more = proc.read_nowait()
                    if more is None:
                        left = deadline - loop.time()
                        if left <= 0:
                            break
                        await asyncio.sleep(left)
                        continue
                    if not more:
                        eof = True
                        break
                    parts.append(more)
                    size += len(more)
                await self._append_output(decoder.decode(b"".join(parts)))
            await self._append_output(decoder.decode(b"", final=True))
            code = await proc.wait()
            async with self._status_lock:
                await self.log.append(self.session_id, EventType.SESSION_EXITED, _exit_data(code, self._stop_reason))
        except Exception:
            if not self.log.closed:
                log.exception("session %s: output pump failed", self.session_id)
            proc.terminate()
        finally:
            proc.close()
            self.ended.set()

    async def _append_output(self, text: str) -> None:
        # One transaction for the whole batch; events stay small enough for a client to
        # render each one at once.
        pieces = [text[i : i + OUTPUT_EVENT_CHARS] for i in range(0, len(text), OUTPUT_EVENT_CHARS)]
        await self.log.append_many(
            [(self.session_id, EventType.SESSION_OUTPUT, {"stream": "pty", "data": p}, None) for p in pieces]
        )


def _exit_data(code: int, reason: str | None) -> dict[str, Any]:
    if code >= 0:
        return {"exit_code": code, "signal": None, "reason": reason}
    sig = -code
    if reason is None:
        with contextlib.suppress(ValueError):
            reason = f"killed by {signal.Signals(sig).name}"
    return {"exit_code": None, "signal": sig, "reason": reason or f"killed by signal {sig}"}
