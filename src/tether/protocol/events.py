"""The event types of a host's log, and the exact shape of each one's ``data`` (ARCHITECTURE §6).

Wire vocabulary: the host writes these events, agents report through them, clients read them.
"""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    """Every event type of the log, with the exact shape of its ``data``."""

    SESSION_STARTED = "session.started"
    """{agent: str, workspace: str, command: list[str], title: str, cols: int, rows: int,
    policy: {approval, sandbox} (agent sessions only)} — a new session, status ``running``."""

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

    SESSION_STATUS = "session.status"
    """{status: Status} — a non-terminal status change (e.g. waiting-for-approval, idle)."""

    TURN_STARTED = "turn.started"
    """{turn: str, input: str, model?: str, effort?: str} — an agent session starts working on a
    prompt: status ``running``. ``model``/``effort``: what the person chose with this prompt."""

    TURN_COMPLETED = "turn.completed"
    """{turn: str, status: "completed" | "interrupted" | "failed", error: str | None} — the agent
    finished the turn: status ``idle``; pending approvals of the turn are cleared."""

    ITEM_STARTED = "item.started"
    """{turn: str, item: str, kind: ItemKind, ...} — a new item of a turn. By kind:
    user_message {text}; agent_message {}; reasoning {}; command {command: str, cwd: str};
    file_change {path: str, diff: str}; error {message: str}; other {type: str, title: str,
    summary: str} (an item tether has no view of yet: the agent's type name and a readable
    summary)."""

    ITEM_DELTA = "item.delta"
    """{item: str, stream: "text" | "output", data: str} — streamed agent text or command
    output. Coalesced like ``session.output`` (``first_seq`` on a merged event)."""

    ITEM_COMPLETED = "item.completed"
    """{item: str, kind: ItemKind, status: "completed" | "failed" | "declined", ...} — the item's
    final form: agent_message/reasoning {text}; command {exit_code, output}; file_change
    {path, diff}; error {message}; other {type, title, summary}."""

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

    APPROVAL_REQUESTED = "approval.requested"
    """{approval: str, item: str | None, kind: "command" | "file_change" | "question", details: {...},
    options: list[Decision]} — the agent waits for a person: status ``waiting-for-approval``.
    ``details`` is exactly what will run or change (command and cwd, or path and diff); a question's
    is {questions: [Question]} (agents/base.py), with no options: answered by sessions.answer."""

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

    SESSION_EXITED = "session.exited"
    """{exit_code: int | None, signal: int | None, reason: str | None} — the session ended:
    status ``finished`` when exit_code == 0, else ``failed``. ``reason`` says why when it is
    not a plain exit (e.g. "host restarted", "host shutdown")."""
