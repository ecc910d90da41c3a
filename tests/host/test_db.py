import sqlite3
import threading
from pathlib import Path

import pytest

from tether.host.db import SCHEMA_VERSION, Database, DatabaseError

# The columns every schema version's offers table has.
OFFER_COLS = "id, secret, scopes, created, expires_at"


async def test_file_is_private_and_schema_versioned(tmp_path: Path) -> None:
    path = tmp_path / "host.db"
    db = await Database.open(path)
    try:
        assert path.stat().st_mode & 0o777 == 0o600
        version = await db.run(lambda c: c.execute("PRAGMA user_version").fetchone()[0], write=False)
        assert version == SCHEMA_VERSION
        mode = await db.run(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0], write=False)
        assert mode == "wal"
        fk = await db.run(lambda c: c.execute("PRAGMA foreign_keys").fetchone()[0], write=False)
        assert fk == 1
        tables = await db.run(
            lambda c: {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        )
        assert {"events", "sessions", "devices", "offers", "commands"} <= tables
        await db.run(lambda c: c.execute(f"INSERT INTO offers ({OFFER_COLS}) VALUES ('x', x'00', '[]', 0, 0)"))
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                assert side.stat().st_mode & 0o777 == 0o600
    finally:
        await db.close()
    # Reopening does not migrate again.
    db = await Database.open(path)
    try:
        assert await db.run(lambda c: c.execute("SELECT COUNT(*) FROM offers").fetchone()[0]) == 1
    finally:
        await db.close()


async def test_run_is_one_transaction_on_one_thread(db: Database) -> None:
    def boom(conn: sqlite3.Connection) -> None:
        conn.execute(f"INSERT INTO offers ({OFFER_COLS}) VALUES ('a', x'00', '[]', 0, 0)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await db.run(boom)
    assert await db.run(lambda c: c.execute("SELECT COUNT(*) FROM offers").fetchone()[0]) == 0
    threads = {await db.run(lambda c: threading.get_ident()) for _ in range(5)}
    assert len(threads) == 1 and threading.get_ident() not in threads


async def test_an_older_database_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    from tether.host.db import MIGRATIONS
    from tether.host.store import Store

    path = tmp_path / "host.db"
    conn = sqlite3.connect(path)
    for step, script in enumerate(MIGRATIONS[:3]):
        conn.executescript(f"BEGIN;\n{script};\nPRAGMA user_version = {step + 1};\nCOMMIT;")
    conn.execute(f"INSERT INTO offers ({OFFER_COLS}) VALUES ('old', x'00', '[\"read\"]', 0, 1e12)")
    conn.commit()
    conn.close()
    db = await Database.open(path)
    try:
        assert await db.run(lambda c: c.execute("PRAGMA user_version").fetchone()[0], write=False) == SCHEMA_VERSION
        store = Store(db)
        old = await store.get_offer("old")
        assert old is not None and old.scopes == ["read"] and old.workspace is None
        new = await store.create_offer(["read"], 60, workspace="/srv/project")
        assert (await store.get_offer(new.id)).workspace == "/srv/project"  # type: ignore[union-attr]
    finally:
        await db.close()


async def test_newer_schema_refused_and_closed_db_refuses(tmp_path: Path) -> None:
    path = tmp_path / "host.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    with pytest.raises(DatabaseError, match="newer tether"):
        await Database.open(path)
    db = await Database.open(tmp_path / "other.db")
    await db.close()
    with pytest.raises(DatabaseError):
        await db.run(lambda c: None)
