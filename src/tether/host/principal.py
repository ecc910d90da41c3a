"""Who is calling the host: the local owner, a paired device, or an access token, with its grant."""

from __future__ import annotations

from dataclasses import dataclass

from tether.host.audit import Actor
from tether.host.workspaces import within
from tether.protocol.scopes import ALL_SCOPES, Scope


@dataclass(frozen=True)
class Principal:
    kind: str  # "local" (the owner, on the unix socket), "device" or "token"
    id: str
    name: str
    scopes: frozenset[Scope]
    workspace: str | None = None
    expires_at: float | None = None  # tokens only

    @classmethod
    def local(cls) -> Principal:
        return cls(kind="local", id="local", name="local owner", scopes=ALL_SCOPES)

    def describe(self) -> str:
        if self.kind == "local":
            return "the local owner"
        return f"{self.kind} {self.name!r} ({self.id})"

    @property
    def actor(self) -> Actor:
        return Actor(self.kind, self.id, self.name)

    def sees(self, workspace: str | None) -> bool:
        """The one visibility rule: a session, its events or a thread in ``workspace`` exist for
        this caller only inside its workspace restriction (an unrestricted caller sees all)."""
        return within(workspace, self.workspace)

    def manages(self, scopes: frozenset[Scope], workspace: str | None) -> bool:
        """Whether this caller may see, rename or revoke a device or token with that grant: the
        owner manages all; others only grants no wider than their own, in scopes and workspace
        (so a restricted admin cannot cut off a wider device)."""
        if self.kind == "local":
            return True
        return scopes <= self.scopes and within(workspace, self.workspace)

    def scope_hint(self) -> str:
        """What to do when a method needs a scope this caller lacks."""
        if self.kind == "token":
            return "create a token with the scopes it needs (tether tokens create --scopes ...)"
        return "pair again with a grant that includes it (tether pair --scopes ...)"
