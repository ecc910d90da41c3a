"""Scopes, and the one table that says which scope each application method needs.

A device or token may call a method only if its grant holds the method's scope
(ARCHITECTURE §5). ``docs/security.md`` shows this same table; a test checks they agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from tether.errors import UsageError


class Scope(StrEnum):
    READ = "read"  # see hosts, sessions, events
    PROMPT = "prompt"  # start sessions, send input, interrupt
    APPROVE = "approve"  # answer approval requests
    ADMIN = "admin"  # pair, revoke, tokens, policy


ALL_SCOPES: frozenset[Scope] = frozenset(Scope)
DEFAULT_PAIRING_SCOPES: frozenset[Scope] = frozenset({Scope.READ, Scope.PROMPT, Scope.APPROVE})

METHOD_SCOPES: dict[str, Scope] = {
    "host.info": Scope.READ,
    "sessions.list": Scope.READ,
    "sessions.get": Scope.READ,
    "events.read": Scope.READ,
    "events.subscribe": Scope.READ,
    "events.unsubscribe": Scope.READ,
    "sessions.start": Scope.PROMPT,
    "sessions.send": Scope.PROMPT,
    "sessions.interrupt": Scope.PROMPT,
    "sessions.resize": Scope.PROMPT,
    "sessions.diff": Scope.READ,
    "sessions.threads": Scope.READ,
    "sessions.approve": Scope.APPROVE,
    "devices.list": Scope.ADMIN,
    "devices.rename": Scope.ADMIN,
    "devices.revoke": Scope.ADMIN,
    "pairing.create": Scope.ADMIN,
    "host.rotate_keys": Scope.ADMIN,
    "hosts.link": Scope.ADMIN,
    "hosts.linked": Scope.READ,
    "hosts.unlink": Scope.ADMIN,
    "remotes.tunnel": Scope.ADMIN,
    "remotes.tunnels": Scope.ADMIN,
    "tokens.create": Scope.ADMIN,
    "tokens.list": Scope.ADMIN,
    "tokens.revoke": Scope.ADMIN,
    "audit.list": Scope.ADMIN,
}


def parse_scopes(value: str | Iterable[str]) -> frozenset[Scope]:
    """Scopes from ``"read,prompt"`` or a list; :class:`UsageError` naming an unknown one."""
    items = value.split(",") if isinstance(value, str) else list(value)
    scopes: set[Scope] = set()
    for item in items:
        name = item.strip().lower()
        if not name:
            continue
        try:
            scopes.add(Scope(name))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise UsageError(f"unknown scope {name!r}", hint=f"use some of: {known}") from None
    if not scopes:
        raise UsageError("no scopes given", hint="e.g. --scopes read,prompt")
    return frozenset(scopes)


def scope_list(scopes: Iterable[Scope | str]) -> list[str]:
    """Scopes in their canonical order, as strings."""
    order = [s.value for s in Scope]
    return sorted({str(s) for s in scopes}, key=order.index)
