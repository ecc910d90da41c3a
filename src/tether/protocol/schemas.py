"""Typed parameters of every application method (the host validates each request with these)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

CommandId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
SessionId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Dimension = Annotated[int, msgspec.Meta(ge=1, le=1000)]
# A 1 MiB prompt must fit; larger input is refused with a clear error.
Text = Annotated[str, msgspec.Meta(max_length=1024 * 1024)]


class _Params(msgspec.Struct, forbid_unknown_fields=True):
    pass


class Empty(_Params):
    pass


class SessionStart(_Params):
    agent: str = "pty"
    command: list[str] = msgspec.field(default_factory=list)  # pty sessions
    prompt: Text | None = None  # agent sessions: the first turn
    approval: str | None = None  # agent sessions: stricter than the host's policy, never looser
    sandbox: str | None = None
    thread: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None  # codex: adopt a thread
    workspace: str | None = None
    cid: CommandId | None = None
    cols: Dimension = 80
    rows: Dimension = 24


class SessionRef(_Params):
    id: SessionId
    cid: CommandId | None = None


class SessionGet(_Params):
    id: SessionId
    scrollback: bool = False


# A model name as the agent lists it (sessions.models), and a reasoning effort ("low", "high"…).
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:/-]+$")]
Effort = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[a-z]+$")]


# An attached image, base64: the host checks its size and that its bytes are of its type.
MAX_IMAGE_BYTES = 2 * 1024 * 1024
MAX_IMAGES = 4


class ImageParam(_Params):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    mime: Literal["image/png", "image/jpeg", "image/gif", "image/webp"]
    data: Annotated[str, msgspec.Meta(min_length=1, max_length=(MAX_IMAGE_BYTES + 2) // 3 * 4)]


class SessionSend(_Params):
    id: SessionId
    text: Text
    cid: CommandId | None = None
    model: ModelName | None = None  # agent sessions: this turn and the next ones
    effort: Effort | None = None
    mode: Effort | None = None  # the agent's collaboration mode (Codex: "plan" or "default")
    images: Annotated[list[ImageParam], msgspec.Meta(max_length=MAX_IMAGES)] | None = None  # this prompt only


BranchOrCommit = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/@~^-]*$")]


class SessionReview(_Params):
    id: SessionId
    base: BranchOrCommit | None = None  # review against this branch (else the uncommitted changes)
    commit: BranchOrCommit | None = None  # review this one commit
    instructions: Annotated[str, msgspec.Meta(min_length=1, max_length=16 * 1024)] | None = None
    cid: CommandId | None = None


class SessionArchive(_Params):
    id: SessionId
    archived: bool = True
    cid: CommandId | None = None


class SessionUnqueue(_Params):
    id: SessionId
    queued: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    cid: CommandId | None = None


class SessionModels(_Params):
    id: SessionId


Answer = Annotated[str, msgspec.Meta(max_length=4096)]


class SessionAnswer(_Params):
    id: SessionId
    approval: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    # question id -> the chosen options' labels and/or free text
    answers: Annotated[dict[Annotated[str, msgspec.Meta(max_length=128)],
                            Annotated[list[Answer], msgspec.Meta(max_length=16)]], msgspec.Meta(max_length=32)]
    cid: CommandId | None = None


class ListThreads(_Params):
    agent: Literal["codex"] = "codex"
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50


class SessionApprove(_Params):
    id: SessionId
    approval: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    decision: Literal["approve", "approve_for_session", "deny"]
    cid: CommandId | None = None


class SessionResize(_Params):
    id: SessionId
    cols: Dimension
    rows: Dimension


class Subscribe(_Params):
    sub: Annotated[int, msgspec.Meta(ge=1, le=2**31)]
    since: Annotated[int, msgspec.Meta(ge=0)] = 0
    session: SessionId | None = None


class ReadEvents(_Params):
    since: Annotated[int, msgspec.Meta(ge=0)] = 0
    session: SessionId | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=2000)] = 1000


class Unsubscribe(_Params):
    sub: Annotated[int, msgspec.Meta(ge=1, le=2**31)]


class PairingCreate(_Params):
    scopes: list[str]
    ttl: Annotated[float, msgspec.Meta(ge=1, le=7 * 86400)] = 600.0
    workspace: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None


class HostLink(_Params):
    host_id: Annotated[str, msgspec.Meta(pattern="^[a-z2-7]{20}$")]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    static_public: Annotated[str, msgspec.Meta(min_length=43, max_length=44)]
    relay_url: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class HostRef(_Params):
    host_id: Annotated[str, msgspec.Meta(pattern="^[a-z2-7]{20}$")]


class RemoteRef(_Params):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class RotateKeys(_Params):
    grace: Annotated[float, msgspec.Meta(ge=0, le=90 * 86400)] = 7 * 86400.0


class PairComplete(_Params):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    identity_public: Annotated[str, msgspec.Meta(max_length=64)]


class PushKeys(_Params):
    p256dh: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    auth: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class PushSubscribe(_Params):
    """A browser's PushSubscription (its toJSON()), for the device that sends it."""

    endpoint: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    keys: PushKeys
    expirationTime: float | None = None


class DeviceRef(_Params):
    id: Annotated[str, msgspec.Meta(max_length=64)]


class DeviceRename(_Params):
    id: Annotated[str, msgspec.Meta(max_length=64)]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


# Tokens live 30 days unless asked otherwise, a year at most. The host accepts a TTL down to 1 s
# (tests and short CI jobs); the CLI asks for at least a minute.
DAY = 86400.0
TOKEN_DEFAULT_TTL = 30 * DAY
TOKEN_MAX_TTL = 365 * DAY


class TokenCreate(_Params):
    scopes: list[str]
    ttl: Annotated[float, msgspec.Meta(ge=1, le=TOKEN_MAX_TTL)] = TOKEN_DEFAULT_TTL
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    workspace: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None


class TokenRef(_Params):
    id: Annotated[str, msgspec.Meta(max_length=64)]


class AuditList(_Params):
    since: Annotated[float, msgspec.Meta(ge=0)] = 0.0  # unix time
    after: Annotated[int, msgspec.Meta(ge=0)] = 0  # entry id: the page after this one
    limit: Annotated[int, msgspec.Meta(ge=1, le=5000)] = 1000
