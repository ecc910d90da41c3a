import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tether.host.db import Database
from tether.host.eventlog import EventLog
from tether.host.sessions import SessionManager


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "state" / "host.db")
    yield database
    await database.close()


@pytest.fixture
async def log(db: Database) -> AsyncIterator[EventLog]:
    event_log = await EventLog.open(db)
    yield event_log
    await event_log.close()


@pytest.fixture
async def manager(log: EventLog) -> AsyncIterator[SessionManager]:
    """A session manager on the log, closed (every session ended) after the test."""
    mgr = SessionManager(log, log.db)
    await mgr.start()
    yield mgr
    await asyncio.wait_for(mgr.close(), 10)

