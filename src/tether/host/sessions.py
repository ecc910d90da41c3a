"""Sessions: programs the host runs for its devices, recorded as events (ARCHITECTURE §7).

The manager owns the live sessions; everything a client can see about a session is in the event
log and its projection. Two kinds run: a terminal program in a pty (:class:`SessionProcess`,
started by the ``spawn`` function given to the manager: its output, input and size are logged
here), and an AI agent (:class:`~tether.host.agent_session.AgentSession` with its adapter, which
logs turns and items itself). The manager admits both under the same caps and keeps agents away
from the host's home (:func:`check_apart`).
"""

from __future__ import annotations

import asyncio
import builtins
import codecs
import contextlib
import logging
import os
import secrets
import shlex
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tether.agents.base import Decision
from tether.agents.policy import AgentConfig, Policy
from tether.agents.pty import PtyError, PtyProcess
from tether.agents.registry import load_agent
from tether.crypto.encoding import b32_encode
from tether.errors import TetherError
from tether.host import projection
from tether.host.agent_session import AgentSession
from tether.host.config import Limits
from tether.host.db import Database
from tether.host.eventlog import Event, EventLog
from tether.host.principal import Principal
from tether.host.projection import IllegalTransition, Status, check_transition
from tether.protocol.events import EventType

log = logging.getLogger(__name__)

# Output arriving within this window is appended as one event: a burst of small writes becomes
# one row and one wake-up for subscribers, at the cost of a few ms of latency.
OUTPUT_BATCH_SECONDS = 0.005
OUTPUT_BATCH_BYTES = 256 * 1024
OUTPUT_EVENT_CHARS = 64 * 1024
MAX_TERMINAL_SIZE = 1000
TITLE_CHARS = 80


class SessionError(TetherError):
    code = "session"


class SessionProcess(Protocol):
    """What a live session offers the manager (PtyProcess is one)."""

    async def read(self) -> bytes: ...
    def read_nowait(self) -> bytes | None: ...
    def write(self, data: bytes) -> None: ...
    def resize(self, cols: int, rows: int) -> None: ...
    def interrupt(self) -> None: ...
    def terminate(self) -> None: ...
    async def wait(self) -> int: ...
    def close(self) -> None: ...


Spawn = Callable[..., Awaitable[SessionProcess]]


async def spawn_pty(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None, cols: int, rows: int
) -> SessionProcess:
    return await PtyProcess.spawn(argv, cwd=cwd, env=env, cols=cols, rows=rows)


@dataclass
class _Live:
    id: str
    proc: SessionProcess
    pump: asyncio.Task[None] | None = None
    stop_reason: str | None = None


def new_session_id() -> str:
    return "s_" + b32_encode(secrets.token_bytes(7))[:10]


