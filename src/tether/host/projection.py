"""Session state as a projection of the event log (ARCHITECTURE §6, §7).

The ``sessions`` table is never written except by :func:`apply`, which the event log calls in
the same transaction as the append. So the table always equals "the log folded up to its last
seq", and a snapshot read in one transaction is consistent with a seq.

Event types and their ``data`` are all listed in :class:`~tether.protocol.events.EventType`; session status and its
allowed transitions in :class:`Status` and :data:`TRANSITIONS`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from tether.errors import TetherError
from tether.protocol.events import EventType

if TYPE_CHECKING:
    from tether.host.event import Event

log = logging.getLogger(__name__)

# Enough for a late joiner to see a screenful or two of history; bounded so a chatty session
# does not grow the row without limit. Counted in characters.
SCROLLBACK_CHARS = 64 * 1024


class Status(StrEnum):
    RUNNING = "running"
    WAITING_FOR_APPROVAL = "waiting-for-approval"
    IDLE = "idle"
    FINISHED = "finished"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.FINISHED, Status.FAILED})
TERMINAL_SQL = "(" + ", ".join(f"'{s.value}'" for s in sorted(TERMINAL)) + ")"
_LIVE = frozenset({Status.RUNNING, Status.WAITING_FOR_APPROVAL, Status.IDLE})

# status -> statuses it may move to. Terminal states go nowhere.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.RUNNING: (_LIVE | TERMINAL) - {Status.RUNNING},
    Status.WAITING_FOR_APPROVAL: (_LIVE | TERMINAL) - {Status.WAITING_FOR_APPROVAL},
    Status.IDLE: (_LIVE | TERMINAL) - {Status.IDLE},
    Status.FINISHED: frozenset(),
    Status.FAILED: frozenset(),
}


class IllegalTransition(TetherError):
    code = "illegal_transition"


class ApprovalConflict(TetherError):
    """The approval is not pending any more (answered by someone else, or cleared)."""

    code = "approval_conflict"


def check_transition(old: Status | str, new: Status | str) -> None:
    """Raise :class:`IllegalTransition` unless a session may go from ``old`` to ``new``."""
    try:
        old_s, new_s = Status(old), Status(new)
    except ValueError:
        raise IllegalTransition(f"unknown session status {new!r}") from None
    if new_s not in TRANSITIONS[old_s]:
        if old_s.terminal:
            raise IllegalTransition(f"the session has already {old_s.value}", hint="start a new session")
        raise IllegalTransition(f"a session cannot go from {old_s.value} to {new_s.value}")


# -- apply -------------------------------------------------------------------------------


def apply(conn: sqlite3.Connection, event: Event) -> None:
    """Fold one event into the ``sessions`` table (inside the caller's transaction)."""
    apply_many(conn, [event])


def apply_many(conn: sqlite3.Connection, events: list[Event]) -> None:
    """Fold events in order. Consecutive output of one session is folded in one UPDATE, so a
    burst of small output events does not rewrite the scrollback once per event."""
    i = 0
    while i < len(events):
        ev = events[i]
        if ev.type == EventType.SESSION_OUTPUT and ev.session is not None:
            j = i + 1
            while j < len(events) and events[j].type == ev.type and events[j].session == ev.session:
                j += 1
            _apply_output(conn, events[i:j])
            i = j
        else:
            _apply_one(conn, ev)
            i += 1


def _apply_output(conn: sqlite3.Connection, run: list[Event]) -> None:
    text = "".join(str(e.data.get("data", "")) for e in run)[-SCROLLBACK_CHARS:]
    last = run[-1]
    cur = conn.execute(
        "UPDATE sessions SET scrollback = substr(scrollback || ?, ?), last_activity = ?, last_seq = ? WHERE id = ?",
        (text, -SCROLLBACK_CHARS, last.ts, last.seq, last.session),
    )
    if cur.rowcount == 0:
        log.warning("event %d: output for unknown session %s ignored", last.seq, last.session)


def _apply_one(conn: sqlite3.Connection, ev: Event) -> None:
    if ev.session is None:
        return
    d = ev.data
    if ev.type == EventType.SESSION_STARTED:
        conn.execute(
            "INSERT OR IGNORE INTO sessions (id, agent, workspace, command, title, status, created,"
            " last_activity, last_seq, cols, rows, policy) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ev.session,
                str(d.get("agent", "")),
                str(d.get("workspace", "")),
                json.dumps(list(d.get("command", []))),
                str(d.get("title", "")),
                Status.RUNNING.value,
                ev.ts,
                ev.ts,
                ev.seq,
                int(d.get("cols", 80)),
                int(d.get("rows", 24)),
                json.dumps(d["policy"]) if d.get("policy") else None,
            ),
        )
        return
    if ev.type == EventType.SESSION_DELETED:
        return  # the tombstone of a session whose rows are gone (delete_session)
    row = conn.execute("SELECT status FROM sessions WHERE id = ?", (ev.session,)).fetchone()
    if row is None:
        if ev.type.startswith("session."):
            log.warning("event %d: %s for unknown session %s ignored", ev.seq, ev.type, ev.session)
        return
    status = Status(row[0])
    if ev.type == EventType.SESSION_INPUT:
        conn.execute(
            "UPDATE sessions SET last_activity = ?, last_seq = ? WHERE id = ?",
            (ev.ts, ev.seq, ev.session),
        )
    elif ev.type == EventType.SESSION_ARCHIVED:
        conn.execute("UPDATE sessions SET archived = ?, last_seq = ? WHERE id = ?",
                     (1 if d.get("archived") else 0, ev.seq, ev.session))
    elif ev.type == EventType.SESSION_RESIZED:
        conn.execute(
            "UPDATE sessions SET cols = ?, rows = ?, last_seq = ? WHERE id = ?",
            (int(d["cols"]), int(d["rows"]), ev.seq, ev.session),
        )
    elif ev.type == EventType.SESSION_STATUS:
        if _allowed(ev, status, str(d.get("status"))):
            conn.execute(
                "UPDATE sessions SET status = ?, last_seq = ? WHERE id = ?",
                (str(d["status"]), ev.seq, ev.session),
            )
        else:
            _touch_seq(conn, ev)
    elif ev.type == EventType.SESSION_EXITED:
        _clear_pending(conn, ev, "the session ended")
        code = d.get("exit_code")
        new = Status.FINISHED if code == 0 else Status.FAILED
        if _allowed(ev, status, new):
            conn.execute(
                "UPDATE sessions SET status = ?, exit_code = ?, exit_signal = ?, exit_reason = ?,"
                " last_activity = ?, last_seq = ? WHERE id = ?",
                (new.value, code, d.get("signal"), d.get("reason"), ev.ts, ev.seq, ev.session),
            )
        else:
            _touch_seq(conn, ev)
    elif ev.type == EventType.TURN_STARTED:
        _set_status(conn, ev, status, Status.RUNNING, turn=str(d.get("turn")))
    elif ev.type == EventType.TURN_COMPLETED:
        _clear_pending(conn, ev, "the turn ended")
        _set_status(conn, ev, status, Status.IDLE)
    elif ev.type == EventType.APPROVAL_REQUESTED:
        conn.execute(
            "INSERT INTO approvals (id, session, item, kind, details, options, status, requested_seq)"
            " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
            (str(d["approval"]), ev.session, d.get("item"), str(d["kind"]), json.dumps(d.get("details", {})),
             json.dumps(d.get("options", [])), ev.seq),
        )
        _set_status(conn, ev, status, Status.WAITING_FOR_APPROVAL)
    elif ev.type in (EventType.APPROVAL_RESOLVED, EventType.APPROVAL_CLEARED):
        resolved = ev.type == EventType.APPROVAL_RESOLVED
        by = d.get("by")
        cur = conn.execute(
            "UPDATE approvals SET status = ?, decision = ?, resolved_by = ?, resolved_seq = ?"
            " WHERE id = ? AND session = ? AND status = 'pending'",
            ("resolved" if resolved else "cleared", d.get("decision"), json.dumps(by) if by else None,
             ev.seq, str(d.get("approval")), ev.session),
        )
        if cur.rowcount == 0:
            # Raised inside the append's transaction: the event is never written. This is what
            # makes "first answer wins" exact when two devices answer at once.
            raise ApprovalConflict(
                f"approval {d.get('approval')!r} is not pending (already answered or withdrawn)",
                hint="see the session's events for who resolved it",
            )
        if not _pending_count(conn, ev.session):
            _set_status(conn, ev, status, Status.RUNNING)
        else:
            _touch_seq(conn, ev)
    elif ev.type.startswith(("session.", "item.")):
        # session.interrupted, items and types this version does not fold: the session still saw an event.
        _touch_seq(conn, ev)


