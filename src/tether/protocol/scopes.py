"""Scopes: what a device or token may do.

A device or token may call a method only if its grant holds the method's scope
(ARCHITECTURE §5); which scope each method needs is declared with the method
(:mod:`tether.protocol.methods`).
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
