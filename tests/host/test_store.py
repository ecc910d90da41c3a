import asyncio
import os
import sqlite3

import pytest

from tether.crypto.encoding import b64u_decode
from tether.host.db import Database
from tether.host.store import Grantee, Store, StoreError


@pytest.fixture
def store(db: Database) -> Store:
    return Store(db)


def key() -> bytes:
    return os.urandom(32)


async def test_devices_revoke_and_allowlist(store: Store) -> None:
    ida, sta, idb, stb = key(), key(), key(), key()
    a = await store.add_device(Grantee("dev-a", "phone", ida, sta, ["read", "prompt"], None))
    await store.add_device(Grantee("dev-b", "laptop", idb, stb, ["read"], "/w"))
    assert a.scopes == ["read", "prompt"] and not a.revoked
    assert ida.hex() not in repr(a)
    assert await store.allowlist() == [ida, idb]
    got = await store.get_device_by_static(sta)
    assert got is not None and got.id == "dev-a" and got.identity_public == ida
    assert await store.get_device_by_static(key()) is None
    with pytest.raises(StoreError, match="already paired"):
        await store.add_device(Grantee("dev-a", "again", ida, sta, ["read"], None))

    assert await store.rename_device("dev-a", "my phone")
    assert not await store.rename_device("nope", "x")
    await store.touch_device("dev-a")
    a2 = await store.get_device("dev-a")
    assert a2 is not None and a2.name == "my phone" and a2.last_seen is not None

    assert await store.revoke_device("dev-a")
    assert not await store.revoke_device("dev-a")
    assert not await store.revoke_device("nope")
    assert await store.allowlist() == [idb]
    revoked = await store.get_device_by_static(sta)
    assert revoked is not None and revoked.revoked  # the caller can say "revoked"
    assert [d.id for d in await store.list_devices()] == ["dev-b"]
    everyone = await store.list_devices(include_revoked=True)
    assert [d.id for d in everyone] == ["dev-a", "dev-b"]
    public = everyone[0].to_public()
    assert public["revoked"] and b64u_decode(public["identity_public"]) == ida
    # Pairing again (a new offer) grants the revoked device afresh.
    again = await store.add_device(Grantee("dev-a", "phone", ida, sta, ["read"], None))
    assert not again.revoked and set(await store.allowlist()) == {ida, idb}


async def test_offer_single_use_under_concurrency(store: Store) -> None:
    offer = await store.create_offer(["read", "prompt"], ttl_seconds=60)
    assert len(b64u_decode(offer.id)) == 16 and len(offer.secret) == 32
    assert offer.secret.hex() not in repr(offer)
    assert [o.id for o in await store.live_offers()] == [offer.id]
    results = await asyncio.gather(*(store.consume_offer(offer.id, f"dev-{i}") for i in range(10)))
    assert sorted(results) == [False] * 9 + [True]
    assert await store.live_offers() == []
    got = await store.get_offer(offer.id)
    assert got is not None and got.consumed and got.device_id == f"dev-{results.index(True)}"
    assert got.secret == offer.secret and got.scopes == ["read", "prompt"]
    assert not await store.consume_offer("unknown", "dev")


async def test_offer_expiry(store: Store) -> None:
    offer = await store.create_offer(["read"], ttl_seconds=0.2)
    other = await store.create_offer(["read"], ttl_seconds=60)
    assert offer.live()
    await asyncio.sleep(0.3)
    assert [o.id for o in await store.live_offers()] == [other.id]
    assert not await store.consume_offer(offer.id, "dev")
    got = await store.get_offer(offer.id)
    assert got is not None and not got.live() and not got.consumed
    with pytest.raises(StoreError):
        await store.create_offer(["read"], ttl_seconds=0)


async def test_claim_offer_pairs_atomically(store: Store) -> None:
    offer = await store.create_offer(["read", "approve"], ttl_seconds=60)
    ident, static = key(), key()
    claims = await asyncio.gather(
        *(
            store.claim_offer(offer.id, device_id=f"d{i}", name="p", identity_public=ident, static_public=static)
            for i in range(5)
        )
    )
    winners = [c for c in claims if c is not None]
    assert len(winners) == 1 and winners[0].scopes == ["read", "approve"]
    assert await store.allowlist() == [ident]
    # A failing device insert leaves the offer unconsumed.
    ident2 = key()
    offer2 = await store.create_offer(["read"], ttl_seconds=60)
    with pytest.raises(StoreError):
        await store.claim_offer(
            offer2.id, device_id=winners[0].id, name="dup", identity_public=ident2, static_public=key()
        )
    o2 = await store.get_offer(offer2.id)
    assert o2 is not None and not o2.consumed


async def test_once_applies_once_under_concurrent_duplicates(store: Store) -> None:
    def effect(conn: sqlite3.Connection) -> dict[str, int]:
        conn.execute(
            "INSERT INTO offers (id, secret, scopes, created, expires_at)"
            " VALUES (hex(randomblob(8)), x'00', '[]', 0, 0)"
        )
        n = conn.execute("SELECT COUNT(*) FROM offers").fetchone()[0]
        return {"n": n}

    outcomes = await asyncio.gather(*(store.once("cid-1", "dev-a", effect, method="m") for _ in range(10)))
    assert sum(not o.replayed for o in outcomes) == 1
    assert {o.result["n"] for o in outcomes} == {1}
    # Another device may use the same client id for its own command.
    other = await store.once("cid-1", "dev-b", effect)
    assert not other.replayed and other.result == {"n": 2}

    def failing(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO offers (id, secret, scopes, created, expires_at) VALUES ('zz', x'00', '[]', 0, 0)")
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        await store.once("cid-2", "dev-a", failing)
    assert await store.command_result("cid-2", "dev-a") is None  # not recorded: a retry applies it
    assert (await store.once("cid-2", "dev-a", effect)).result == {"n": 3}


async def test_apply_once_async_effects(store: Store) -> None:
    calls = 0

    async def op() -> dict[str, int]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)  # duplicates arrive while the first is in progress
        return {"seq": calls}

    results = await asyncio.gather(*(store.apply_once("c", "dev", "sessions.send", op) for _ in range(8)))
    assert calls == 1 and results == [{"seq": 1}] * 8
    assert await store.apply_once("c", "dev", "sessions.send", op) == {"seq": 1}
    assert calls == 1
    assert store._cid_locks == {}

    async def bad() -> None:
        raise ValueError("x")

    with pytest.raises(ValueError):
        await store.apply_once("c2", "dev", "m", bad)
    assert await store.apply_once("c2", "dev", "m", op) == {"seq": 2}
    assert await store.prune_commands(older_than=3600) == 0
    assert await store.prune_commands(older_than=-1) == 2