def _allowed(ev: Event, old: Status, new: str) -> bool:
    # The log is the truth and is never rewritten, so an illegal transition that reached it is
    # skipped here (and logged); the session manager refuses them before they are appended.
    try:
        check_transition(old, new)
    except IllegalTransition as exc:
        log.warning("event %d: session %s: %s; ignored", ev.seq, ev.session, exc.message)
        return False
    return True


def _set_status(conn: sqlite3.Connection, ev: Event, old: Status, new: Status, turn: str | None = None) -> None:
    if old == new or not _allowed(ev, old, new):
        conn.execute(
            "UPDATE sessions SET last_seq = ?, last_activity = ?, turn = COALESCE(?, turn) WHERE id = ?",
            (ev.seq, ev.ts, turn, ev.session),
        )
        return
    conn.execute(
        "UPDATE sessions SET status = ?, last_seq = ?, last_activity = ?, turn = COALESCE(?, turn) WHERE id = ?",
        (new.value, ev.seq, ev.ts, turn, ev.session),
    )


def _pending_count(conn: sqlite3.Connection, session: str) -> int:
    row = conn.execute("SELECT COUNT(*) FROM approvals WHERE session = ? AND status = 'pending'", (session,))
    return int(row.fetchone()[0])


def _clear_pending(conn: sqlite3.Connection, ev: Event, reason: str) -> None:
    # Approvals cannot outlive their turn or session; their clearing is implied by this event.
    conn.execute(
        "UPDATE approvals SET status = 'cleared', resolved_seq = ? WHERE session = ? AND status = 'pending'",
        (ev.seq, ev.session),
    )


