"""The lower layer of tether's ``codex`` adapter: finding the Codex CLI and talking to
``codex app-server`` over stdio (ARCHITECTURE §7).

Tested against the Codex versions in :data:`SUPPORTED_VERSIONS`; ``scripts/install-codex``
installs the pinned one.
"""

from tether.agents.codex.appserver import (
    ALLOWED_METHODS,
    APPROVAL_METHODS,
    COMMAND_APPROVAL,
    FILE_CHANGE_APPROVAL,
    METHOD_SCOPES,
    AppServer,
    AppServerError,
    AppServerExited,
    Event,
    Exited,
    MethodNotAllowed,
    Notification,
    RefusedRequest,
    RequestState,
    RpcError,
    ServerRequest,
    check_allowed,
)
from tether.agents.codex.binary import (
    PINNED_VERSION,
    SUPPORTED_VERSIONS,
    CodexBinary,
    CodexError,
    find_codex,
)

__all__ = [
    "ALLOWED_METHODS",
    "APPROVAL_METHODS",
    "COMMAND_APPROVAL",
    "FILE_CHANGE_APPROVAL",
    "METHOD_SCOPES",
    "PINNED_VERSION",
    "SUPPORTED_VERSIONS",
    "AppServer",
    "AppServerError",
    "AppServerExited",
    "CodexBinary",
    "CodexError",
    "Event",
    "Exited",
    "MethodNotAllowed",
    "Notification",
    "RefusedRequest",
    "RequestState",
    "RpcError",
    "ServerRequest",
    "check_allowed",
    "find_codex",
]
