"""Sessions: agents the host runs for its devices, recorded as events (ARCHITECTURE §7).

The manager owns the live sessions; everything a client can see about a session is in the event
log and its projection. What runs is an agent of the registry (:mod:`tether.agents.registry`):
a *turns* agent as an :class:`~tether.host.agent_session.AgentSession` with its adapter, which logs
turns and items, or a *terminal* agent (pty) as a
:class:`~tether.host.terminal_session.TerminalSession`, which logs output, input and size. Both
offer the manager the same :class:`LiveSession`; it admits them under the same caps and keeps
agents away from the host's home (:func:`check_apart`).
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import logging
import os
import secrets
import shlex
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from tether.agents.base import Decision, Resumed, TurnSettings
from tether.agents.policy import AgentConfig, Policy
from tether.agents.pty import PtyError
from tether.agents.registry import AgentSpec, Kind, agent_spec
from tether.crypto.encoding import b32_encode
from tether.errors import TetherError
from tether.host import projection, resume
from tether.host.agent_session import AgentSession
from tether.host.config import Limits
from tether.host.db import Database
from tether.host.eventlog import AppendItem, Event, EventLog
from tether.host.principal import Principal
from tether.host.projection import ApprovalConflict, IllegalTransition, Status, check_transition
from tether.host.terminal_session import TerminalSession
from tether.protocol.events import EventType

MAX_TERMINAL_SIZE = 1000
TITLE_CHARS = 80

log = logging.getLogger(__name__)


class SessionError(TetherError):
    code = "session"


class LiveSession(Protocol):
    """What the manager asks of a running session, whatever its agent."""

    ended: asyncio.Event

    async def send_input(self, text: str, cid: str | None = None, settings: TurnSettings | None = None) -> Event:
        ...
    async def models(self) -> builtins.list[dict[str, Any]]: ...
    async def answer(
        self, approval: str, answers: dict[str, builtins.list[str]], by: dict[str, str], cid: str | None = None
    ) -> Event: ...
    async def unqueue(self, queued: str, by: dict[str, str], cid: str | None = None) -> Event: ...
    async def interrupt(self, cid: str | None = None) -> Event: ...
    async def resize(self, cols: int, rows: int, cid: str | None = None) -> Event: ...
    async def approve(self, approval: str, decision: Decision, by: dict[str, str], cid: str | None = None) -> Event:
        ...
    async def close(self) -> None:
        """Stop it and wait until its end is recorded."""
        ...

    async def suspend(self) -> None:
        """The host stops: stop it, keeping what may go on after a restart (an agent's
        conversation), and wait until that is recorded."""
        ...

    async def abandon(self) -> None:
        """It could not be recorded as started: stop it, log nothing."""
        ...


# A session made ready to start: it, what session.started says of it, and what starts it.
Opened = tuple[LiveSession, dict[str, Any], Callable[[], Awaitable[None]]]


def new_session_id() -> str:
    return "s_" + b32_encode(secrets.token_bytes(7))[:10]


class SessionManager:
    def __init__(
        self,
        log: EventLog,
        db: Database,
        *,
        limits: Limits | None = None,
        limit_key: Callable[[str], str] = lambda key: f"limits.{key}",
        hidden: Sequence[Path] = (),
        resume_as: Callable[[str, Policy, str], tuple[AgentConfig, Policy, Path]] | None = None,
    ) -> None:
        self.log = log
        self.db = db
        # What no agent may see (the host's home): resolved once, checked against each workspace.
        self.hidden = [Path(os.path.realpath(p)) for p in hidden]
        self.limits = limits or Limits()
        self._limit_key = limit_key  # where a refusal tells the owner to raise a limit
        self._live: dict[str, LiveSession] = {}
        # Sessions starting or live -> who started them (None: the local owner), for the caps.
        self._started_by: dict[str, str | None] = {}
        # Serialises status changes so "check the transition, then append it" is atomic.
        self._status_lock = asyncio.Lock()
        self._closing = False
        # What a session resumed after a restart runs under: the host's config of its agent now, its
        # recorded policy and workspace as the host allows them now (blocking: run in a thread).
        self._resume_as = resume_as or (lambda agent, policy, ws: (AgentConfig(agent), policy, _resolve_dir(Path(ws))))
        self._resuming: dict[str, asyncio.Lock] = {}  # one resume at a time per session

    async def start(self) -> None:
        """Put in order, in the log, sessions it says are live but that have no process here (the
        host stopped, perhaps without a word): a terminal's program is gone, so it ended; an
        agent's conversation goes on with the next prompt (:mod:`tether.host.resume`), what its
        turn was doing is said lost."""
        sessions = await self.db.run(projection.list_sessions, write=False)
        stale = [s for s in sessions if not Status(s["status"]).terminal and s["id"] not in self._live]
        ended = {"exit_code": None, "signal": None, "reason": "host restarted"}
        items: builtins.list[AppendItem] = []
        for s in stale:
            if _resumable(s):
                items += await self.db.run(functools.partial(resume.suspension, session=s), write=False)
            else:
                items.append((s["id"], EventType.SESSION_EXITED, ended, None))
        if items:
            await self.log.append_many(items)

    async def start_session(
        self,
        *,
        agent: str,
        workspace: Path,
        command: builtins.list[str] | None = None,
        prompt: str | None = None,
        policy: Policy | None = None,
        config: AgentConfig | None = None,
        cid: str | None = None,
        cols: int = 80,
        rows: int = 24,
        env: dict[str, str] | None = None,
        caller: Principal | None = None,
    ) -> str:
        """Start a session of ``agent`` in ``workspace``: a terminal agent runs ``command`` at
        ``cols``×``rows``, a turns agent works on ``prompt`` under ``policy``. Returns the new
        session's id once ``session.started`` is in the log (and a first turn started). Raises
        SessionError when it cannot start."""
        if self._closing:
            raise SessionError("the host is shutting down", code="shutting_down")
        spec = agent_spec(agent)
        opener: Callable[[str, Path], Awaitable[Opened]]
        if spec.kind is Kind.TERMINAL:
            if not command or not all(isinstance(a, str) and a for a in command):
                raise SessionError("no command to run", code="bad_command")
            _check_size(cols, rows)
            opener = functools.partial(self._open_terminal, spec, command, env, cols, rows)
        else:
            if not prompt:
                raise SessionError(f"a {agent} session needs a prompt", code="bad_prompt")
            opener = functools.partial(self._open_agent, spec, prompt, policy, config)
        sid = self._admit(caller)
        try:
            ws = await asyncio.to_thread(_resolve_dir, Path(workspace))
            session, data, begin = await opener(sid, ws)
        except PtyError as exc:
            self._started_by.pop(sid, None)
            raise SessionError(exc.message, hint=exc.hint, code=exc.code) from None
        except BaseException:
            self._started_by.pop(sid, None)
            raise
        self._live[sid] = session
        try:
            data = {"agent": agent, "workspace": str(ws), **data}
            await self.log.append(sid, EventType.SESSION_STARTED, data, cid)
            await begin()
        except BaseException:
            self._live.pop(sid, None)
            self._started_by.pop(sid, None)
            await session.abandon()
            raise
        return sid

    async def _open_terminal(
        self, spec: AgentSpec, command: builtins.list[str], env: dict[str, str] | None, cols: int, rows: int,
        sid: str, ws: Path,
    ) -> Opened:
        proc = await spec.load()(command, cwd=ws, env=env, cols=cols, rows=rows)
        session = TerminalSession(session_id=sid, proc=proc, log=self.log, status_lock=self._status_lock)
        return session, {"command": list(command), "title": _title(command), "cols": cols, "rows": rows}, session.begin

    async def _open_agent(
        self, spec: AgentSpec, prompt: str, policy: Policy | None, config: AgentConfig | None, sid: str, ws: Path,
    ) -> Opened:
        policy = policy or Policy()
        session = await self._agent_session(spec, sid, ws, policy, config or AgentConfig(spec.name), None)
        data = {"command": [], "title": _prompt_title(prompt), "cols": 80, "rows": 24, "policy": policy.to_json(),
                "conversation": session.agent.conversation()}

        async def first_turn() -> None:
            await session.send_input(prompt)

        return session, data, first_turn

    async def _agent_session(
        self, spec: AgentSpec, sid: str, ws: Path, policy: Policy, config: AgentConfig, resumed: Resumed | None,
    ) -> AgentSession:
        """An agent session, its adapter open: a clear error (no API key, no codex binary)
        before anything is logged."""
        check_apart(ws, self.hidden)
        session = AgentSession(
            session_id=sid, workspace=ws, policy=policy, config=config, log=self.log, agent_cls=spec.load(),
            hidden=self.hidden, resumed=resumed,
        )
        await session.agent.open()
        return session

    async def _resume(self, session_id: str, row: dict[str, Any], caller: Principal | None) -> LiveSession:
        """Open again the agent of a session the host had before it restarted, on the same
        conversation; it counts against the caps of ``caller``, who drives it now."""
        lock = self._resuming.setdefault(session_id, asyncio.Lock())
        async with lock:
            live = self._live.get(session_id)
            if live is not None and not live.ended.is_set():
                return live  # resumed by a call that held the lock before this one
            if self._closing:
                raise SessionError("the host is shutting down", code="shutting_down")
            spec = agent_spec(row["agent"])
            try:
                config, policy, ws = await asyncio.to_thread(
                    self._resume_as, spec.name, Policy.from_json(row["policy"] or {}), row["workspace"])
            except TetherError as exc:
                raise SessionError(f"this session cannot go on: {exc.message}", hint=exc.hint or "start a new session",
                                   code=exc.code) from None
            if not config.enabled:
                raise SessionError(f"the {spec.name} agent is disabled on this host, so this session cannot go on",
                                   hint="start a session with another agent", code="bad_agent")
            self._admit(caller, session_id)
            try:
                facts = await self.db.run(lambda c: resume.resumed(c, session_id), write=False)
                session = await self._agent_session(spec, session_id, ws, policy, config, facts)
            except TetherError as exc:
                self._started_by.pop(session_id, None)
                raise SessionError(f"the {spec.name} agent cannot pick this conversation up: {exc.message}",
                                   hint=exc.hint or "start a new session", code=exc.code) from None
            except BaseException:
                self._started_by.pop(session_id, None)
                raise
            self._live[session_id] = session
            self._resuming.pop(session_id, None)  # later callers find it live
            log.info("session %s: %s resumed after a host restart", session_id, spec.name)
            return session

    def _admit(self, caller: Principal | None, resumed: str | None = None) -> str:
        """A new session id, counted against the host's and the caller's caps from now on (before
        anything is awaited, so concurrent starts cannot both take the last place)."""
        for sid, session in builtins.list(self._live.items()):
            if session.ended.is_set():
                del self._live[sid]
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
        sid = resumed or new_session_id()
        self._started_by[sid] = None if caller is None or caller.kind == "local" else caller.id
        return sid

    async def approve(
        self, session_id: str, approval: str, decision: Decision, by: dict[str, str], cid: str | None = None
    ) -> Event:
        return await (await self._require_live(session_id, asked=approval)).approve(approval, decision, by, cid)

    async def send_input(
        self, session_id: str, text: str, cid: str | None = None, settings: TurnSettings | None = None,
        caller: Principal | None = None,
    ) -> Event:
        """A prompt (or a line for a terminal); an agent session the host had before it restarted
        picks its conversation up first."""
        return await (await self._require_live(session_id, resume=True, caller=caller)).send_input(text, cid, settings)

    async def answer(
        self, session_id: str, approval: str, answers: dict[str, builtins.list[str]], by: dict[str, str],
        cid: str | None = None,
    ) -> Event:
        return await (await self._require_live(session_id, asked=approval)).answer(approval, answers, by, cid)

    async def unqueue(self, session_id: str, queued: str, by: dict[str, str], cid: str | None = None) -> Event:
        return await (await self._require_live(session_id)).unqueue(queued, by, cid)

    async def models(
        self, session_id: str, caller: Principal | None = None, *, resume: bool = True,
    ) -> builtins.list[dict[str, Any]]:
        """The agent's models; ``resume``: an agent of an earlier host run is opened again to ask
        (only for a caller who may prompt it: reading must not start agents)."""
        return await (await self._require_live(session_id, resume=resume, caller=caller)).models()

    async def interrupt(self, session_id: str, cid: str | None = None) -> Event:
        return await (await self._require_live(session_id)).interrupt(cid)

    async def resize(self, session_id: str, cols: int, rows: int, cid: str | None = None) -> Event:
        _check_size(cols, rows)
        return await (await self._require_live(session_id)).resize(cols, rows, cid)

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

    async def archive(self, session_id: str, archived: bool, cid: str | None = None) -> Event:
        return await self.log.append(session_id, EventType.SESSION_ARCHIVED, {"archived": archived}, cid)

    async def delete(self, session_id: str, cid: str | None = None) -> Event:
        """Forget a session that is not working (ended, or an agent waiting for a prompt, which
        stops): its events leave the log; a ``session.deleted`` tombstone stays."""
        row = await self.get(session_id)
        live = self._live.get(session_id)
        if row is not None and row["status"] in (Status.RUNNING, Status.WAITING_FOR_APPROVAL) and (
            live is not None and not live.ended.is_set()
        ):
            raise SessionError("the session is still running", hint="stop it first (interrupt, or end its program)",
                               code="session_live")
        if live is not None and not live.ended.is_set():
            await live.close()  # an agent between turns: it stops now
        removed = await self.log.delete_session(session_id)
        log.info("session %s deleted (%d events)", session_id, removed)
        return await self.log.append(session_id, EventType.SESSION_DELETED, {}, cid)

    async def list(self) -> builtins.list[dict[str, Any]]:
        return await self.db.run(projection.list_sessions, write=False)

    async def get(self, session_id: str, *, with_scrollback: bool = False) -> dict[str, Any] | None:
        return await self.db.run(
            lambda c: projection.get_session(c, session_id, with_scrollback=with_scrollback), write=False
        )

    async def close(self) -> None:
        """The host stops: terminals end, agents stop with their conversations kept for the next
        start; returns once that is recorded."""
        self._closing = True
        await asyncio.gather(*(s.suspend() for s in self._live.values()), return_exceptions=True)

    async def _require_live(
        self, session_id: str, *, resume: bool = False, caller: Principal | None = None, asked: str | None = None,
    ) -> LiveSession:
        """The session's live object; with ``resume``, an agent session of an earlier host run is
        resumed first (for ``caller``, None for the owner), else it is refused as not running (and
        the approval ``asked`` about, as not pending: the restart cleared it)."""
        session = self._live.get(session_id)
        if session is not None and not session.ended.is_set():
            return session
        row = await self.get(session_id)
        if row is None:
            raise SessionError("no such session", code="no_such_session")
        if Status(row["status"]).terminal:
            raise SessionError("the session has finished", hint="start a new session", code="session_finished")
        if asked is not None:
            raise ApprovalConflict(f"approval {asked!r} is not pending: the host restarted since it was asked",
                                   hint="see the session's events")
        if not resume:
            raise SessionError("the agent is not running: the host restarted since its last turn",
                               hint="send a prompt: the agent picks the conversation up", code="session_idle")
        return await self._resume(session_id, row, caller)


def _resumable(session: dict[str, Any]) -> bool:
    """Whether a session goes on after a host restart: an agent's conversation does, a terminal's
    program does not."""
    try:
        return agent_spec(session["agent"]).kind is Kind.TURNS
    except TetherError:
        return False  # an agent this host no longer has


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
