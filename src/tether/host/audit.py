"""The host's audit log (ARCHITECTURE §5): who did what, when, and with which result.

Every request through :class:`~tether.host.api.ApiConnection` (the local owner's too) and every
channel admission the host decides is recorded — refusals included. An entry holds method names,
ids and an error code, never params: no prompt text, no secrets, nothing a caller typed except
the method name (cut to 64 characters).

Entries are buffered and written in one transaction about every 100 ms, so a burst of requests
(keystrokes of an attached terminal) costs one write, not one per request. :meth:`AuditLog.list`
and :meth:`AuditLog.close` flush first, so a reader never misses an entry that was recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from tether.host.db import Database

log = logging.getLogger("tether.host.audit")

FLUSH_DELAY = 0.1
# A year of entries stays small (a row is ~100 bytes); older ones are pruned by the daemon.
KEEP_SECONDS = 365 * 86400.0
MAX_METHOD = 64
MAX_ID = 128

_COLS = "id, ts, actor_kind, actor_id, actor_name, method, session, target, result, detail"


@dataclass(frozen=True)
class Actor:
    """Who acted: the local owner, a device, a token, or an unidentified caller."""

    kind: str
    id: str
    name: str

    @classmethod
    def unknown(cls) -> Actor:
        return cls("unknown", "-", "unknown caller")


@dataclass(frozen=True)
class Entry:
    ts: float
    actor: Actor
    method: str
    result: str
    session: str | None = None
    target: str | None = None
    detail: str | None = None


def _clip(value: str | None, n: int) -> str | None:
    return None if value is None else value[:n]


def _row(r: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "id": r[0],
        "ts": r[1],
        "actor": {"kind": r[2], "id": r[3], "name": r[4]},
        "method": r[5],
        "session": r[6],
        "target": r[7],
        "result": r[8],
        "detail": r[9],
    }


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: list[Entry] = []
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def record(
        self,
        actor: Actor,
        method: str,
        result: str,
        *,
        session: str | None = None,
        target: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Queue one entry (written within :data:`FLUSH_DELAY`)."""
        self._pending.append(
            Entry(time.time(), actor, _clip(method, MAX_METHOD) or "", result[:MAX_METHOD],
                  _clip(session, MAX_ID), _clip(target, MAX_ID), detail)
        )
        if self._flusher is None or self._flusher.done():
            with contextlib.suppress(RuntimeError):  # no running loop: flushed by the next call
                self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(FLUSH_DELAY)
        try:
            await self.flush()
        except Exception:
            log.exception("could not write the audit log")

    async def flush(self) -> None:
        async with self._lock:
            entries, self._pending = self._pending, []
            if not entries:
                return

            def write(conn: sqlite3.Connection) -> None:
                conn.executemany(
                    "INSERT INTO audit (ts, actor_kind, actor_id, actor_name, method, session, target, result,"
                    " detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (e.ts, e.actor.kind, e.actor.id, e.actor.name, e.method, e.session, e.target, e.result,
                         e.detail)
                        for e in entries
                    ],
                )

            try:
                await self.db.run(write)
            except BaseException:
                self._pending[:0] = entries  # keep them for the next attempt
                raise

    async def list(self, *, since: float = 0.0, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Entries with ``ts >= since`` and ``id > after``, oldest first."""
        await self.flush()

        def ls(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                f"SELECT {_COLS} FROM audit WHERE ts >= ? AND id > ? ORDER BY id LIMIT ?", (since, after, limit)
            )
            return [_row(r) for r in rows]

        return await self.db.run(ls, write=False)

    async def prune(self, older_than: float = KEEP_SECONDS) -> int:
        def prune(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM audit WHERE ts < ?", (time.time() - older_than,)).rowcount

        return await self.db.run(prune)

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._flusher
        await self.flush()
