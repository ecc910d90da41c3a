"""The host's SQLite database (:mod:`tether.sqlite`): its schema, step by step."""

from __future__ import annotations

from tether import sqlite
from tether.sqlite import DatabaseError

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
    """
    CREATE TABLE mailbox_applied (                -- items devices queued at the relay, as applied
        device_id TEXT NOT NULL,
        n         INTEGER NOT NULL,               -- the device's count of its queued items
        outcome   TEXT NOT NULL,                  -- "ok" or the refusal's code
        at        REAL NOT NULL,
        PRIMARY KEY (device_id, n)
    );
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


class Database(sqlite.Database):
    """The host's database. Create with :meth:`open`."""

    migrations = MIGRATIONS


__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Database", "DatabaseError"]
