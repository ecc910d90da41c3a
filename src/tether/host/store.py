"""Paired devices, access tokens, pairing offers and applied client commands, kept in the host's
database.

Every method is one transaction on the database's single worker thread, so check-then-act
sequences (consume an offer, apply a command once) are atomic without further locking.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from tether.crypto.encoding import b64u_encode
from tether.errors import TetherError
from tether.host.db import Database

OFFER_ID_BYTES = 16
OFFER_SECRET_BYTES = 32


class StoreError(TetherError):
    code = "store"


@dataclass(frozen=True)
class Grantee:
    """Who a new device or access token is and what it may do: what pairing and `tokens create`
    record."""

    id: str
    name: str
    identity_public: bytes = field(repr=False)
    static_public: bytes = field(repr=False)
    scopes: list[str]
    workspace: str | None


@dataclass(frozen=True)
class _Grant(Grantee):
    """What a device and an access token share: the grantee, and since when."""

    created: float

    def _public(self) -> dict[str, Any]:
        """What a client may see of any grant (public keys as base64url)."""
        return {"id": self.id, "name": self.name, "scopes": list(self.scopes), "workspace": self.workspace,
                "created": self.created, "identity_public": b64u_encode(self.identity_public)}


@dataclass(frozen=True)
class Device(_Grant):
    last_seen: float | None
    revoked_at: float | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def to_public(self) -> dict[str, Any]:
        return {**self._public(), "last_seen": self.last_seen, "revoked_at": self.revoked_at,
                "revoked": self.revoked}


@dataclass(frozen=True)
class Token(_Grant):
    """An access token as the host knows it: public keys and grant, never the secret seed."""

    expires_at: float
    created_by: str
    last_used: float | None
    revoked_at: float | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at

    def status(self, now: float | None = None) -> str:
        return "revoked" if self.revoked else "expired" if self.expired(now) else "active"

    def to_public(self) -> dict[str, Any]:
        return {**self._public(), "expires_at": self.expires_at, "created_by": self.created_by,
                "last_used": self.last_used, "revoked_at": self.revoked_at, "status": self.status()}


@dataclass(frozen=True)
class Offer:
    id: str
    secret: bytes = field(repr=False)  # the Noise psk; never logged
    scopes: list[str]
    expires_at: float
    consumed_at: float | None = None
    device_id: str | None = None
    workspace: str | None = None  # the device it pairs is restricted to this workspace

    @property
    def consumed(self) -> bool:
        return self.consumed_at is not None

    def live(self, now: float | None = None) -> bool:
        return self.consumed_at is None and (time.time() if now is None else now) < self.expires_at


@dataclass(frozen=True)
class Applied:
    """The outcome of :meth:`Store.once`: the command's result, and whether this call only
    replayed the result of an earlier application."""

    result: Any
    replayed: bool


_DEVICE_COLS = "id, name, identity_public, static_public, scopes, workspace, created, last_seen, revoked_at"
_OFFER_COLS = "id, secret, scopes, expires_at, consumed_at, device_id, workspace"
_TOKEN_COLS = (
    "id, name, identity_public, static_public, scopes, workspace, created, expires_at, created_by, last_used,"
    " revoked_at"
)


def _device(r: tuple[Any, ...]) -> Device:
    return Device(r[0], r[1], bytes(r[2]), bytes(r[3]), json.loads(r[4]), r[5], r[6], r[7], r[8])


def _token(r: tuple[Any, ...]) -> Token:
    return Token(r[0], r[1], bytes(r[2]), bytes(r[3]), json.loads(r[4]), r[5], r[6], r[7], r[8], r[9], r[10])


def _offer(r: tuple[Any, ...]) -> Offer:
    return Offer(r[0], bytes(r[1]), json.loads(r[2]), r[3], r[4], r[5], r[6])


# Devices and tokens are both grants, kept in twin tables read the same way.
_Table = Literal["devices", "tokens"]
_COLS: dict[str, str] = {"devices": _DEVICE_COLS, "tokens": _TOKEN_COLS}
G = TypeVar("G", "Device", "Token")


class _KeyLock:
    """A lock with the number of tasks holding or waiting for it, to forget it when unused."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cid_locks: dict[tuple[str, str], _KeyLock] = {}

    # -- devices ---------------------------------------------------------------------------

    async def add_device(self, who: Grantee) -> Device:
        """Record a paired device. Pairing again a device that was revoked grants it afresh;
        a device that is already paired and not revoked is refused."""
        return await self.db.run(lambda conn: _add_device(conn, who))

    async def get_device(self, id: str) -> Device | None:
        return await self._one("devices", _device, "id = ?", (id,))

    async def get_device_by_static(self, static_public: bytes) -> Device | None:
        """The device with this Noise static key; a revoked one is returned with ``revoked``
        set (so the caller can say so) only when no live device has the key."""
        return await self._one("devices", _device, "static_public = ? ORDER BY revoked_at IS NOT NULL, created DESC",
                               (static_public,))

    async def list_devices(self, include_revoked: bool = False) -> list[Device]:
        return await self._all("devices", _device, "1" if include_revoked else "revoked_at IS NULL")

    async def rename_device(self, id: str, name: str) -> bool:
        def rename(conn: sqlite3.Connection) -> bool:
            return conn.execute("UPDATE devices SET name = ? WHERE id = ?", (name, id)).rowcount == 1

        return await self.db.run(rename)

    async def revoke_device(self, id: str) -> bool:
        """Revoke a device; False when there is no such live device."""
        return await self._revoke("devices", id)

    async def touch_device(self, id: str) -> None:
        await self._stamp("devices", "last_seen", id)

    async def _one(
        self, table: _Table, read: Callable[[tuple[Any, ...]], G], where: str, params: tuple[Any, ...]
    ) -> G | None:
        """The first grant of ``table`` matching ``where`` (it may end in ORDER BY), or None."""

        def get(conn: sqlite3.Connection) -> G | None:
            r = conn.execute(f"SELECT {_COLS[table]} FROM {table} WHERE {where} LIMIT 1", params).fetchone()
            return read(r) if r else None

        return await self.db.run(get, write=False)

    async def _all(self, table: _Table, read: Callable[[tuple[Any, ...]], G], where: str) -> list[G]:
        def ls(conn: sqlite3.Connection) -> list[G]:
            rows = conn.execute(f"SELECT {_COLS[table]} FROM {table} WHERE {where} ORDER BY created, id")
            return [read(r) for r in rows]

        return await self.db.run(ls, write=False)

    async def _revoke(self, table: _Table, id: str) -> bool:
        def revoke(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                f"UPDATE {table} SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (time.time(), id)
            )
            return cur.rowcount == 1

        return await self.db.run(revoke)

    async def _stamp(
        self, table: _Table, column: Literal["last_seen", "last_used"], id: str
    ) -> None:
        def stamp(conn: sqlite3.Connection) -> None:
            conn.execute(f"UPDATE {table} SET {column} = ? WHERE id = ?", (time.time(), id))

        await self.db.run(stamp)

    async def allowlist(self) -> list[bytes]:
        """Identity keys of every device that is not revoked and every token neither revoked
        nor expired (published to the relay)."""

        def ls(conn: sqlite3.Connection) -> list[bytes]:
            rows = conn.execute(
                "SELECT identity_public FROM devices WHERE revoked_at IS NULL"
                " UNION ALL SELECT identity_public FROM tokens WHERE revoked_at IS NULL AND expires_at > ?",
                (time.time(),),
            )
            return [bytes(r[0]) for r in rows]

        return await self.db.run(ls, write=False)

    # -- access tokens ---------------------------------------------------------------------

    async def add_token(self, who: Grantee, *, expires_at: float, created_by: str) -> Token:
        def add(conn: sqlite3.Connection) -> Token:
            now = time.time()
            conn.execute(
                f"INSERT INTO tokens ({_TOKEN_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
                (*_grantee_row(who), now, expires_at, created_by),
            )
            return Token(**_fields(who), created=now, expires_at=expires_at, created_by=created_by, last_used=None,
                         revoked_at=None)

        return await self.db.run(add)

    async def get_token(self, id: str) -> Token | None:
        return await self._one("tokens", _token, "id = ?", (id,))

    async def get_token_by_static(self, static_public: bytes) -> Token | None:
        return await self._one("tokens", _token, "static_public = ? ORDER BY created DESC", (static_public,))

    async def list_tokens(self) -> list[Token]:
        return await self._all("tokens", _token, "1")

    async def revoke_token(self, id: str) -> bool:
        """Revoke a token; False when there is no such token that is not revoked already."""
        return await self._revoke("tokens", id)

    async def touch_token(self, id: str) -> None:
        await self._stamp("tokens", "last_used", id)

    async def next_token_expiry(self) -> float | None:
        """When the next live token expires (the host re-publishes its allowlist then)."""

        def get(conn: sqlite3.Connection) -> float | None:
            r = conn.execute(
                "SELECT MIN(expires_at) FROM tokens WHERE revoked_at IS NULL AND expires_at > ?", (time.time(),)
            ).fetchone()
            return None if r is None or r[0] is None else float(r[0])

        return await self.db.run(get, write=False)

    # -- pairing offers --------------------------------------------------------------------

    async def create_offer(self, scopes: list[str], ttl_seconds: float, workspace: str | None = None) -> Offer:
        if ttl_seconds <= 0:
            raise StoreError("an offer must live for some time", code="bad_ttl")
        offer_id = b64u_encode(secrets.token_bytes(OFFER_ID_BYTES))
        secret = secrets.token_bytes(OFFER_SECRET_BYTES)

        def create(conn: sqlite3.Connection) -> Offer:
            now = time.time()
            conn.execute(
                "INSERT INTO offers (id, secret, scopes, created, expires_at, workspace) VALUES (?, ?, ?, ?, ?, ?)",
                (offer_id, secret, json.dumps(list(scopes)), now, now + ttl_seconds, workspace),
            )
            return Offer(offer_id, secret, list(scopes), now + ttl_seconds, workspace=workspace)

        return await self.db.run(create)

    async def get_offer(self, id: str) -> Offer | None:
        def get(conn: sqlite3.Connection) -> Offer | None:
            r = conn.execute(f"SELECT {_OFFER_COLS} FROM offers WHERE id = ?", (id,)).fetchone()
            return _offer(r) if r else None

        return await self.db.run(get, write=False)

    async def live_offers(self) -> list[Offer]:
        """Offers neither consumed nor expired (published to the relay for admission)."""

        def ls(conn: sqlite3.Connection) -> list[Offer]:
            rows = conn.execute(
                f"SELECT {_OFFER_COLS} FROM offers WHERE consumed_at IS NULL AND expires_at > ? ORDER BY created",
                (time.time(),),
            )
            return [_offer(r) for r in rows]

        return await self.db.run(ls, write=False)

    async def consume_offer(self, id: str, device_id: str) -> bool:
        """Mark an offer used by ``device_id``: True for the first caller only, False when it
        is unknown, already consumed or expired."""

        def consume(conn: sqlite3.Connection) -> bool:
            return _consume(conn, id, device_id)

        return await self.db.run(consume)

    async def claim_offer(
        self,
        offer_id: str,
        *,
        device_id: str,
        name: str,
        identity_public: bytes,
        static_public: bytes,
    ) -> Device | None:
        """Consume the offer and record the device with the offer's scopes and workspace
        restriction, in one transaction: either both happen or neither. None when the offer is
        not live."""

        def claim(conn: sqlite3.Connection) -> Device | None:
            r = conn.execute(f"SELECT {_OFFER_COLS} FROM offers WHERE id = ?", (offer_id,)).fetchone()
            if r is None or not _consume(conn, offer_id, device_id):
                return None
            offer = _offer(r)
            return _add_device(conn, Grantee(device_id, name, identity_public, static_public, offer.scopes,
                                             offer.workspace))

        return await self.db.run(claim)

    async def prune_offers(self, older_than: float = 86400.0) -> int:
        """Forget offers that expired or were consumed more than ``older_than`` seconds ago."""

        def prune(conn: sqlite3.Connection) -> int:
            cutoff = time.time() - older_than
            return conn.execute("DELETE FROM offers WHERE expires_at < ? OR consumed_at < ?", (cutoff, cutoff)).rowcount

        return await self.db.run(prune)

    # -- apply-once commands ---------------------------------------------------------------

    async def once(
        self,
        cid: str,
        device_id: str,
        fn: Callable[[sqlite3.Connection], Any],
        *,
        method: str = "",
    ) -> Applied:
        """Apply ``fn`` (a database effect returning a JSON value) at most once per
        (device, cid). The check, the effect and the record are one transaction on the single
        writer, so concurrent duplicates and retries after a crash both replay the first result.
        If ``fn`` raises, nothing is recorded and a retry applies it again."""

        def run(conn: sqlite3.Connection) -> Applied:
            prior = _command(conn, device_id, cid)
            if prior is not None:
                return prior
            result = fn(conn)
            _record(conn, device_id, cid, method, result)
            return Applied(result, replayed=False)

        return await self.db.run(run)

    async def once_async(
        self,
        cid: str,
        device_id: str,
        op: Callable[[], Awaitable[Any]],
        *,
        method: str = "",
    ) -> Applied:
        """Like :meth:`once` for an effect that is not a database function (e.g. writing to a
        pty): duplicates arriving together wait on a per-(device, cid) lock and then replay.
        The effect and its record are not one transaction: a crash between the two lets a retry
        apply it again. Use one of ``once``/``once_async`` per method, not both."""
        key = (device_id, cid)
        entry = self._cid_locks.setdefault(key, _KeyLock())
        entry.users += 1
        lock = entry.lock
        try:
            async with lock:
                prior = await self.command_result(cid, device_id)
                if prior is not None:
                    return prior
                result = await op()

                def record(conn: sqlite3.Connection) -> None:
                    _record(conn, device_id, cid, method, result)

                await self.db.run(record)
                return Applied(result, replayed=False)
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._cid_locks[key]

    async def apply_once(self, cid: str, device_id: str, method: str, op: Callable[[], Awaitable[Any]]) -> Any:
        """:meth:`once_async`, returning just the result (the first application's, replayed
        from the database for a duplicate)."""
        return (await self.once_async(cid, device_id, op, method=method)).result

    async def command_result(self, cid: str, device_id: str) -> Applied | None:
        """The recorded result of an applied command (``replayed=True``), or None."""

        def get(conn: sqlite3.Connection) -> Applied | None:
            return _command(conn, device_id, cid)

        return await self.db.run(get, write=False)

    async def prune_commands(self, older_than: float = 7 * 86400.0) -> int:
        """Forget command ids applied more than ``older_than`` seconds ago (a client retries
        within minutes; a week is far beyond any reconnect)."""

        def prune(conn: sqlite3.Connection) -> int:
            cur = conn.execute("DELETE FROM commands WHERE applied_at < ?", (time.time() - older_than,))
            return cur.rowcount

        return await self.db.run(prune)


