"""Fixtures of the agent adapter tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tether.host.db import Database
from tether.host.eventlog import EventLog


@pytest.fixture
async def event_log(tmp_path: Path) -> AsyncIterator[EventLog]:
    db = await Database.open(tmp_path / "state" / "host.db")
    log = await EventLog.open(db)
    yield log
    await log.close()
    await db.close()
