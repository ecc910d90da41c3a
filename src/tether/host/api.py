"""The host's application methods: one handler per method, each checked against its scope.

Every request from a device and from the local owner comes through :meth:`ApiConnection.handle`:
the method must be known, the caller's grant must hold the method's scope (the table in
:mod:`tether.protocol.scopes`), the params must validate, and commands with a client id are
applied once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from tether import __version__
from tether.agents.base import Decision
from tether.agents.policy import AgentConfig
from tether.agents.registry import ADAPTERS, AGENT_NAMES, load_agent
from tether.crypto.encoding import b64u_decode
from tether.crypto.tokens import format_expiry
from tether.errors import TetherError
from tether.host import projection
from tether.host.principal import Principal
from tether.host.workspaces import resolve_workspace
from tether.protocol import schemas
from tether.protocol.events import EventType
from tether.protocol.messages import Notification, Request, decode_params
from tether.protocol.methods import METHODS
from tether.protocol.rpc import RpcPeer
from tether.protocol.scopes import Scope, parse_scopes, scope_list

if TYPE_CHECKING:
    from tether.host.audit import AuditLog
    from tether.host.config import HostConfig
    from tether.host.db import Database
    from tether.host.eventlog import Event, EventLog, Subscription
    from tether.host.inheritance import Inheritance
    from tether.host.remotes import RemoteHosts
    from tether.host.sessions import SessionManager
    from tether.host.store import Device, Store, Token

log = logging.getLogger("tether.host")


READ_PAGE_BYTES = 1024 * 1024  # events.read answers about this much at most


class Forbidden(TetherError):
    code = "forbidden"


class UnknownMethod(TetherError):
    code = "unknown_method"


class NotFound(TetherError):
    code = "not_found"


class ApiHost(Protocol):
    """What the methods need of the host daemon (its state and the actions that reach beyond
    one connection: revoking closes channels, key rotation, offers and tokens)."""

    config: HostConfig
    workspaces: list[Path]
    db: Database
    log: EventLog
    store: Store
    audit: AuditLog
    sessions: SessionManager
    inherited: Inheritance | None
    tunnels: RemoteHosts

    def status(self) -> dict[str, Any]: ...
    def subscriptions_of(self, caller: str) -> int: ...
    async def rotate_keys(self, grace: float) -> dict[str, Any]: ...
    async def revoke_device(self, device_id: str) -> bool: ...
    async def revoke_token(self, token_id: str, *, by: ApiConnection | None = None) -> bool: ...
    async def create_token(
        self, scopes: frozenset[Scope], *, workspace: str | None, expires_at: float, name: str | None,
        created_by: str,
    ) -> dict[str, Any]: ...
    async def create_pairing_offer(
        self, scopes: frozenset[Scope], ttl: float, workspace: str | None = None
    ) -> dict[str, Any]: ...


_MANAGE_HINT = "devices.list and tokens.list show those within this caller's scopes and workspace"


# Events of no session that a workspace-restricted caller still receives: which hosts this one
# links (what `hosts.linked` answers any reader; ids, names, public keys and relay addresses, no
# session content). Any other host-wide event type stays hidden until it is judged here.
RESTRICTED_HOST_EVENTS = frozenset({EventType.HOST_LINKED, EventType.HOST_UNLINKED})


MAX_SUBSCRIPTIONS = 16
# Flow control of event streams: at most WINDOW bytes of notifications unacknowledged per
# subscription, each notification about NOTIFICATION_BYTES. Together they stay under the relay's
# per-channel queue (1 MiB), so a burst never gets a healthy reader's channel closed as too slow,
# and a slow reader costs the host nothing: the subscription just waits, holding only a cursor.
WINDOW = 512 * 1024
NOTIFICATION_BYTES = 128 * 1024
_event_encoder = msgspec.json.Encoder()


class _Window:
    """Bytes sent on one subscription and not yet acknowledged by the client."""

    def __init__(self) -> None:
        self.sizes: collections.deque[int] = collections.deque()
        self.unacked = 0
        self.acked = asyncio.Event()

    async def wait_for_room(self) -> None:
        while self.unacked > WINDOW:
            self.acked.clear()
            await self.acked.wait()

    def sent(self, size: int) -> None:
        self.sizes.append(size)
        self.unacked += size

    def ack(self) -> None:
        if self.sizes:
            self.unacked -= self.sizes.popleft()
        self.acked.set()


def chunk_events(events: list[dict[str, Any]], limit: int = NOTIFICATION_BYTES) -> list[list[dict[str, Any]]]:
    """Split events (or sessions) into notifications of about ``limit`` bytes (one never splits)."""
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for event in events:
        n = len(_event_encoder.encode(event))
        if chunks[-1] and size + n > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(event)
        size += n
    return chunks

Handler = Callable[["ApiConnection", Any], Awaitable[Any]]
# Method name -> the ApiConnection method that answers it (bound with @handles below).
HANDLERS: dict[str, Handler] = {}


def handles(name: str) -> Callable[[Handler], Handler]:
    """Bind the decorated method of :class:`ApiConnection` to the method ``name`` of
    :data:`~tether.protocol.methods.METHODS` (its scope and params are declared there)."""

    def bind(handler: Handler) -> Handler:
        if name not in METHODS or name in HANDLERS:
            raise TypeError(f"{name!r} is not a declared method, or has a handler already")
        HANDLERS[name] = handler
        return handler

    return bind


class ApiConnection:
    """The methods as seen by one connected caller (it owns that caller's subscriptions)."""

    def __init__(self, host: ApiHost, principal: Principal) -> None:
        self.host = host
        self.principal = principal
        self.peer: RpcPeer  # set by the daemon once the peer exists (the peer needs our handler)
        self._subs: dict[int, asyncio.Task[None]] = {}
        self._windows: dict[int, _Window] = {}
        # session id -> whether this caller sees it (a session's workspace never changes).
        self._sees: dict[str, bool] = {}

    async def handle(self, request: Request) -> Any:
        """Answer one request, and record it in the audit log whatever the outcome."""
        try:
            result = await self._handle(request)
        except TetherError as exc:
            self._audit(request, exc.code, None)
            raise
        except Exception:
            self._audit(request, "internal", None)
            raise
        self._audit(request, "ok", result)
        return result

    def _audit(self, request: Request, outcome: str, result: Any) -> None:
        # Ids only: a session, device or token id from the params or the result, never other params.
        params = request.params if isinstance(request.params, dict) else {}
        ref = params.get("id") if isinstance(params.get("id"), str) else None
        if ref is None and isinstance(result, dict) and isinstance(result.get("id"), str):
            ref = result["id"]
        family = request.method.partition(".")[0]
        session = ref if family == "sessions" else None
        if session is None and isinstance(params.get("session"), str):
            session = params["session"]
        target = ref if family in ("devices", "tokens") else None
        self.host.audit.record(self.principal.actor, request.method, outcome, session=session, target=target)

    async def _handle(self, request: Request) -> Any:
        method = METHODS.get(request.method)
        if method is None:
            raise UnknownMethod(f"unknown method {request.method!r}", hint="upgrade tether on this client")
        expires_at = self.principal.expires_at
        if expires_at is not None and time.time() >= expires_at:
            raise TetherError(
                f"this token expired on {format_expiry(expires_at)}",
                hint="create a new one with `tether tokens create`",
                code="expired",
            )
        needed = method.scope
        if needed not in self.principal.scopes:
            raise Forbidden(
                f"{self.principal.describe()} lacks the {needed.value!r} scope needed for {request.method}",
                hint=self.principal.scope_hint(),
            )
        handler = HANDLERS[request.method]
        params = decode_params(request.params, method.params)
        cid = getattr(params, "cid", None)
        if cid is None:
            return await handler(self, params)
        return await self.host.store.apply_once(cid, self.principal.id, request.method, lambda: handler(self, params))

    async def on_notification(self, note: Notification) -> None:
        if note.method == "events.ack":
            window = self._windows.get(note.params.get("sub", -1))
            if window is not None:
                window.ack()

    @property
    def subscriptions(self) -> int:
        return len(self._subs)

    async def close(self) -> None:
        for task in self._subs.values():
            task.cancel()
        for task in self._subs.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._subs.clear()

    # -- host and sessions -------------------------------------------------------------

    @handles("host.info")
    async def _host_info(self, _: schemas.Empty) -> dict[str, Any]:
        return {
            **self.host.status(),
            "version": __version__,
            "head": self.host.log.head,
            "scopes": scope_list(self.principal.scopes),
            "workspace": self.principal.workspace,  # the caller's restriction, if any
        }

    @handles("sessions.list")
    async def _sessions_list(self, _: schemas.Empty) -> list[dict[str, Any]]:
        return [s for s in await self.host.sessions.list() if self._sees_session(s)]

    def _sees_session(self, session: dict[str, Any]) -> bool:
        visible = self.principal.sees(session["workspace"])
        self._sees[session["id"]] = visible
        return visible

    async def _session(self, session_id: str, *, scrollback: bool = False) -> dict[str, Any]:
        """The session as this caller may see it; one outside its workspace is answered exactly
        like one that does not exist, so a restricted caller cannot even probe ids."""
        session = await self.host.sessions.get(session_id, with_scrollback=scrollback)
        if session is None or not self._sees_session(session):
            raise NotFound(f"no session {session_id!r} on this host", hint="tether sessions list shows them")
        return session

    async def _visible(self, events: Iterable[Event]) -> list[Event]:
        """The events this caller may see: of sessions it sees, and the harmless host-wide ones."""
        events = list(events)
        if self.principal.workspace is None:
            return events
        await self._judge_sessions(e.session for e in events)
        return [
            e for e in events
            if (self._sees.get(e.session, False) if e.session is not None else e.type in RESTRICTED_HOST_EVENTS)
        ]

    async def _judge_sessions(self, ids: Iterable[str | None]) -> None:
        """Fill the cache of visible sessions for these ids (one query for all the new ones)."""
        if any(sid is not None and sid not in self._sees for sid in ids):
            for session in await self.host.sessions.list():
                self._sees_session(session)

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
        if params.agent != "pty":
            return await self._agent_session_start(params)
        if not params.command:
            raise TetherError("no command given", hint="e.g. tether sessions start -- bash", code="bad_command")
        self._may_start_pty()
        workspace = resolve_workspace(params.workspace, self.host.workspaces, self.principal.workspace)
        session_id = await self.host.sessions.start_session(
            agent=params.agent,
            workspace=workspace,
            command=params.command,
            cid=params.cid,
            cols=params.cols,
            rows=params.rows,
            caller=self.principal,
        )
        log.info("%s started session %s", self.principal.describe(), session_id)
        return {"id": session_id}

    def _may_start_pty(self) -> None:
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

    async def _agent_session_start(self, params: schemas.SessionStart) -> dict[str, Any]:
        if params.agent not in AGENT_NAMES:
            raise TetherError(
                f"unknown agent {params.agent!r}", hint=f"use one of: {', '.join(AGENT_NAMES)}", code="bad_agent"
            )
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
            if not load_agent(params.agent).keeps_threads:
                keepers = " or ".join(a for a in ADAPTERS if load_agent(a).keeps_threads)
                raise TetherError(f"only {keepers} sessions can adopt a thread", code="bad_params")
            await self._may_adopt(params.agent, config, params.thread)
            # A per-session copy: the host's shared config must not remember one session's thread.
            config = dataclasses.replace(config, options={**config.options, "thread": params.thread})
        workspace = resolve_workspace(params.workspace, self.host.workspaces, self.principal.workspace)
        session_id = await self.host.sessions.start_agent_session(
            agent=params.agent, workspace=workspace, prompt=params.prompt, policy=policy, config=config,
            cid=params.cid, caller=self.principal,
        )
        log.info("%s started %s session %s", self.principal.describe(), params.agent, session_id)
        return {"id": session_id}

    @handles("sessions.approve")
    async def _sessions_approve(self, params: schemas.SessionApprove) -> dict[str, Any]:
        await self._session(params.id)
        by = {"id": self.principal.id, "name": self.principal.name}
        event = await self.host.sessions.approve(params.id, params.approval, Decision(params.decision), by, params.cid)
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
        event = await self.host.sessions.send_input(params.id, params.text, cid=params.cid)
        return {"seq": event.seq}

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

    # -- events ------------------------------------------------------------------------

    @handles("events.read")
    async def _read_events(self, params: schemas.ReadEvents) -> dict[str, Any]:
        """A page of the log (for scripts that want what exists now, without following)."""
        head = self.host.log.head
        events = await self.host.log.read(params.since, params.limit, READ_PAGE_BYTES)
        cursor = events[-1].seq if events else max(params.since, head)
        page: list[dict[str, Any]] = []
        size = 0
        for e in await self._visible(events):
            # A page stays well under the message limit (an output event can be 64 Ki characters):
            # the caller goes on from the cursor.
            if size >= READ_PAGE_BYTES:
                cursor = e.seq - 1  # seqs have no gaps: everything before it was scanned
                break
            if params.session is None or e.session == params.session:
                wire = e.to_wire()
                size += len(msgspec.json.encode(wire))
                page.append(wire)
        # Retention may have dropped what came before the floor: a caller behind it missed events.
        return {"events": page, "cursor": cursor, "head": head, "floor": self.host.log.floor}

    @handles("events.subscribe")
    async def _subscribe(self, params: schemas.Subscribe) -> dict[str, Any]:
        sub_id = params.sub
        if sub_id in self._subs:
            raise TetherError(f"subscription {sub_id} already exists on this connection", code="bad_params")
        if len(self._subs) >= MAX_SUBSCRIPTIONS:
            raise TetherError("too many subscriptions on one connection", code="limit")
        limit = self.host.config.limits.max_subscriptions_per_caller
        if self.principal.kind != "local" and self.host.subscriptions_of(self.principal.id) >= limit:
            raise TetherError(
                f"{self.principal.describe()} already has {limit} event subscriptions on this host, the most"
                f" one device or token may ({self.host.config.limit_key('max_subscriptions_per_caller')})",
                hint="unsubscribe or close some of its connections, or ask the host's owner to raise the limit",
                code="limit",
            )
        subscription = self.host.log.subscribe(params.since, session=params.session)
        self._windows[sub_id] = _Window()
        self._subs[sub_id] = asyncio.create_task(self._pump(sub_id, subscription))
        return {"sub": sub_id, "head": self.host.log.head}

    async def _pump(self, sub_id: int, subscription: Subscription) -> None:
        from tether.host.eventlog import Snapshot

        window = self._windows[sub_id]
        try:
            while True:
                # The next step is read only once the client has room for it: a client that does
                # not acknowledge leaves the host holding its cursor, not a snapshot or a batch.
                await window.wait_for_room()
                try:
                    item = await anext(subscription)
                except StopAsyncIteration:
                    return
                if isinstance(item, Snapshot):
                    # A page of many sessions with scrollback is still sent in parts like events.
                    parts = chunk_events([s for s in item.sessions if self._sees_session(s)])
                    for i, part in enumerate(parts):
                        await window.wait_for_room()
                        last = item.last and i == len(parts) - 1
                        params = {"sub": sub_id, "seq": item.seq, "sessions": part, "last": last}
                        window.sent(await self.peer.notify("snapshot", params))
                    continue
                shown = await self._visible(item)
                if not shown:
                    continue  # all of another workspace: not even an empty notification
                for chunk in chunk_events([e.to_wire() for e in shown]):
                    await window.wait_for_room()
                    window.sent(await self.peer.notify("events", {"sub": sub_id, "events": chunk}))
        except TetherError:
            pass  # the connection went away; the client resumes from its cursor
        finally:
            self._windows.pop(sub_id, None)

    @handles("events.unsubscribe")
    async def _unsubscribe(self, params: schemas.Unsubscribe) -> dict[str, Any]:
        task = self._subs.pop(params.sub, None)
        if task is not None:
            task.cancel()
        return {"ok": task is not None}

    # -- devices and pairing -----------------------------------------------------------

    @handles("devices.list")
    async def _devices_list(self, _: schemas.Empty) -> list[dict[str, Any]]:
        devices = await self.host.store.list_devices(include_revoked=True)
        return [d.to_public() for d in devices if self._manages(d)]

    def _manages(self, record: Device | Token) -> bool:
        return self.principal.manages(parse_scopes(record.scopes), record.workspace)

    async def _manages_device(self, device_id: str) -> bool:
        """A device beyond this caller's grant is refused exactly like an unknown one (the listing
        hides it too), so a restricted admin can neither cut off nor probe wider devices."""
        device = await self.host.store.get_device(device_id)
        return device is not None and self._manages(device)

    @handles("devices.rename")
    async def _devices_rename(self, params: schemas.DeviceRename) -> dict[str, Any]:
        if not await self._manages_device(params.id) or not await self.host.store.rename_device(params.id, params.name):
            raise NotFound(f"no device {params.id!r} this caller may manage", hint=_MANAGE_HINT)
        return {"ok": True}

    @handles("devices.revoke")
    async def _devices_revoke(self, params: schemas.DeviceRef) -> dict[str, Any]:
        if not await self._manages_device(params.id) or not await self.host.revoke_device(params.id):
            raise NotFound(f"no device {params.id!r} this caller may manage", hint=_MANAGE_HINT)
        return {"ok": True}

    @handles("hosts.link")
    async def _hosts_link(self, params: schemas.HostLink) -> dict[str, Any]:
        self._owner_only("link a host")
        try:
            if len(b64u_decode(params.static_public)) != 32:
                raise ValueError
        except ValueError:
            raise TetherError("static_public must be a 32-byte key in base64url", code="invalid_params") from None
        event = await self.host.log.append(None, EventType.HOST_LINKED, msgspec.to_builtins(params))
        return {"seq": event.seq}

    @handles("hosts.unlink")
    async def _hosts_unlink(self, params: schemas.HostRef) -> dict[str, Any]:
        self._owner_only("unlink a host")
        linked = await self.host.db.run(projection.linked_hosts, write=False)
        if not any(h["host_id"] == params.host_id for h in linked):
            raise TetherError(f"no linked host {params.host_id!r}", code="not_found")
        event = await self.host.log.append(None, EventType.HOST_UNLINKED, {"host_id": params.host_id})
        return {"seq": event.seq}

    @handles("hosts.linked")
    async def _hosts_linked(self, _: schemas.Empty) -> list[dict[str, Any]]:
        return await self.host.db.run(projection.linked_hosts, write=False)

    @handles("remotes.tunnel")
    async def _remotes_tunnel(self, params: schemas.RemoteRef) -> dict[str, Any]:
        # SSH connections are made with the owner's keys: only the owner asks for them.
        self._owner_only("open a tunnel")
        return {"port": await self.host.tunnels.hold(params.name)}

    @handles("remotes.tunnels")
    async def _remotes_tunnels(self, _: schemas.Empty) -> list[dict[str, object]]:
        self._owner_only("see its tunnels")
        return self.host.tunnels.tunnels()

    @handles("host.rotate_keys")
    async def _rotate_keys(self, params: schemas.RotateKeys) -> dict[str, Any]:
        # Every paired device must learn the new key: a device could lock out all that are away.
        self._owner_only("rotate the host's key")
        return await self.host.rotate_keys(params.grace)

    @handles("pairing.create")
    async def _pairing_create(self, params: schemas.PairingCreate) -> dict[str, Any]:
        scopes = parse_scopes(params.scopes)
        self._within_grant(
            scopes, "cannot grant scopes this caller does not have",
            hint="a device can only pair others with a subset of its own scopes",
        )
        workspace = self._narrowed_workspace(params.workspace)
        return await self.host.create_pairing_offer(scopes, params.ttl, workspace)

    def _owner_only(self, action: str) -> None:
        # What `tether ssh` does on this machine: a device, even with admin, could otherwise point
        # every client at a host of its choosing or make the owner's SSH keys dial out.
        if self.principal.kind != "local":
            raise Forbidden(f"only the host's owner (tether ssh on this machine) can {action}")

    def _within_grant(self, scopes: frozenset[Scope], refusal: str, *, hint: str) -> None:
        """A caller hands on (to a device or token it makes) only scopes it holds itself."""
        if not scopes <= self.principal.scopes:
            extra = ", ".join(scope_list(scopes - self.principal.scopes))
            raise Forbidden(f"{refusal}: {extra}", hint=hint)

    def _narrowed_workspace(self, requested: str | None) -> str | None:
        """The workspace restriction of a device or token this caller makes: the one asked for,
        inside the caller's own restriction and the host's workspaces (else refused); none asked
        for, the caller's own (a restricted caller makes restricted ones)."""
        if requested is None:
            return self.principal.workspace
        return str(resolve_workspace(requested, self.host.workspaces, self.principal.workspace))

    # -- access tokens and the audit log -------------------------------------------------

    @handles("tokens.create")
    async def _tokens_create(self, params: schemas.TokenCreate) -> dict[str, Any]:
        scopes = parse_scopes(params.scopes)
        self._within_grant(
            scopes, "cannot create a token with scopes this caller does not have",
            hint="a token can only get a subset of its creator's scopes",
        )
        workspace = self._narrowed_workspace(params.workspace)
        expires_at = time.time() + params.ttl
        if self.principal.expires_at is not None and expires_at > self.principal.expires_at:
            raise Forbidden(
                "a token cannot create a token that outlives it "
                f"(this one expires on {format_expiry(self.principal.expires_at)})",
                hint="ask for a shorter --ttl",
            )
        return await self.host.create_token(
            scopes, workspace=workspace, expires_at=expires_at, name=params.name, created_by=self.principal.id
        )

    @handles("tokens.list")
    async def _tokens_list(self, _: schemas.Empty) -> list[dict[str, Any]]:
        return [t.to_public() for t in await self.host.store.list_tokens() if self._manages(t)]

    @handles("tokens.revoke")
    async def _tokens_revoke(self, params: schemas.TokenRef) -> dict[str, Any]:
        token = await self.host.store.get_token(params.id)
        if token is None or not self._manages(token) or not await self.host.revoke_token(params.id, by=self):
            raise NotFound(f"no token {params.id!r} this caller may manage that is not revoked already",
                           hint=_MANAGE_HINT)
        return {"ok": True}

    @handles("audit.list")
    async def _audit_list(self, params: schemas.AuditList) -> dict[str, Any]:
        entries = await self.host.audit.list(since=params.since, after=params.after, limit=params.limit)
        cursor = entries[-1]["id"] if entries else params.after
        if self.principal.workspace is not None:
            # What was done to other workspaces' sessions (their ids) is theirs, like their events.
            await self._judge_sessions(e["session"] for e in entries)
            entries = [e for e in entries if e["session"] is None or self._sees.get(e["session"], False)]
        return {"entries": entries, "cursor": cursor}
