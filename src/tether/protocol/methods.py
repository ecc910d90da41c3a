"""Every application method of a host, declared once: its name, the scope a caller needs, and
the type its params must validate against (ARCHITECTURE §5).

The host binds a handler to each (``host/api/`` ``@handles``) and a test checks that every
method has exactly one; docs/security.md's scope table and docs/protocol.md are checked against
this table too. A new method is a line here, its handler and its test.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from tether.protocol import schemas
from tether.protocol.scopes import Scope


@dataclass(frozen=True)
class Method:
    name: str
    scope: Scope
    params: type[msgspec.Struct]


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("host.info", Scope.READ, schemas.Empty),
    Method("host.ping", Scope.READ, schemas.Empty),
    Method("sessions.list", Scope.READ, schemas.Empty),
    Method("sessions.get", Scope.READ, schemas.SessionGet),
    Method("events.read", Scope.READ, schemas.ReadEvents),
    Method("events.subscribe", Scope.READ, schemas.Subscribe),
    Method("events.unsubscribe", Scope.READ, schemas.Unsubscribe),
    Method("sessions.start", Scope.PROMPT, schemas.SessionStart),
    Method("sessions.send", Scope.PROMPT, schemas.SessionSend),
    Method("sessions.interrupt", Scope.PROMPT, schemas.SessionRef),
    Method("sessions.resize", Scope.PROMPT, schemas.SessionResize),
    Method("sessions.diff", Scope.READ, schemas.SessionGet),
    Method("sessions.threads", Scope.READ, schemas.ListThreads),
    Method("sessions.models", Scope.READ, schemas.SessionModels),
    Method("sessions.approve", Scope.APPROVE, schemas.SessionApprove),
    Method("sessions.answer", Scope.PROMPT, schemas.SessionAnswer),
    Method("sessions.review", Scope.PROMPT, schemas.SessionReview),
    Method("sessions.compact", Scope.PROMPT, schemas.SessionRef),
    Method("sessions.unqueue", Scope.PROMPT, schemas.SessionUnqueue),
    Method("sessions.archive", Scope.PROMPT, schemas.SessionArchive),
    Method("sessions.delete", Scope.PROMPT, schemas.SessionRef),
    Method("push.subscribe", Scope.READ, schemas.PushSubscribe),
    Method("push.unsubscribe", Scope.READ, schemas.Empty),
    Method("devices.list", Scope.ADMIN, schemas.Empty),
    Method("devices.rename", Scope.ADMIN, schemas.DeviceRename),
    Method("devices.revoke", Scope.ADMIN, schemas.DeviceRef),
    Method("pairing.create", Scope.ADMIN, schemas.PairingCreate),
    Method("host.rotate_keys", Scope.ADMIN, schemas.RotateKeys),
    Method("hosts.link", Scope.ADMIN, schemas.HostLink),
    Method("hosts.linked", Scope.READ, schemas.Empty),
    Method("hosts.unlink", Scope.ADMIN, schemas.HostRef),
    Method("remotes.tunnel", Scope.ADMIN, schemas.RemoteRef),
    Method("remotes.tunnels", Scope.ADMIN, schemas.Empty),
    Method("tokens.create", Scope.ADMIN, schemas.TokenCreate),
    Method("tokens.list", Scope.ADMIN, schemas.Empty),
    Method("tokens.revoke", Scope.ADMIN, schemas.TokenRef),
    Method("audit.list", Scope.ADMIN, schemas.AuditList),
)}

# The scope each method needs, as the docs' tables show it.
METHOD_SCOPES: dict[str, Scope] = {name: m.scope for name, m in METHODS.items()}
