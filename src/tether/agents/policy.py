"""The host's policy for agents (ARCHITECTURE §7): when to ask for approval, and how tightly
to sandbox. Both are ordered from strict to loose; a client may tighten its own session's policy
but never loosen it beyond the host's."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from tether.errors import TetherError


class PolicyError(TetherError):
    code = "policy"


class Approval(StrEnum):
    UNTRUSTED = "untrusted"  # ask before every command and every file change
    ON_REQUEST = "on-request"  # ask before commands and file changes unless approved for the session
    NEVER = "never"  # never ask (the sandbox still applies)


class Sandbox(StrEnum):
    READ_ONLY = "read-only"
    WORKSPACE_WRITE = "workspace-write"
    FULL_ACCESS = "full-access"


# Index 0 is the strictest.
_APPROVAL_ORDER = [Approval.UNTRUSTED, Approval.ON_REQUEST, Approval.NEVER]
_SANDBOX_ORDER = [Sandbox.READ_ONLY, Sandbox.WORKSPACE_WRITE, Sandbox.FULL_ACCESS]


@dataclass(frozen=True)
class Policy:
    approval: Approval = Approval.ON_REQUEST
    sandbox: Sandbox = Sandbox.WORKSPACE_WRITE

    def to_json(self) -> dict[str, str]:
        return {"approval": self.approval.value, "sandbox": self.sandbox.value}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Policy:
        """A policy as :meth:`to_json` wrote it; :class:`PolicyError` if it is not one."""
        return cls(parse_approval(data.get("approval", Approval.ON_REQUEST)),
                   parse_sandbox(data.get("sandbox", Sandbox.WORKSPACE_WRITE)))

    def within(self, other: Policy) -> Policy:
        """Each part the stricter of this policy's and ``other``'s."""
        return Policy(min(self.approval, other.approval, key=_APPROVAL_ORDER.index),
                      min(self.sandbox, other.sandbox, key=_SANDBOX_ORDER.index))

    def narrowed(self, approval: str | None = None, sandbox: str | None = None) -> Policy:
        """This policy made stricter as a client asks; :class:`PolicyError` if it asks for looser."""
        new_approval = self.approval if approval is None else _parse(Approval, approval, "approval")
        new_sandbox = self.sandbox if sandbox is None else _parse(Sandbox, sandbox, "sandbox")
        if _APPROVAL_ORDER.index(new_approval) > _APPROVAL_ORDER.index(self.approval):
            raise PolicyError(
                f"approval policy {new_approval.value!r} is looser than the host's {self.approval.value!r}",
                hint="a session can only be made stricter; an admin can change the host policy",
            )
        if _SANDBOX_ORDER.index(new_sandbox) > _SANDBOX_ORDER.index(self.sandbox):
            raise PolicyError(
                f"sandbox {new_sandbox.value!r} is looser than the host's {self.sandbox.value!r}",
                hint="a session can only be made stricter; an admin can change the host policy",
            )
        return Policy(new_approval, new_sandbox)


E = TypeVar("E", bound=StrEnum)


def _parse(kind: type[E], value: str, what: str) -> E:
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(m.value for m in kind)
        raise PolicyError(f"unknown {what} {value!r}", hint=f"use one of: {choices}") from None


def parse_approval(value: str) -> Approval:
    return _parse(Approval, value, "approval policy")


def parse_sandbox(value: str) -> Sandbox:
    return _parse(Sandbox, value, "sandbox")


@dataclass(frozen=True)
class AgentConfig:
    """One agent as the host's config sets it up: its policy ceiling and its options."""

    name: str
    policy: Policy = field(default_factory=Policy)
    options: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True

    def secret(self, key: str) -> str | None:
        value = self.options.get(key)
        return value if isinstance(value, str) else None