class SessionManager:
    def __init__(
        self,
        log: EventLog,
        db: Database,
        *,
        spawn: Spawn = spawn_pty,
        limits: Limits | None = None,
        limit_key: Callable[[str], str] = lambda key: f"limits.{key}",
        hidden: Sequence[Path] = (),
    ) -> None:
        self.log = log
        self.db = db
        # What no agent may see (the host's home): resolved once, checked against each workspace.
        self.hidden = [Path(os.path.realpath(p)) for p in hidden]
        self._spawn = spawn
        self.limits = limits or Limits()
        self._limit_key = limit_key  # where a refusal tells the owner to raise a limit
        self._live: dict[str, _Live] = {}
        self._agents: dict[str, AgentSession] = {}
        # Sessions starting or live -> who started them (None: the local owner), for the caps.
        self._started_by: dict[str, str | None] = {}
        # Serialises status changes so "check the transition, then append it" is atomic.
        self._status_lock = asyncio.Lock()
        self._closing = False

    async def start(self) -> None:
        """Close, in the log, sessions it says are live but that have no process here (the
        host stopped without recording their end)."""
        sessions = await self.db.run(projection.list_sessions, write=False)
        stale = [s for s in sessions if not Status(s["status"]).terminal and s["id"] not in self._live]
        if stale:
            data = {"exit_code": None, "signal": None, "reason": "host restarted"}
            await self.log.append_many([(s["id"], EventType.SESSION_EXITED, data, None) for s in stale])

    async def start_session(
        self,
        *,
        agent: str,
        workspace: Path,
        command: builtins.list[str],
        cid: str | None = None,
        cols: int = 80,
        rows: int = 24,
        env: dict[str, str] | None = None,
        caller: Principal | None = None,
    ) -> str:
        """Start ``command`` in ``workspace``; returns the new session's id once
        ``session.started`` is in the log. Raises SessionError when it cannot start."""
        if self._closing:
            raise SessionError("the host is shutting down", code="shutting_down")
        if not command or not all(isinstance(a, str) and a for a in command):
            raise SessionError("no command to run", code="bad_command")
        _check_size(cols, rows)
        sid = self._admit(caller)
        try:
            ws = await asyncio.to_thread(_resolve_dir, Path(workspace))
            proc = await self._spawn(command, cwd=ws, env=env, cols=cols, rows=rows)
        except PtyError as exc:
            self._started_by.pop(sid, None)
            raise SessionError(exc.message, hint=exc.hint, code=exc.code) from None
        except BaseException:
            self._started_by.pop(sid, None)
            raise
        live = _Live(sid, proc)
        self._live[sid] = live
        data = {
            "agent": agent,
            "workspace": str(ws),
            "command": list(command),
            "title": _title(command),
            "cols": cols,
            "rows": rows,
        }
        try:
            await self.log.append(sid, EventType.SESSION_STARTED, data, cid)
        except BaseException:
            del self._live[sid]
            self._started_by.pop(sid, None)
            proc.terminate()
            proc.close()
            raise
        live.pump = asyncio.create_task(self._pump(live), name=f"tether-session-{sid}")
        return sid

    async def start_agent_session(
        self,
        *,
        agent: str,
        workspace: Path,
        prompt: str,
        policy: Policy,
        config: AgentConfig,
        cid: str | None = None,
        caller: Principal | None = None,
    ) -> str:
        """Start an AI agent session and its first turn; returns the session id."""
        if self._closing:
            raise SessionError("the host is shutting down", code="shutting_down")
        agent_cls = load_agent(agent)
        sid = self._admit(caller)
        try:
            ws = await asyncio.to_thread(_resolve_dir, Path(workspace))
            check_apart(ws, self.hidden)
            session = AgentSession(
                session_id=sid, workspace=ws, policy=policy, config=config, log=self.log, agent_cls=agent_cls,
                hidden=self.hidden,
            )
            await session.agent.open()  # a clear error (no API key, no codex binary) before anything is logged
        except BaseException:
            self._started_by.pop(sid, None)
            raise
        self._agents[sid] = session
        data = {
            "agent": agent,
            "workspace": str(ws),
            "command": [],
            "title": _prompt_title(prompt),
            "cols": 80,
            "rows": 24,
            "policy": policy.to_json(),
        }
        try:
            await self.log.append(sid, EventType.SESSION_STARTED, data, cid)
            await session.start_turn(prompt)
        except BaseException:
            self._agents.pop(sid, None)
            self._started_by.pop(sid, None)
            await session.agent.close()
            raise
        return sid

    def _admit(self, caller: Principal | None) -> str:
        """A new session id, counted against the host's and the caller's caps from now on (before
        anything is awaited, so concurrent starts cannot both take the last place)."""
        for sid, agent in self._agents.items():
            if agent.ended.is_set():
                self._started_by.pop(sid, None)
        limits = self.limits
        if len(self._started_by) >= limits.max_sessions:
            raise SessionError(
                f"this host already runs {limits.max_sessions} live sessions, the most it allows"
                f" ({self._limit_key('max_sessions')})",
                hint="end a session (interrupt it, or exit its program), or ask the host's owner to raise the limit",
                code="limit",
            )
        if caller is not None and caller.kind != "local":
            mine = sum(1 for by in self._started_by.values() if by == caller.id)
            if mine >= limits.max_sessions_per_caller:
                raise SessionError(
                    f"{caller.describe()} already runs {limits.max_sessions_per_caller} live sessions, the most one"
                    f" device or token may ({self._limit_key('max_sessions_per_caller')})",
                    hint="end one of its sessions first, or ask the host's owner to raise the limit",
                    code="limit",
                )
        sid = new_session_id()
        self._started_by[sid] = None if caller is None or caller.kind == "local" else caller.id
        return sid

    async def approve(
        self, session_id: str, approval: str, decision: Decision, by: dict[str, str], cid: str | None = None
    ) -> Event:
        session = await self._require_agent(session_id)
        return await session.resolve(approval, decision, by, cid)

    async def _require_agent(self, session_id: str) -> AgentSession:
        session = self._agents.get(session_id)
        if session is not None and not session.ended.is_set():
            return session
        if await self.get(session_id) is None:
            raise SessionError("no such session", code="no_such_session")
        raise SessionError(
            "this session has no live agent (it ended, or is a terminal session)",
            hint="start a new session",
            code="session_finished",
        )

    async def send_input(self, session_id: str, text: str, cid: str | None = None) -> Event:
        if session_id in self._agents:
            return await (await self._require_agent(session_id)).start_turn(text, cid)
        live = await self._require_live(session_id)
        # Delivered first, then logged: input the program cannot take (input_full) or that comes
        # after it ended leaves no trace in the log. The append is queued to the database before
        # the output pump can run again, so the input still comes before the output it causes.
        self._deliver(live, lambda: live.proc.write(text.encode("utf-8")))
        return await self.log.append(session_id, EventType.SESSION_INPUT, {"text": text}, cid)

    async def interrupt(self, session_id: str, cid: str | None = None) -> Event:
        if session_id in self._agents:
            return await (await self._require_agent(session_id)).interrupt(cid)
        live = await self._require_live(session_id)
        self._deliver(live, live.proc.interrupt)
        return await self.log.append(session_id, EventType.SESSION_INTERRUPTED, {}, cid)

    async def resize(self, session_id: str, cols: int, rows: int, cid: str | None = None) -> Event:
        _check_size(cols, rows)
        live = await self._require_live(session_id)
        self._deliver(live, lambda: live.proc.resize(cols, rows))
        return await self.log.append(session_id, EventType.SESSION_RESIZED, {"cols": cols, "rows": rows}, cid)

    async def set_status(self, session_id: str, status: Status | str, cid: str | None = None) -> Event:
        """Move a live session to a non-terminal status (for adapters: waiting-for-approval,
        idle, running). Refuses an illegal transition with SessionError."""
        async with self._status_lock:
            current = await self.get(session_id)
            if current is None:
                raise SessionError("no such session", code="no_such_session")
            try:
                check_transition(current["status"], status)
                if Status(status).terminal:
                    raise IllegalTransition("a session ends only when its program exits")
            except IllegalTransition as exc:
                raise SessionError(exc.message, hint=exc.hint, code=exc.code) from None
            data = {"status": Status(status).value}
            return await self.log.append(session_id, EventType.SESSION_STATUS, data, cid)

    async def list(self) -> builtins.list[dict[str, Any]]:
        return await self.db.run(projection.list_sessions, write=False)

    async def get(self, session_id: str, *, with_scrollback: bool = False) -> dict[str, Any] | None:
        return await self.db.run(
            lambda c: projection.get_session(c, session_id, with_scrollback=with_scrollback), write=False
        )

    def is_live(self, session_id: str) -> bool:
        return session_id in self._live

    async def close(self) -> None:
        """Terminate every session and wait until their ends are recorded."""
        self._closing = True
        await asyncio.gather(*(s.close() for s in self._agents.values()), return_exceptions=True)
        for live in self._live.values():
            live.stop_reason = "host shutdown"
            live.proc.terminate()
        pumps = [live.pump for live in self._live.values() if live.pump is not None]
        await asyncio.gather(*pumps, return_exceptions=True)

    # -- internals -----------------------------------------------------------------------

    async def _require_live(self, session_id: str) -> _Live:
        live = self._live.get(session_id)
        if live is not None:
            return live
        if await self.get(session_id) is None:
            raise SessionError("no such session", code="no_such_session")
        raise SessionError("the session has finished", hint="start a new session", code="session_finished")

    def _deliver(self, live: _Live, action: Callable[[], None]) -> None:
        try:
            action()
        except PtyError as exc:
            if exc.code == "exited":
                raise SessionError(
                    "the session has finished", hint="start a new session", code="session_finished"
                ) from None
            raise SessionError(exc.message, hint=exc.hint, code=exc.code) from None

    async def _pump(self, live: _Live) -> None:
        """Move the program's output into the log, then record how it ended."""
        proc = live.proc
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
                await self._append_output(live, decoder.decode(b"".join(parts)))
            await self._append_output(live, decoder.decode(b"", final=True))
            code = await proc.wait()
            async with self._status_lock:
                await self.log.append(live.id, EventType.SESSION_EXITED, _exit_data(code, live.stop_reason))
        except Exception:
            if not self.log.closed:
                log.exception("session %s: output pump failed", live.id)
            proc.terminate()
        finally:
            proc.close()
            self._live.pop(live.id, None)
            self._started_by.pop(live.id, None)

    async def _append_output(self, live: _Live, text: str) -> None:
        # One transaction for the whole batch; events stay small enough for a client to
        # render each one at once.
        pieces = [text[i : i + OUTPUT_EVENT_CHARS] for i in range(0, len(text), OUTPUT_EVENT_CHARS)]
        await self.log.append_many(
            [(live.id, EventType.SESSION_OUTPUT, {"stream": "pty", "data": p}, None) for p in pieces]
        )


