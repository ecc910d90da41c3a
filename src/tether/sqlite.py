"""One SQLite file owned by one worker thread: the host's database and the relay's mailbox.

Every read and write goes through :meth:`Database.run`, which runs a function on a single
dedicated thread inside one transaction. One thread means one writer (the event log's ``seq`` is
assigned inside the transaction without races), and the event loop never blocks on disk.

The schema is versioned with ``PRAGMA user_version``; a subclass lists its :attr:`Database.migrations`,
each applied once, in order, in its own transaction.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar, Self, TypeVar

from tether.errors import TetherError

T = TypeVar("T")

# Waits for another process (e.g. a CLI reading the same file) instead of failing at once.
BUSY_TIMEOUT_MS = 5000


class DatabaseError(TetherError):
    code = "database"


class Database:
    """One SQLite file, used only from one worker thread. Create with :meth:`open`."""

    #: Step N brings the schema from version N to N+1.
    migrations: ClassVar[Sequence[str]] = ()

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tether-db")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> Self:
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
        known = len(self.migrations)
        if version > known:
            raise DatabaseError(
                f"{self.path} was written by a newer tether (schema {version}, this one knows {known})",
                hint="upgrade tether on this machine",
            )
        for step in range(version, known):
            try:
                conn.executescript(
                    f"BEGIN IMMEDIATE;\n{self.migrations[step]};\nPRAGMA user_version = {step + 1};\nCOMMIT;"
                )
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
