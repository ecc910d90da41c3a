"""The event types of a host's log, and the exact shape of each one's ``data`` (ARCHITECTURE §6).

Wire vocabulary: the host writes these events, agents report through them, clients read them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, get_args

import msgspec


class ItemKind(StrEnum):
    """What an item of a turn is (``item.started`` / ``item.completed`` ``kind``)."""

    USER_MESSAGE = "user_message"
    AGENT_MESSAGE = "agent_message"
    REASONING = "reasoning"
    COMMAND = "command"
    FILE_CHANGE = "file_change"
    ERROR = "error"
    PLAN = "plan"  # the agent's to-do list as it stands now (Codex's plan, Claude Code's tasks)
    TOOL_CALL = "tool_call"  # a tool with no view of its own (MCP, web fetch/search): input and output
    CHANGES = "changes"  # the turn's changes as a whole so far (Codex's turn diff): the latest one counts
    OTHER = "other"  # a type tether has no view of yet: shown as its name and a summary


class EventType(StrEnum):
    """Every event type of the log, with the exact shape of its ``data``."""

    SESSION_STARTED = "session.started"
    """{agent: str, workspace: str, command: list[str], title: str, cols: int, rows: int,
    policy: {approval, sandbox} (agent sessions only), conversation: str | None (the agent's own id
    of the conversation, which a restarted host resumes)} — a new session, status ``running``."""

    SESSION_INPUT = "session.input"
    """{text: str} — input sent to the session (``cid`` is the client's command id)."""

    SESSION_OUTPUT = "session.output"
    """{stream: "stdout" | "pty", data: str} — output text, decoded UTF-8.
    In a coalesced event (eventlog.Subscription) also ``first_seq: int``: the seq of the first
    merged event; the event's own ``seq`` is the last one."""

    SESSION_RESIZED = "session.resized"
    """{cols: int, rows: int} — the terminal size changed."""

    SESSION_INTERRUPTED = "session.interrupted"
    """{} — an interrupt (Ctrl-C) was sent (``cid`` set when a client asked)."""

    SESSION_ARCHIVED = "session.archived"
    """{archived: bool} — a person put the session away (or back): lists show it only when asked."""

    SESSION_DELETED = "session.deleted"
    """{} — the session was deleted: every other event of it is gone from the log, this one
    remains so that clients drop it too."""

    SESSION_STATUS = "session.status"
    """{status: Status} — a non-terminal status change (e.g. waiting-for-approval, idle)."""

    TURN_STARTED = "turn.started"
    """{turn: str, input: str, model?: str, effort?: str, mode?: str, images?: [{name, mime, bytes}]}
    — an agent session starts working on a prompt: status ``running``. ``model``/``effort``/``mode``:
    what the person chose with this prompt; ``images``: what was attached to it (not the bytes);
    ``action``: a turn that is not a prompt (``sessions.review``, ``sessions.compact``), whose
    ``input`` says what it does."""

    TURN_QUEUED = "turn.queued"
    """{queued: str, input: str, model?, effort?, mode?, images?, action?} — a prompt sent while the
    agent works: held by the host, it starts (``turn.started`` with ``queued``) when the running
    turn ends, in order; ``cid`` is the sending client's, and stays with its ``turn.started``."""

    TURN_UNQUEUED = "turn.unqueued"
    """{queued: str, reason: str} — a queued prompt that will not start: cancelled
    (``sessions.unqueue``), or the session ended."""

    TURN_COMPLETED = "turn.completed"
    """{turn: str, status: "completed" | "interrupted" | "failed", error: str | None} — the agent
    finished the turn: status ``idle``; pending approvals of the turn are cleared."""

    ITEM_STARTED = "item.started"
    """{turn: str, item: str, kind: ItemKind, ...} — a new item of a turn. By kind:
    user_message {text}; agent_message {}; reasoning {}; command {command: str, cwd: str};
    file_change {path: str, diff: str}; error {message: str}; plan {steps: [{text, status:
    "pending" | "in_progress" | "completed"}], explanation: str | None, text?: str} (the whole
    list as it now stands: a later plan item replaces an earlier one; ``text``: a plan written as
    prose, streamed as ``item.delta`` — Codex's plan mode); tool_call {tool: str, server: str | None,
    input: str} (an MCP tool, a web fetch or search: its arguments, readable); changes {diff: str,
    paths: [str]} (every change of the turn so far as one unified diff, as the agent computes it: a
    later changes item of the same turn replaces the earlier); other {type: str,
    title: str, summary: str} (an item tether has no view of yet: the agent's type name and a
    readable summary)."""

    ITEM_DELTA = "item.delta"
    """{item: str, stream: "text" | "output", data: str} — streamed agent text or command
    output. Coalesced like ``session.output`` (``first_seq`` on a merged event)."""

    ITEM_COMPLETED = "item.completed"
    """{item: str, kind: ItemKind, status: "completed" | "failed" | "declined", ...} — the item's
    final form: agent_message/reasoning {text}; command {exit_code, output}; file_change
    {path, diff}; error {message}; plan {steps, explanation, text}; tool_call {tool, server, input,
    output}; changes {diff, paths}; other {type, title, summary}."""

    TURN_RETRYING = "turn.retrying"
    """{turn: str, attempt: int, message: str, details: str | None} — the agent lost its model
    server and is retrying (Codex: "Reconnecting..."): the session shows "reconnecting (attempt n)"
    until the turn goes on or ends. ``attempt`` counts from 1 within the turn."""

    AGENT_NOTICE = "agent.notice"
    """{turn: str | None, level: "warning" | "info", source: str, message: str} — something the
    agent said that is not part of an item: a warning (an unknown model, a config problem, a
    deprecation), a question tether refused to answer ("refused: ..."), or a message of a type
    tether does not know yet (a newer agent), summarised. ``source`` is the agent's own name for
    it (e.g. Codex's notification method)."""

    AGENT_USAGE = "agent.usage"
    """{turn: str | None, total_tokens: int | None, last_tokens: int | None, context_window: int |
    None, rate_limit: {used_percent: int, window_minutes: int | None, resets_at: int | None} | None,
    cost_usd?: float | None} — what the session has used so far (tokens of the whole thread, of the
    last model call or turn, the model's context window, the cost as the agent prices it) and the
    account's rate limit, as the agent reports them; a field the
    agent did not report this time is null (keep the last one). Shown in the session header."""

    APPROVAL_REQUESTED = "approval.requested"
    """{approval: str, item: str | None, kind: ApprovalKind, details: {...}, options: list[Decision]}
    — the agent waits for a person: status ``waiting-for-approval``. ``details`` is exactly what
    will run or change: command {command, cwd, reason}; file_change {path, paths, diff, reason};
    tool {tool, server, input, reason} (a tool with no view of its own, e.g. a web fetch: its
    arguments); plan {plan, path} (the agent's plan, to approve before it acts on it); a
    question's is {questions: [Question]} (agents/base.py), with no options: answered by
    sessions.answer."""

    APPROVAL_RESOLVED = "approval.resolved"
    """{approval: str, decision: Decision | "answered", by: {id, name}, answers?: {question id:
    [str]}} (a question's answers; a secret part as "[secret]") — first answer wins: a second
    resolution of the same approval is refused before it reaches the log."""

    APPROVAL_CLEARED = "approval.cleared"
    """{approval: str, reason: str} — the approval went away unanswered (turn interrupted, the
    agent resolved it itself, the session ended)."""

    HOST_LINKED = "host.linked"
    """{host_id, name, static_public, relay_url} (no session) — a host this one started over SSH
    and whose devices it shares: clients add it to their hosts without pairing again."""

    HOST_UNLINKED = "host.unlinked"
    """{host_id} (no session) — that linked host was forgotten (`tether ssh forget`): clients
    drop the entry they learned for it."""

    MAILBOX_REFUSED = "mailbox.refused"
    """{cid: str | None, method: str, code: str, message: str, queued_at: float, by: {id, name}} — a
    request a device queued while the host was away (the relay's mailbox) that the host would not
    apply when it came back: an approval answered or withdrawn meanwhile, a session that ended…
    ``message`` says why; ``cid`` is the request's, so the device shows it beside what it queued."""

    SESSION_EXITED = "session.exited"
    """{exit_code: int | None, signal: int | None, reason: str | None} — the session ended:
    status ``finished`` when exit_code == 0, else ``failed``. ``reason`` says why when it is
    not a plain exit (e.g. "host restarted", "host shutdown")."""


# -- the shape of each event's data ---------------------------------------------------------------
# Declared once. The adapters build these structs (AgentContext.emit takes one; its class says the
# event type), and every append is checked against them (EventLog), so no adapter or host path can
# log an event the clients do not expect. The host's own dict-built events may carry fields beyond
# these; the ones declared must be there, with these types.


class _Data(msgspec.Struct):
    pass


class SessionInterrupted(_Data):
    pass


class SessionDeleted(_Data):
    pass


class SessionStarted(_Data):
    agent: str
    workspace: str
    command: list[str]
    title: str
    cols: int
    rows: int
    policy: dict[str, str] | None = None
    conversation: str | None = None


class SessionInput(_Data):
    text: str


class SessionOutput(_Data):
    stream: str
    data: str


class SessionResized(_Data):
    cols: int
    rows: int


class SessionArchived(_Data):
    archived: bool


class SessionStatus(_Data):
    status: str


class ApprovalKind(StrEnum):
    """What an ``approval.requested`` asks a person about."""

    COMMAND = "command"
    FILE_CHANGE = "file_change"
    TOOL = "tool"
    PLAN = "plan"
    QUESTION = "question"


class AttachedImage(msgspec.Struct):
    name: str
    mime: str
    bytes: int


class TurnQueued(_Data):
    queued: str
    input: str


class TurnUnqueued(_Data):
    queued: str
    reason: str


class TurnStarted(_Data):
    turn: str
    input: str
    queued: str | None = None
    model: str | None = None
    effort: str | None = None
    mode: str | None = None
    images: list[AttachedImage] | None = None
    action: Literal["review", "compact"] | None = None


class TurnCompleted(_Data):
    turn: str
    status: Literal["completed", "interrupted", "failed"]
    error: str | None


class TurnRetrying(_Data):
    turn: str
    attempt: int
    message: str
    details: str | None


NoticeLevel = Literal["warning", "info"]
DeltaStream = Literal["text", "output"]


class AgentNotice(_Data):
    turn: str | None
    level: NoticeLevel
    source: str
    message: str


class RateLimit(_Data):
    used_percent: int
    window_minutes: int | None = None
    resets_at: int | None = None


class AgentUsage(_Data):
    turn: str | None
    total_tokens: int | None = None
    last_tokens: int | None = None
    context_window: int | None = None
    rate_limit: RateLimit | None = None
    cost_usd: float | None = None


class _Item(_Data, tag_field="kind"):
    turn: str
    item: str


ItemStatus = Literal["completed", "failed", "declined"]
StepStatus = Literal["pending", "in_progress", "completed"]


class _Done(_Item):
    status: ItemStatus


class UserMessageStarted(_Item, tag=ItemKind.USER_MESSAGE.value):
    text: str = ""


class AgentMessageStarted(_Item, tag=ItemKind.AGENT_MESSAGE.value):
    pass


class ReasoningStarted(_Item, tag=ItemKind.REASONING.value):
    pass


class CommandStarted(_Item, tag=ItemKind.COMMAND.value):
    command: str
    cwd: str


class FileChangeStarted(_Item, tag=ItemKind.FILE_CHANGE.value):
    path: str
    diff: str
    paths: list[str] | None = None


class ErrorStarted(_Item, tag=ItemKind.ERROR.value):
    message: str


class PlanStep(msgspec.Struct):
    text: str
    status: StepStatus


class PlanStarted(_Item, tag=ItemKind.PLAN.value):
    steps: list[PlanStep]
    explanation: str | None = None
    text: str = ""


class ToolCallStarted(_Item, tag=ItemKind.TOOL_CALL.value):
    tool: str
    input: str
    server: str | None = None


class ChangesStarted(_Item, tag=ItemKind.CHANGES.value):
    diff: str
    paths: list[str]


class OtherStarted(_Item, tag=ItemKind.OTHER.value):
    type: str
    title: str
    summary: str


class UserMessageDone(_Done, tag=ItemKind.USER_MESSAGE.value):
    text: str


class AgentMessageDone(_Done, tag=ItemKind.AGENT_MESSAGE.value):
    text: str


class ReasoningDone(_Done, tag=ItemKind.REASONING.value):
    text: str


class CommandDone(_Done, tag=ItemKind.COMMAND.value):
    command: str
    cwd: str
    exit_code: int | None
    output: str
    error: str | None = None  # why the command failed to run, when the agent says (builtin)


class FileChangeDone(_Done, tag=ItemKind.FILE_CHANGE.value):
    path: str
    diff: str
    paths: list[str] | None = None
    error: str | None = None  # why the change failed, when the agent says (builtin)


class ErrorDone(_Done, tag=ItemKind.ERROR.value):
    message: str


class PlanDone(_Done, tag=ItemKind.PLAN.value):
    steps: list[PlanStep]
    explanation: str | None = None
    text: str = ""


class ChangesDone(_Done, tag=ItemKind.CHANGES.value):
    diff: str
    paths: list[str]


class ToolCallDone(_Done, tag=ItemKind.TOOL_CALL.value):
    tool: str
    input: str
    output: str
    server: str | None = None


class OtherDone(_Done, tag=ItemKind.OTHER.value):
    type: str
    title: str
    summary: str


class ItemDelta(_Data):
    item: str
    stream: DeltaStream
    data: str


class ApprovalRequested(_Data):
    approval: str
    item: str | None
    kind: ApprovalKind
    details: dict[str, Any]
    options: list[str]


class ApprovalResolved(_Data):
    approval: str
    decision: Literal["approve", "approve_for_session", "deny", "answered"]
    by: dict[str, str]
    answers: dict[str, list[str]] | None = None


class ApprovalCleared(_Data):
    approval: str
    reason: str


class HostLinked(_Data):
    host_id: str
    name: str
    static_public: str
    relay_url: str


class HostUnlinked(_Data):
    host_id: str


class MailboxRefused(_Data):
    cid: str | None
    method: str
    code: str
    message: str
    queued_at: float
    by: dict[str, str]


class SessionExited(_Data):
    exit_code: int | None
    signal: int | None
    reason: str | None


ItemStarted = (UserMessageStarted | AgentMessageStarted | ReasoningStarted | CommandStarted | FileChangeStarted
               | ErrorStarted | PlanStarted | ToolCallStarted | ChangesStarted | OtherStarted)
ItemCompleted = (UserMessageDone | AgentMessageDone | ReasoningDone | CommandDone | FileChangeDone | ErrorDone
                 | PlanDone | ToolCallDone | ChangesDone | OtherDone)

EVENT_DATA: dict[EventType, Any] = {
    EventType.SESSION_STARTED: SessionStarted,
    EventType.SESSION_INPUT: SessionInput,
    EventType.SESSION_OUTPUT: SessionOutput,
    EventType.SESSION_RESIZED: SessionResized,
    EventType.SESSION_INTERRUPTED: SessionInterrupted,
    EventType.SESSION_STATUS: SessionStatus,
    EventType.SESSION_ARCHIVED: SessionArchived,
    EventType.SESSION_DELETED: SessionDeleted,
    EventType.TURN_STARTED: TurnStarted,
    EventType.TURN_COMPLETED: TurnCompleted,
    EventType.TURN_QUEUED: TurnQueued,
    EventType.TURN_UNQUEUED: TurnUnqueued,
    EventType.ITEM_STARTED: ItemStarted,
    EventType.ITEM_DELTA: ItemDelta,
    EventType.ITEM_COMPLETED: ItemCompleted,
    EventType.TURN_RETRYING: TurnRetrying,
    EventType.AGENT_NOTICE: AgentNotice,
    EventType.AGENT_USAGE: AgentUsage,
    EventType.APPROVAL_REQUESTED: ApprovalRequested,
    EventType.APPROVAL_RESOLVED: ApprovalResolved,
    EventType.APPROVAL_CLEARED: ApprovalCleared,
    EventType.HOST_LINKED: HostLinked,
    EventType.HOST_UNLINKED: HostUnlinked,
    EventType.MAILBOX_REFUSED: MailboxRefused,
    EventType.SESSION_EXITED: SessionExited,
}


EventData = _Data
"""What a writer of the log builds: one of the structs above, whose class says its event type."""

# Each struct's event type (an item's started and completed structs are told apart by class).
_TYPE_OF: dict[type, EventType] = {
    cls: type_ for type_, shape in EVENT_DATA.items() for cls in (get_args(shape) or (shape,))
}
# The completed struct of each kind of item, by its started struct.
_DONE_OF: dict[type, type] = {
    started: done for started in get_args(ItemStarted) for done in get_args(ItemCompleted)
    if done.__struct_config__.tag == started.__struct_config__.tag
}


def encoded(data: EventData) -> tuple[EventType, dict[str, Any]]:
    """The event type of ``data`` and its data as the log stores it (enums as their values)."""
    return _TYPE_OF[type(data)], msgspec.to_builtins(data)


def completed(started: ItemStarted, status: ItemStatus, **fields: Any) -> ItemCompleted:
    """The ``item.completed`` of the item ``started`` began: what it said, with ``status`` and
    ``fields`` (the kind's results, or fields that changed)."""
    done: ItemCompleted = _DONE_OF[type(started)](**{**msgspec.structs.asdict(started), "status": status, **fields})
    return done


class BadEvent(ValueError):
    """An event whose data does not have its declared shape (a bug of whoever logged it)."""


def check_data(type: str, data: dict[str, Any]) -> None:
    """Raise :class:`BadEvent` unless ``data`` has the shape declared for ``type``."""
    shape = EVENT_DATA.get(type)  # type: ignore[call-overload]  # a str: StrEnum keys hash alike
    if shape is None:
        raise BadEvent(f"no event type {type!r} is declared (protocol/events.py EventType)")
    try:
        # As the log stores it (enums as their values): what a client will read.
        msgspec.convert(msgspec.to_builtins(data), shape)
    except msgspec.ValidationError as exc:
        raise BadEvent(f"a {type} event with the wrong data: {exc}") from None

