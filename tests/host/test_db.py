import sqlite3
import threading
from pathlib import Path

import pytest

from tether.host.db import SCHEMA_VERSION, Database, DatabaseError


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
        await db.run(lambda c: c.execute("INSERT INTO offers VALUES ('x', x'00', '[]', 0, 0, NULL, NULL)"))
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
        conn.execute("INSERT INTO offers VALUES ('a', x'00', '[]', 0, 0, NULL, NULL)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await db.run(boom)
    assert await db.run(lambda c: c.execute("SELECT COUNT(*) FROM offers").fetchone()[0]) == 0
    threads = {await db.run(lambda c: threading.get_ident()) for _ in range(5)}
    assert len(threads) == 1 and threading.get_ident() not in threads


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