def _exit_data(code: int, reason: str | None) -> dict[str, Any]:
    if code >= 0:
        return {"exit_code": code, "signal": None, "reason": reason}
    sig = -code
    if reason is None:
        with contextlib.suppress(ValueError):
            reason = f"killed by {signal.Signals(sig).name}"
    return {"exit_code": None, "signal": sig, "reason": reason or f"killed by signal {sig}"}


def _check_size(cols: int, rows: int) -> None:
    if not (1 <= cols <= MAX_TERMINAL_SIZE and 1 <= rows <= MAX_TERMINAL_SIZE):
        raise SessionError(f"terminal size {cols}x{rows} is out of range (1 to {MAX_TERMINAL_SIZE})", code="bad_size")


def check_apart(workspace: Path, hidden: Sequence[Path]) -> None:
    """Refuse a workspace (resolved) that holds a hidden path or lies inside one: an agent may read
    and change its workspace, and the host's home holds its keys and the owner's socket."""
    for path in hidden:
        if path.is_relative_to(workspace) or workspace.is_relative_to(path):
            where = "contains" if path.is_relative_to(workspace) else "is inside"
            raise SessionError(
                f"refusing the workspace {workspace}: it {where} the tether home {path}, which holds keys",
                hint="use a project directory that does not contain the tether home, or run the host with"
                     " its home elsewhere (tether host --home DIR)",
                code="workspace_has_home",
            )


def _resolve_dir(path: Path) -> Path:
    resolved = path.expanduser().resolve()
    if not resolved.is_dir():
        raise SessionError(f"the workspace {path} is not a directory", code="no_such_workspace")
    return resolved


def _prompt_title(prompt: str) -> str:
    line = " ".join(prompt.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


def _title(command: Sequence[str]) -> str:
    title = " ".join([os.path.basename(command[0]), *(shlex.quote(a) for a in command[1:])])
    return title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1] + "…"
