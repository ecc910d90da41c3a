"""Who is calling the host: the local owner, or a paired device with its grant."""

from __future__ import annotations

from dataclasses import dataclass

from tether.protocol.scopes import ALL_SCOPES, Scope


@dataclass(frozen=True)
class Principal:
    kind: str  # "local" (the owner, on the unix socket) or "device"
    id: str
    name: str
    scopes: frozenset[Scope]
    workspace: str | None = None

    @classmethod
    def local(cls) -> Principal:
        return cls(kind="local", id="local", name="local owner", scopes=ALL_SCOPES)

    def describe(self) -> str:
        return "the local owner" if self.kind == "local" else f"device {self.name!r} ({self.id})"
