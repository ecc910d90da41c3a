"""The core of the host's API: dispatching a request to its handler after the scope check,
auditing it, and what one caller may see (sessions of its workspace, devices within its grant).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tether.crypto.tokens import format_expiry
from tether.errors import TetherError
from tether.host.api.flow import Window
from tether.host.principal import Principal
from tether.host.workspaces import resolve_workspace
from tether.protocol.events import EventType
from tether.protocol.messages import Notification, Request, decode_params
from tether.protocol.methods import METHODS
from tether.protocol.rpc import RpcPeer
from tether.protocol.scopes import Scope, parse_scopes, scope_list

if TYPE_CHECKING:
    from tether.host.agent_status import AgentStatus
    from tether.host.audit import AuditLog
    from tether.host.config import HostConfig
    from tether.host.db import Database
    from tether.host.eventlog import Event, EventLog
    from tether.host.inheritance import Inheritance
    from tether.host.remotes import RemoteHosts
    from tether.host.sessions import SessionManager
    from tether.host.store import Device, Store, Token

log = logging.getLogger("tether.host")
# A heartbeat answered says nothing of what anyone did, and comes every few seconds from every
# open page.
UNAUDITED = frozenset({"host.ping"})


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
    agent_status: AgentStatus
    inherited: Inheritance | None
    tunnels: RemoteHosts
    push_key: str | None  # the host's VAPID public key; None when it sends no pushes

    def status(self) -> dict[str, Any]: ...
    def subscriptions_of(self, caller: str) -> int: ...
    async def rotate_keys(self, grace: float) -> dict[str, Any]: ...
    async def revoke_device(self, device_id: str) -> bool: ...
    async def revoke_token(self, token_id: str, *, by: Caller | None = None) -> bool: ...
    async def create_token(
        self, scopes: frozenset[Scope], *, workspace: str | None, expires_at: float, name: str | None,
        created_by: str,
    ) -> dict[str, Any]: ...
    async def create_pairing_offer(
        self, scopes: frozenset[Scope], ttl: float, workspace: str | None = None
    ) -> dict[str, Any]: ...




# Events of no session that a workspace-restricted caller still receives: which hosts this one
# links (what `hosts.linked` answers any reader; ids, names, public keys and relay addresses, no
# session content). Any other host-wide event type stays hidden until it is judged here.
RESTRICTED_HOST_EVENTS = frozenset({EventType.HOST_LINKED, EventType.HOST_UNLINKED})


# A method of a Caller subclass (self, params) -> result.
Handler = Callable[..., Awaitable[Any]]
# Method name -> the method of ApiConnection that answers it (bound with @handles).
HANDLERS: dict[str, Handler] = {}


def handles(name: str) -> Callable[[Handler], Handler]:
    """Bind the decorated method of :class:`~tether.host.api.ApiConnection` to the method ``name`` of
    :data:`~tether.protocol.methods.METHODS` (its scope and params are declared there)."""

    def bind(handler: Handler) -> Handler:
        if name not in METHODS or name in HANDLERS:
            raise TypeError(f"{name!r} is not a declared method, or has a handler already")
        HANDLERS[name] = handler
        return handler

    return bind


class Caller:
    """One connected caller (device, token or the local owner) and what every method family
    needs: dispatch with the scope check, the audit record, and what this caller may see."""

    def __init__(self, host: ApiHost, principal: Principal) -> None:
        self.host = host
        self.principal = principal
        self.peer: RpcPeer  # set by the daemon once the peer exists (the peer needs our handler)
        self._subs: dict[int, asyncio.Task[None]] = {}
        self._windows: dict[int, Window] = {}
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
        if request.method in UNAUDITED and outcome == "ok":
            return  # (a refused one is audited like any refusal)
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

    def _manages(self, record: Device | Token) -> bool:
        return self.principal.manages(parse_scopes(record.scopes), record.workspace)