def _add_device(conn: sqlite3.Connection, who: Grantee) -> Device:
    r = conn.execute("SELECT revoked_at FROM devices WHERE id = ?", (who.id,)).fetchone()
    if r is not None and r[0] is None:
        raise StoreError(
            f"device {who.id} is already paired", hint="revoke it first to pair it again", code="device_exists"
        )
    now = time.time()
    conn.execute(
        "INSERT OR REPLACE INTO devices (id, name, identity_public, static_public, scopes, workspace,"
        " created, last_seen, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
        (*_grantee_row(who), now),
    )
    return Device(**_fields(who), created=now, last_seen=None, revoked_at=None)


def _fields(who: Grantee) -> dict[str, Any]:
    return {f.name: getattr(who, f.name) for f in dataclasses.fields(Grantee)} | {"scopes": list(who.scopes)}


def _grantee_row(who: Grantee) -> tuple[Any, ...]:
    """Its columns, in the order both tables declare them."""
    return who.id, who.name, who.identity_public, who.static_public, json.dumps(list(who.scopes)), who.workspace


def _consume(conn: sqlite3.Connection, offer_id: str, device_id: str) -> bool:
    now = time.time()
    cur = conn.execute(
        "UPDATE offers SET consumed_at = ?, device_id = ? WHERE id = ? AND consumed_at IS NULL AND expires_at > ?",
        (now, device_id, offer_id, now),
    )
    return cur.rowcount == 1


def _command(conn: sqlite3.Connection, device_id: str, cid: str) -> Applied | None:
    r = conn.execute("SELECT result FROM commands WHERE device_id = ? AND cid = ?", (device_id, cid)).fetchone()
    return Applied(json.loads(r[0]), replayed=True) if r else None


def _record(conn: sqlite3.Connection, device_id: str, cid: str, method: str, result: Any) -> None:
    conn.execute(
        "INSERT INTO commands (device_id, cid, method, result, applied_at) VALUES (?, ?, ?, ?, ?)",
        (device_id, cid, method, json.dumps(result), time.time()),
    )
