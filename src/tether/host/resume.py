"""Agent sessions outlive the host process: what the log says when the host stopped under one, and
what a restarted host reads back to pick its conversation up (ARCHITECTURE §7).

A turns agent's conversation is kept either by the agent itself (a Codex thread, a Claude Code
session: its id is ``session.started``'s ``conversation``) or by the log (the builtin agent: its
prompts and what it answered and did, read back as a transcript). Pure functions over one
database connection, run by the session manager inside its transactions.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from tether.agents.base import Exchange, ItemKind, Resumed
from tether.host.event import new_id
from tether.host.eventlog import AppendItem
from tether.host.projection import Status, pending_approvals
from tether.protocol.events import AgentNotice, EventType, encoded

# What a person reads on the session, once per stop, and why a turn or a queued prompt ended.
NOTICE = "The host stopped; the agent's conversation goes on with your next prompt."
TURN_LOST = "the host stopped while the agent worked on this turn"
QUEUED_LOST = "the host stopped before it started; send it again"

# The builtin agent gets back the latest turns within this many characters (its model's context
# is finite, and a long session must not make every later request huge); one item at most this.
TRANSCRIPT_CHARS = 200_000
ITEM_CHARS = 4_000


def notice() -> AgentNotice:
    return AgentNotice(turn=None, level="info", source="host", message=NOTICE)


def suspension(conn: sqlite3.Connection, session: dict[str, Any]) -> list[AppendItem]:
    """The events that close what a host that stopped without saying so (a crash, SIGKILL) left
    open in the agent session ``session`` (its projection row): its turn fails, its approvals are
    cleared, prompts it still queued are said dropped; and, unless the log says it already, a
    notice that the conversation goes on."""
    sid = session["id"]
    items: list[AppendItem] = []
    turn = session.get("turn")
    if session["status"] in (Status.RUNNING, Status.WAITING_FOR_APPROVAL) and turn:
        items += [(sid, EventType.APPROVAL_CLEARED, {"approval": a["approval"], "reason": TURN_LOST}, None)
                  for a in pending_approvals(conn, sid)]
        error = {"turn": turn, "item": new_id("i"), "kind": ItemKind.ERROR, "status": "failed", "message": TURN_LOST}
        items.append((sid, EventType.ITEM_COMPLETED, error, None))
        items.append((sid, EventType.TURN_COMPLETED, {"turn": turn, "status": "failed", "error": TURN_LOST}, None))
    for queued in still_queued(conn, sid):
        items.append((sid, EventType.TURN_UNQUEUED, {"queued": queued, "reason": QUEUED_LOST}, None))
    if not items and _said(conn, sid):
        return []
    items.append((sid, *encoded(notice()), None))
    return items


def still_queued(conn: sqlite3.Connection, session: str) -> list[str]:
    """Prompts of ``session`` queued and neither started nor dropped, in order."""
    rows = conn.execute(
        "SELECT type, data FROM events WHERE session = ? AND type IN (?, ?, ?) ORDER BY seq",
        (session, EventType.TURN_QUEUED, EventType.TURN_UNQUEUED, EventType.TURN_STARTED),
    )
    open_: dict[str, None] = {}
    for type_, data in rows:
        queued = json.loads(data).get("queued")
        if type_ == EventType.TURN_QUEUED:
            open_[str(queued)] = None
        elif queued is not None:
            open_.pop(str(queued), None)
    return list(open_)


def _said(conn: sqlite3.Connection, session: str) -> bool:
    """Whether the session's last event is already the notice (a clean stop wrote it)."""
    row = conn.execute(
        "SELECT type, data FROM events WHERE session = ? ORDER BY seq DESC LIMIT 1", (session,)
    ).fetchone()
    return row is not None and row[0] == EventType.AGENT_NOTICE and json.loads(row[1]).get("message") == NOTICE


def resumed(conn: sqlite3.Connection, session: str) -> Resumed:
    """What the session's log holds for its agent to go on: the conversation id the agent gave
    when the session started, and the earlier turns as a transcript."""
    row = conn.execute(
        "SELECT data FROM events WHERE session = ? AND type = ? ORDER BY seq LIMIT 1",
        (session, EventType.SESSION_STARTED),
    ).fetchone()
    conversation = json.loads(row[0]).get("conversation") if row is not None else None
    return Resumed(str(conversation) if conversation else None, transcript(conn, session))


def transcript(conn: sqlite3.Connection, session: str) -> tuple[Exchange, ...]:
    """The session's turns as prompt and reply (what the agent said and did, in words), the
    latest within TRANSCRIPT_CHARS."""
    turns: dict[str, tuple[str, list[str]]] = {}
    commands: dict[str, str] = {}  # command item -> its command line (item.started has it)
    rows = conn.execute(
        "SELECT type, data FROM events WHERE session = ? AND type IN (?, ?, ?) ORDER BY seq",
        (session, EventType.TURN_STARTED, EventType.ITEM_STARTED, EventType.ITEM_COMPLETED),
    )
    for type_, raw in rows:
        data = json.loads(raw)
        turn = str(data.get("turn"))
        if type_ == EventType.TURN_STARTED:
            turns[turn] = (str(data.get("input", "")), [])
            continue
        kind = data.get("kind")
        if type_ == EventType.ITEM_STARTED:
            if kind == ItemKind.COMMAND:
                commands[str(data.get("item"))] = str(data.get("command", ""))
            continue
        said = _in_words(data, commands.get(str(data.get("item")), ""))
        if said and turn in turns:
            turns[turn][1].append(said)
    exchanges: list[Exchange] = []
    size = 0
    for prompt, parts in reversed(turns.values()):
        exchange = Exchange(prompt, "\n\n".join(parts))
        size += len(exchange.prompt) + len(exchange.reply)
        if size > TRANSCRIPT_CHARS:
            break
        exchanges.append(exchange)
    return tuple(reversed(exchanges))


def _in_words(item: dict[str, Any], command: str) -> str:
    """A finished item as the agent would recall it; "" for what is not part of its answer."""
    kind = item.get("kind")
    if kind == ItemKind.AGENT_MESSAGE:
        return str(item.get("text", ""))
    if kind == ItemKind.COMMAND:
        shown = _cut(str(item.get("output", "")))
        return f"[ran `{command}`, exit {item.get('exit_code')}]\n{shown}".rstrip()
    if kind == ItemKind.FILE_CHANGE:
        return f"[changed {item.get('path')} ({item.get('status')})]\n{_cut(str(item.get('diff', '')))}".rstrip()
    if kind == ItemKind.TOOL_CALL:
        return f"[used {item.get('tool')}]\n{_cut(str(item.get('output', '')))}".rstrip()
    return ""


def _cut(text: str) -> str:
    return text if len(text) <= ITEM_CHARS else text[:ITEM_CHARS] + "\n[…cut]"