def pending_approvals(conn: sqlite3.Connection, session: str | None = None) -> list[dict[str, Any]]:
    """Approvals waiting for an answer (of one session, or of all), oldest first."""
    query = "SELECT id, session, item, kind, details, options, requested_seq FROM approvals WHERE status = 'pending'"
    args: tuple[Any, ...] = ()
    if session is not None:
        query += " AND session = ?"
        args = (session,)
    rows = conn.execute(query + " ORDER BY requested_seq", args)
    return [
        {"approval": r[0], "session": r[1], "item": r[2], "kind": r[3], "details": json.loads(r[4]),
         "options": json.loads(r[5]), "seq": r[6]}
        for r in rows
    ]


def file_changes(conn: sqlite3.Connection, session: str) -> list[dict[str, Any]]:
    """Every completed file change of a session, in order: {seq, item, path, diff, status}."""
    rows = conn.execute(
        "SELECT seq, data FROM events WHERE session = ? AND type = ? ORDER BY seq",
        (session, EventType.ITEM_COMPLETED.value),
    )
    changes = []
    for seq, raw in rows:
        data = json.loads(raw)
        if data.get("kind") == "file_change":
            changes.append({"seq": seq, "item": data.get("item"), "path": data.get("path"),
                            "diff": data.get("diff", ""), "status": data.get("status")})
    return changes


