"""The host's application methods: one handler per method, each checked against its scope.

Every request from a device and from the local owner comes through :meth:`ApiConnection.handle`:
the method must be known, the caller's grant must hold the method's scope (declared with the
method in :mod:`tether.protocol.methods`), the params must validate, and commands with a client id are
applied once.

One module per method family (:mod:`.sessions`, :mod:`.events`, :mod:`.grants`, :mod:`.links`,
:mod:`.push`) on
the shared :mod:`.core`; each handler is bound to its declared method with ``@handles``.
"""

from __future__ import annotations

from tether.host.api.core import HANDLERS, ApiHost, Caller, Forbidden, NotFound, UnknownMethod, handles
from tether.host.api.events import READ_PAGE_BYTES, EventMethods
from tether.host.api.flow import MAX_SUBSCRIPTIONS, chunk_events
from tether.host.api.grants import GrantMethods
from tether.host.api.links import LinkMethods
from tether.host.api.push import PushMethods
from tether.host.api.sessions import SessionMethods

__all__ = [
    "HANDLERS",
    "MAX_SUBSCRIPTIONS",
    "READ_PAGE_BYTES",
    "ApiConnection",
    "ApiHost",
    "Caller",
    "Forbidden",
    "NotFound",
    "UnknownMethod",
    "chunk_events",
    "handles",
]


class ApiConnection(SessionMethods, EventMethods, GrantMethods, LinkMethods, PushMethods):
    """The methods as seen by one connected caller (it owns that caller's subscriptions)."""
