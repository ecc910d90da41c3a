"""The host's SQLite database, owned by one worker thread.

Every read and write goes through :meth:`Database.run`, which runs a function on a single
dedicated thread inside one transaction. One thread means one writer: the event log's ``seq``
can be assigned inside the transaction without races, and the event loop never blocks on disk.

The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS` lists the steps, each
applied once, in order, in its own transaction.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from tether.errors import TetherError

T = TypeVar("T")

# Waits for another process (e.g. a CLI reading the same file) instead of failing at once.
BUSY_TIMEOUT_MS = 5000

# Step N brings the schema from version N to N+1.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE events (
        seq     INTEGER PRIMARY KEY,          -- host-wide, gap-free, assigned by the single writer
        session TEXT,                         -- NULL for host-wide events
        type    TEXT NOT NULL,
        ts      REAL NOT NULL,                -- unix time, seconds
        data    TEXT NOT NULL,                -- JSON object
        cid     TEXT                          -- client command id that caused it, if any
    );
    CREATE INDEX events_by_session ON events (session, seq);

    -- The projection of the log (host/projection.py); rebuilt only by applying events.
    CREATE TABLE sessions (
        id            TEXT PRIMARY KEY,
        agent         TEXT NOT NULL,
        workspace     TEXT NOT NULL,
        command       TEXT NOT NULL,          -- JSON list of strings
        title         TEXT NOT NULL,
        status        TEXT NOT NULL,
        created       REAL NOT NULL,
        last_activity REAL NOT NULL,
        exit_code     INTEGER,
        exit_signal   INTEGER,
        exit_reason   TEXT,
        last_seq      INTEGER NOT NULL,
        cols          INTEGER NOT NULL,
        rows          INTEGER NOT NULL,
        scrollback    TEXT NOT NULL DEFAULT ''
    );

    CREATE TABLE devices (
        id              TEXT PRIMARY KEY,     -- derived from identity_public
        name            TEXT NOT NULL,
        identity_public BLOB NOT NULL,
        static_public   BLOB NOT NULL,
        scopes          TEXT NOT NULL,        -- JSON list of scope names
        workspace       TEXT,                 -- optional workspace restriction
        created         REAL NOT NULL,
        last_seen       REAL,
        revoked_at      REAL
    );
    CREATE INDEX devices_by_static ON devices (static_public);

    CREATE TABLE offers (
        id          TEXT PRIMARY KEY,
        secret      BLOB NOT NULL,
        scopes      TEXT NOT NULL,            -- JSON list of scope names
        created     REAL NOT NULL,
        expires_at  REAL NOT NULL,
        consumed_at REAL,
        device_id   TEXT
    );

    -- Client command ids already applied, with their result, so a retry is applied once.
    CREATE TABLE commands (
        device_id  TEXT NOT NULL,
        cid        TEXT NOT NULL,
        method     TEXT NOT NULL,
        result     TEXT NOT NULL,             -- JSON
        applied_at REAL NOT NULL,
        PRIMARY KEY (device_id, cid)
    );
    """,
    # 1 -> 2: agent sessions (turns, items, approvals) and per-session policy.
    """
    ALTER TABLE sessions ADD COLUMN policy TEXT;    -- JSON {approval, sandbox}; NULL for pty
    ALTER TABLE sessions ADD COLUMN turn TEXT;      -- the current or last turn id
    CREATE TABLE approvals (
        id            TEXT PRIMARY KEY,
        session       TEXT NOT NULL,
        item          TEXT,
        kind          TEXT NOT NULL,              -- "command" | "file_change"
        details       TEXT NOT NULL,              -- JSON: the exact command or diff shown to people
        options       TEXT NOT NULL,              -- JSON list of decisions offered
        status        TEXT NOT NULL,              -- "pending" | "resolved" | "cleared"
        decision      TEXT,
        resolved_by   TEXT,                       -- who answered: device/owner id and name
        requested_seq INTEGER NOT NULL,
        resolved_seq  INTEGER
    );
    CREATE INDEX approvals_by_session ON approvals (session, status);
    """,
    # 2 -> 3: access tokens and the audit log.
    """
    CREATE TABLE tokens (
        id              TEXT PRIMARY KEY,         -- derived from identity_public
        name            TEXT NOT NULL,
        identity_public BLOB NOT NULL,            -- public keys only: the secret seed never reaches the host's disk
        static_public   BLOB NOT NULL,
        scopes          TEXT NOT NULL,            -- JSON list of scope names
        workspace       TEXT,                     -- optional workspace restriction
        created         REAL NOT NULL,
        expires_at      REAL NOT NULL,
        created_by      TEXT NOT NULL,            -- who minted it: "local" or a device/token id
        last_used       REAL,
        revoked_at      REAL
    );
    CREATE INDEX tokens_by_static ON tokens (static_public);

    -- Who did what, when, with which result; method names and ids only, never params.
    CREATE TABLE audit (
        id         INTEGER PRIMARY KEY,
        ts         REAL NOT NULL,
        actor_kind TEXT NOT NULL,                 -- "local" | "device" | "token" | "unknown"
        actor_id   TEXT NOT NULL,
        actor_name TEXT NOT NULL,
        method     TEXT NOT NULL,                 -- an API method, or "channel.open" / "pair.complete"
        session    TEXT,
        target     TEXT,                          -- the device or token acted on, if any
        result     TEXT NOT NULL,                 -- "ok" or an error code
        detail     TEXT                           -- a fixed explanation chosen by the host, never caller input
    );
    CREATE INDEX audit_by_ts ON audit (ts);
    """,
    # 3 -> 4: a pairing offer may restrict the device it pairs to a workspace.
    """
    ALTER TABLE offers ADD COLUMN workspace TEXT;
    """,
    # 4 -> 5: small facts about the state, e.g. 'events.floor': the newest seq retention dropped.
    """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    """,
    # 5 -> 6: sessions a person put away (session.archived): still there, out of the way.
    """
    ALTER TABLE sessions ADD COLUMN archived INTEGER NOT NULL DEFAULT 0;
    """,
    # 6 -> 7: Web Push: a device's browser subscription, and how its last delivery went.
    """
    CREATE TABLE push_subscriptions (
        device_id   TEXT PRIMARY KEY,             -- one browser per device
        endpoint    TEXT,                         -- NULL once the push service said it is gone
        p256dh      TEXT,                         -- the browser's keys (base64url): payloads are sealed to them
        auth        TEXT,
        created     REAL NOT NULL,
        state       TEXT NOT NULL,                -- "active" | "gone"
        last_result TEXT,                         -- "accepted" | "rejected (HTTP n)" | "unreachable" | "gone"
        last_at     REAL,
        sent        INTEGER NOT NULL DEFAULT 0    -- pushes the push service accepted
    );
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


class DatabaseError(TetherError):
    code = "database"


class Database:
    """One SQLite file, used only from one worker thread. Create with :meth:`open`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tether-db")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> Database:
        db = cls(Path(path))
        try:
            await db._call(db._open_sync)
        except BaseException:
            db._executor.shutdown(wait=False)
            raise
        return db

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        """Run ``fn(conn)`` on the worker thread inside one transaction.

        Commits when ``fn`` returns, rolls back when it raises (and re-raises). ``write=False``
        starts a deferred transaction (a consistent read snapshot without the write lock).
        """
        if self._closed:
            raise DatabaseError("the database is closed")
        return await self._call(lambda: self._transaction(fn, write))

    async def checkpoint(self) -> None:
        """Write the WAL back into the database and empty it: pages it held (the content of rows
        deleted since) are gone from the disk too."""
        def truncate() -> None:
            assert self._conn is not None
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        await self._call(truncate)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._call(self._close_sync)
        finally:
            # The worker is idle now; don't block the loop joining it.
            self._executor.shutdown(wait=False)

    # -- worker thread -------------------------------------------------------------------

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _open_sync(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Create the file 0600 before SQLite touches it; SQLite gives its -wal and -shm files
        # the same mode as the database file.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(self.path, 0o600)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # What is deleted (a forgotten session, retention) is overwritten, not only unlinked.
            conn.execute("PRAGMA secure_delete = ON")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise DatabaseError(f"{self.path}: cannot use WAL journal mode (got {mode})")
            # In WAL mode NORMAL is durable across application crashes; only a power loss can
            # lose the last transactions, never corrupt the file.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise DatabaseError(
                f"{self.path} was written by a newer tether (schema {version}, this one knows {SCHEMA_VERSION})",
                hint="upgrade tether on this machine",
            )
        for step in range(version, SCHEMA_VERSION):
            try:
                conn.executescript(f"BEGIN IMMEDIATE;\n{MIGRATIONS[step]};\nPRAGMA user_version = {step + 1};\nCOMMIT;")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _transaction(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        conn = self._conn
        if conn is None:
            raise DatabaseError("the database is closed")
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            result = fn(conn)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