def linked_hosts(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Hosts linked to this one and not unlinked since (the latest announcement of each), oldest
    first."""
    latest: dict[str, dict[str, Any]] = {}
    for seq, ts, kind, raw in conn.execute(
        "SELECT seq, ts, type, data FROM events WHERE session IS NULL AND type IN (?, ?) ORDER BY seq",
        (EventType.HOST_LINKED.value, EventType.HOST_UNLINKED.value),
    ):
        data = json.loads(raw)
        host_id = str(data.get("host_id"))
        if kind == EventType.HOST_UNLINKED.value:
            latest.pop(host_id, None)
        else:
            latest.pop(host_id, None)  # re-linked: it moves to the end
            latest[host_id] = {**data, "linked_at": ts, "seq": seq}
    return list(latest.values())


def get_approval(conn: sqlite3.Connection, approval_id: str) -> dict[str, Any] | None:
    r = conn.execute(
        "SELECT id, session, kind, status, decision, resolved_by FROM approvals WHERE id = ?", (approval_id,)
    ).fetchone()
    if r is None:
        return None
    return {"approval": r[0], "session": r[1], "kind": r[2], "status": r[3], "decision": r[4],
            "by": json.loads(r[5]) if r[5] else None}


def _touch_seq(conn: sqlite3.Connection, ev: Event) -> None:
    conn.execute("UPDATE sessions SET last_seq = ? WHERE id = ?", (ev.seq, ev.session))


# -- read --------------------------------------------------------------------------------

_COLUMNS = (
    "id, agent, workspace, command, title, status, created, last_activity, exit_code,"
    " exit_signal, exit_reason, last_seq, cols, rows, policy, turn, archived"
)
# About what a session's row costs besides its scrollback (title, command, workspace...).
_ROW_CHARS = 512


def _row(row: tuple[Any, ...], scrollback: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row[0],
        "agent": row[1],
        "workspace": row[2],
        "command": json.loads(row[3]),
        "title": row[4],
        "status": row[5],
        "created": row[6],
        "last_activity": row[7],
        "exit_code": row[8],
        "exit_signal": row[9],
        "exit_reason": row[10],
        "last_seq": row[11],
        "cols": row[12],
        "rows": row[13],
        "policy": json.loads(row[14]) if row[14] else None,
        "turn": row[15],
        "archived": bool(row[16]),
    }
    if scrollback is not None:
        out["scrollback"] = scrollback
    return out


def delete_session(conn: sqlite3.Connection, session: str) -> int:
    """Forget a session: its events, approvals and row (inside the caller's transaction).
    Returns the events removed."""
    removed = conn.execute("DELETE FROM events WHERE session = ?", (session,)).rowcount
    conn.execute("DELETE FROM approvals WHERE session = ?", (session,))
    conn.execute("DELETE FROM sessions WHERE id = ?", (session,))
    return int(removed)


def list_sessions(conn: sqlite3.Connection, *, with_scrollback: bool = False) -> list[dict[str, Any]]:
    """Every session, oldest first."""
    if with_scrollback:
        rows = conn.execute(f"SELECT {_COLUMNS}, scrollback FROM sessions ORDER BY created, id")
        return [_row(r[:-1], r[-1]) for r in rows]
    return [_row(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM sessions ORDER BY created, id")]


def session_page(
    conn: sqlite3.Connection, after: tuple[float, str] | None, max_chars: int, *, only: str | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """Sessions with scrollback in list order after the key ``(created, id)`` (every one, or
    ``only`` that one), stopping once about ``max_chars`` are taken (one at least); and whether
    more follow. Rows are read one at a time: the rest of the table is never loaded."""
    where: list[str] = ["1"]
    args: list[Any] = []
    if after is not None:
        where.append("(created, id) > (?, ?)")
        args.extend(after)
    if only is not None:
        where.append("id = ?")
        args.append(only)
    rows = conn.execute(
        f"SELECT {_COLUMNS}, scrollback FROM sessions WHERE {' AND '.join(where)} ORDER BY created, id", args
    )
    page: list[dict[str, Any]] = []
    size = 0
    for r in rows:
        if page and size >= max_chars:
            return page, True
        page.append(_row(r[:-1], r[-1]))
        size += len(r[-1]) + _ROW_CHARS
    return page, False


def forget_ended(conn: sqlite3.Connection, before: float) -> list[str]:
    """Delete the sessions that ended before ``before`` (rows and approvals); their ids."""
    ids = [r[0] for r in conn.execute(
        f"SELECT id FROM sessions WHERE status IN {TERMINAL_SQL} AND last_activity < ?", (before,)
    )]
    for sid in ids:
        conn.execute("DELETE FROM approvals WHERE session = ?", (sid,))
        conn.execute("DELETE FROM sessions WHERE id = ?", (sid,))
    return ids


def get_session(conn: sqlite3.Connection, session_id: str, *, with_scrollback: bool = False) -> dict[str, Any] | None:
    r = conn.execute(f"SELECT {_COLUMNS}, scrollback FROM sessions WHERE id = ?", (session_id,)).fetchone()
    if r is None:
        return None
    return _row(r[:-1], r[-1] if with_scrollback else None)
