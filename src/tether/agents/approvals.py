"""What people approved for the rest of a session, for the agents that ask tether before acting
(builtin, claude): one answer covers later requests of its kind, or the same request again."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ApprovalPolicy = Literal["untrusted", "on-request", "never"]
ApprovalKind = str  # "command", "file_change", or "tool:NAME" (each tool its own kind)


@dataclass
class ApprovalMemory:
    """What was approved for the rest of the session; keep one per session, across turns."""

    kinds: set[str] = field(default_factory=set)
    exact: set[tuple[str, str]] = field(default_factory=set)

    def needs_approval(self, policy: ApprovalPolicy, kind: ApprovalKind, key: str) -> bool:
        if policy == "never":
            return False
        if policy == "on-request":
            return kind not in self.kinds
        return (kind, key) not in self.exact

    def remember(self, policy: ApprovalPolicy, kind: ApprovalKind, key: str) -> None:
        if policy == "on-request":
            self.kinds.add(kind)
        else:
            self.exact.add((kind, key))
