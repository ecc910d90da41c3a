"""host.info and sessions.*: starting, driving and reading sessions."""

from __future__ import annotations

import dataclasses
from typing import Any

from tether import __version__
from tether.agents.base import COMPACT, Decision, Review, TurnSettings
from tether.agents.policy import AgentConfig
from tether.agents.registry import AGENT_NAMES, Kind, agent_spec, keeps_threads, load_agent
from tether.errors import TetherError
from tether.host import projection
from tether.host.api.core import Caller, Forbidden, NotFound, handles, log
from tether.host.attachments import decode_images
from tether.host.workspaces import resolve_workspace
from tether.protocol import schemas
from tether.protocol.scopes import Scope, scope_list


class SessionMethods(Caller):
    """host.info and sessions.*: starting, driving and reading sessions."""

    @handles("host.info")
    async def _host_info(self, _: schemas.Empty) -> dict[str, Any]:
        return {
            **self.host.status(),
            "version": __version__,
            "head": self.host.log.head,
            "scopes": scope_list(self.principal.scopes),
            "workspace": self.principal.workspace,  # the caller's restriction, if any
            "agents": await self.host.agent_status.agents(),  # which this host can start now
            "push_key": self.host.push_key,  # a browser subscribes to this host's pushes with it
        }

    @handles("host.ping")
    async def _host_ping(self, _: schemas.Empty) -> dict[str, Any]:
        """The clients' heartbeat: an answer proves the whole path (relay, channel, host) carries."""
        return {}

    @handles("sessions.list")
    async def _sessions_list(self, _: schemas.Empty) -> list[dict[str, Any]]:
        return [s for s in await self.host.sessions.list() if self._sees_session(s)]

    @handles("sessions.get")
    async def _sessions_get(self, params: schemas.SessionGet) -> dict[str, Any]:
        session = await self._session(params.id, scrollback=params.scrollback)
        # Pending approvals come with the session, so a client that reconnects shows them again.
        session["approvals"] = await self.host.db.run(
            lambda c: projection.pending_approvals(c, params.id), write=False
        )
        return session

    @handles("sessions.start")
    async def _sessions_start(self, params: schemas.SessionStart) -> dict[str, Any]:
        if agent_spec(params.agent).kind is Kind.TERMINAL:
            if not params.command:
                raise TetherError("no command given", hint="e.g. tether sessions start -- bash", code="bad_command")
            self._may_start_terminal()
            options: dict[str, Any] = {"command": params.command, "cols": params.cols, "rows": params.rows}
        else:
            options = await self._agent_options(params)
        workspace = resolve_workspace(params.workspace, self.host.workspaces, self.principal.workspace)
        session_id = await self.host.sessions.start_session(
            agent=params.agent, workspace=workspace, cid=params.cid, caller=self.principal, **options
        )
        log.info("%s started %s session %s", self.principal.describe(), params.agent, session_id)
        return {"id": session_id}

    def _may_start_terminal(self) -> None:
        """A pty runs any command as the host's user, outside any workspace restriction: the
        host's config says which callers besides the owner may have one."""
        access = self.host.config.pty
        if self.principal.kind == "local":
            return
        key = None
        if not access.remote:
            key = "allow_remote"
        elif self.principal.workspace is not None and not access.restricted:
            key = "allow_restricted"
        if key is not None:
            held = " held to a workspace" if key == "allow_restricted" else ""
            raise Forbidden(
                f"this host starts no pty session (a shell as its user) for {self.principal.kind}s{held}: "
                f"agents.pty.{key} is false in its config.toml",
                hint=f"the owner can set `{key} = true` under [agents.pty], or start an agent session instead",
            )

    async def _agent_options(self, params: schemas.SessionStart) -> dict[str, Any]:
        """What a turns agent starts with: the prompt, the policy as this host narrows it, its config."""
        if not params.prompt or not params.prompt.strip():
            raise TetherError("an agent session needs a prompt", hint="e.g. tether sessions start --agent "
                              f"{params.agent} 'fix the failing test'", code="bad_prompt")
        config = self.host.config.agent(params.agent)
        if not config.enabled:
            raise TetherError(f"the {params.agent} agent is disabled on this host", code="bad_agent")
        policy = config.policy.narrowed(params.approval, params.sandbox)
        if self.host.inherited is not None:
            # A host started by `tether ssh` never runs agents looser than its desktop allows.
            policy = self.host.inherited.cap(params.agent, policy)
        if params.thread is not None:
            if not keeps_threads(params.agent):
                keepers = " or ".join(name for name in AGENT_NAMES if keeps_threads(name))
                raise TetherError(f"only {keepers} sessions can adopt a thread", code="bad_params")
            await self._may_adopt(params.agent, config, params.thread)
            # A per-session copy: the host's shared config must not remember one session's thread.
            config = dataclasses.replace(config, options={**config.options, "thread": params.thread})
        return {"prompt": params.prompt, "policy": policy, "config": config}

    @handles("sessions.approve")
    async def _sessions_approve(self, params: schemas.SessionApprove) -> dict[str, Any]:
        await self._session(params.id)
        event = await self.host.sessions.approve(params.id, params.approval, Decision(params.decision), self._by(),
                                                 params.cid)
        return {"seq": event.seq}

    def _by(self) -> dict[str, str]:
        """Who answered or cancelled, as the log records it."""
        return {"id": self.principal.id, "name": self.principal.name}

    @handles("sessions.answer")
    async def _sessions_answer(self, params: schemas.SessionAnswer) -> dict[str, Any]:
        """A question of the agent answered: words to the agent, like a prompt (scope ``prompt``)."""
        await self._session(params.id)
        event = await self.host.sessions.answer(params.id, params.approval, params.answers, self._by(), params.cid)
        return {"seq": event.seq}

    @handles("sessions.archive")
    async def _sessions_archive(self, params: schemas.SessionArchive) -> dict[str, Any]:
        """Put a session away (or back): lists show it only when asked."""
        await self._session(params.id)
        event = await self.host.sessions.archive(params.id, params.archived, params.cid)
        return {"seq": event.seq}

    @handles("sessions.delete")
    async def _sessions_delete(self, params: schemas.SessionRef) -> dict[str, Any]:
        """Forget an ended session and its whole history."""
        await self._session(params.id)
        event = await self.host.sessions.delete(params.id, params.cid)
        return {"seq": event.seq}

    @handles("sessions.unqueue")
    async def _sessions_unqueue(self, params: schemas.SessionUnqueue) -> dict[str, Any]:
        """A queued prompt cancelled before it starts."""
        await self._session(params.id)
        event = await self.host.sessions.unqueue(params.id, params.queued, self._by(), params.cid)
        return {"seq": event.seq}

    async def _may_adopt(self, agent: str, config: AgentConfig, thread: str) -> None:
        """A thread is adopted only from a directory this caller sees (its history is the
        other workspace's): one outside is refused exactly like one that does not exist."""
        if self.principal.workspace is None:
            return  # sees every directory: no need to ask Codex first
        if not self.principal.sees(await load_agent(agent).thread_cwd(config, thread)):
            raise NotFound(f"no Codex thread {thread!r} this caller may adopt",
                           hint="tether sessions threads lists them")

    @handles("sessions.threads")
    async def _sessions_threads(self, params: schemas.ListThreads) -> dict[str, Any]:
        """Codex threads stored on the host (started on the desktop too), for adoption; only
        those whose directory this caller may use."""
        threads = await load_agent(params.agent).list_threads(self.host.config.agent(params.agent),
                                                               limit=params.limit)
        visible = []
        for thread in threads:
            if not self.principal.sees(thread.get("cwd")):
                continue
            try:
                resolve_workspace(thread.get("cwd"), self.host.workspaces, self.principal.workspace)
            except TetherError:
                continue
            visible.append(thread)
        return {"threads": visible}

    @handles("sessions.diff")
    async def _sessions_diff(self, params: schemas.SessionGet) -> dict[str, Any]:
        await self._session(params.id)
        changes = await self.host.db.run(lambda c: projection.file_changes(c, params.id), write=False)
        return {"changes": changes}

    @handles("sessions.send")
    async def _sessions_send(self, params: schemas.SessionSend) -> dict[str, Any]:
        await self._session(params.id)
        images = decode_images(params.images or [])
        chosen = params.model is not None or params.effort is not None or params.mode is not None or images
        settings = TurnSettings(params.model, params.effort, params.mode, images) if chosen else None
        event = await self.host.sessions.send_input(params.id, params.text, cid=params.cid, settings=settings,
                                                    caller=self.principal)
        return {"seq": event.seq}

    @handles("sessions.review")
    async def _sessions_review(self, params: schemas.SessionReview) -> dict[str, Any]:
        """A turn in which the agent reviews changes (Codex's review mode) instead of a prompt."""
        await self._session(params.id)
        if sum(x is not None for x in (params.base, params.commit, params.instructions)) > 1:
            raise TetherError("review one thing: the changes against a base branch, one commit, or what "
                              "the instructions say", code="bad_params")
        review = Review(params.base, params.commit, params.instructions)
        said = (f"Review the changes against {params.base}" if params.base else
                f"Review commit {params.commit}" if params.commit else
                "Review the uncommitted changes")
        text = f"Review: {params.instructions}" if params.instructions else said
        event = await self.host.sessions.send_input(params.id, text, cid=params.cid,
                                                    settings=TurnSettings(action=review), caller=self.principal)
        return {"seq": event.seq}

    @handles("sessions.compact")
    async def _sessions_compact(self, params: schemas.SessionRef) -> dict[str, Any]:
        """A turn in which the agent summarizes the conversation so far to free its context."""
        await self._session(params.id)
        event = await self.host.sessions.send_input(params.id, "Compact the conversation", cid=params.cid,
                                                    settings=TurnSettings(action=COMPACT), caller=self.principal)
        return {"seq": event.seq}

    @handles("sessions.models")
    async def _sessions_models(self, params: schemas.SessionModels) -> dict[str, Any]:
        """The models the session's agent offers for its next turns."""
        await self._session(params.id)
        may_prompt = Scope.PROMPT in self.principal.scopes
        return {"models": await self.host.sessions.models(params.id, caller=self.principal, resume=may_prompt)}

    @handles("sessions.interrupt")
    async def _sessions_interrupt(self, params: schemas.SessionRef) -> dict[str, Any]:
        await self._session(params.id)
        event = await self.host.sessions.interrupt(params.id, cid=params.cid)
        return {"seq": event.seq}

    @handles("sessions.resize")
    async def _sessions_resize(self, params: schemas.SessionResize) -> dict[str, Any]:
        await self._session(params.id)
        event = await self.host.sessions.resize(params.id, params.cols, params.rows)
        return {"seq": event.seq}
