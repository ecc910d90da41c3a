"""The audit log: entries are written (batched), listed by time and cursor, pruned, and hold
method names and ids only — never params such as prompt text."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest

from tests.support.inprocess import running_host
from tether.errors import TetherError
from tether.host import audit as audit_module
from tether.host.api import ApiConnection
from tether.host.audit import Actor, AuditLog
from tether.host.daemon import HostDaemon
from tether.host.db import Database
from tether.host.principal import Principal
from tether.protocol.messages import Request
from tether.protocol.scopes import Scope

ALICE = Actor("device", "d1", "alice")


async def test_record_flush_and_list(db: Database) -> None:
    audit = AuditLog(db)
    audit.record(ALICE, "sessions.start", "ok", session="s_1")
    audit.record(Actor.unknown(), "channel.open", "not_allowed", detail="unknown")
    entries = await audit.list()  # flushes first
    assert [(e["method"], e["result"]) for e in entries] == [("sessions.start", "ok"), ("channel.open", "not_allowed")]
    assert entries[0]["actor"] == {"kind": "device", "id": "d1", "name": "alice"}
    assert entries[0]["session"] == "s_1" and entries[1]["detail"] == "unknown"
    assert [e["id"] for e in await audit.list(after=entries[0]["id"])] == [entries[1]["id"]]
    assert len(await audit.list(limit=1)) == 1
    assert await audit.list(since=time.time() + 10) == []
    await audit.close()


async def test_entries_are_written_soon_without_a_reader(db: Database) -> None:
    audit = AuditLog(db)
    audit.record(ALICE, "host.info", "ok")
    await asyncio.sleep(audit_module.FLUSH_DELAY * 5)
    rows = await db.run(lambda c: c.execute("SELECT method FROM audit").fetchall(), write=False)
    assert rows == [("host.info",)]
    await audit.close()


async def test_close_flushes_and_prune_forgets_old_entries(db: Database) -> None:
    audit = AuditLog(db)
    for i in range(50):
        audit.record(ALICE, f"m{i}", "ok")
    await audit.close()
    assert len(await AuditLog(db).list()) == 50
    await db.run(lambda c: c.execute("UPDATE audit SET ts = ts - 1000 WHERE method = 'm0'"))
    assert await audit.prune(older_than=500) == 1
    assert len(await audit.list()) == 49


async def test_long_method_names_are_clipped(db: Database) -> None:
    audit = AuditLog(db)
    audit.record(ALICE, "x" * 10_000, "unknown_method", session="s" * 10_000)
    [entry] = await audit.list()
    assert len(entry["method"]) <= audit_module.MAX_METHOD and len(entry["session"]) <= audit_module.MAX_ID
    await audit.close()


@pytest.fixture
async def host() -> AsyncIterator[HostDaemon]:
    async with running_host() as daemon:
        yield daemon


async def _call(conn: ApiConnection, method: str, params: dict[str, object] | None = None) -> object:
    try:
        return await conn.handle(Request(id=1, method=method, params=params or {}))
    except TetherError as exc:
        return exc


async def test_every_request_but_the_heartbeat_is_audited_with_ids_only(host: HostDaemon) -> None:
    reader = ApiConnection(host, Principal("device", "dev1", "phone", frozenset({Scope.READ})))
    owner = ApiConnection(host, Principal.local())
    secret = "PROMPT-TEXT-THAT-MUST-NOT-BE-KEPT"
    await _call(reader, "sessions.list")
    await _call(reader, "host.ping")  # the page's heartbeat, every few seconds: not an act
    assert isinstance(await _call(reader, "sessions.send", {"id": "s_x", "text": secret}), TetherError)
    assert isinstance(await _call(reader, "no.such.method"), TetherError)
    assert isinstance(await _call(owner, "sessions.get", {"id": "s_nope", "bogus": secret}), TetherError)
    assert isinstance(await _call(owner, "sessions.send", {"id": "s_nope", "text": secret}), TetherError)
    entries = await host.audit.list()
    got = [(e["actor"]["id"], e["method"], e["result"], e["session"]) for e in entries]
    assert got == [
        ("dev1", "sessions.list", "ok", None),
        ("dev1", "sessions.send", "forbidden", "s_x"),
        ("dev1", "no.such.method", "unknown_method", None),
        ("local", "sessions.get", "invalid_params", "s_nope"),
        ("local", "sessions.send", "not_found", "s_nope"),
    ]
    assert secret not in json.dumps(entries)
    dump = await host.db.run(lambda c: json.dumps(c.execute("SELECT * FROM audit").fetchall()), write=False)
    assert secret not in dump
