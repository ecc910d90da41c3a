"""Browsers' push subscriptions, one per paired device, as the host keeps them.

A subscription comes from the device itself, inside its end-to-end channel: the push service's
URL (``endpoint``) and the browser's keys a payload is sealed to (RFC 8291). The host POSTs to
that URL, so it checks it first: HTTPS to a public name or address only — a device must not make
the host send requests into its own network — unless the host's owner lists a prefix
(``[push] allow_endpoints``, e.g. a push service of their own, or a test's on loopback).
Revoking the device, or the push service saying the subscription is gone, removes it.
"""

from __future__ import annotations

import ipaddress
import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

from tether.crypto.encoding import b64u_decode
from tether.errors import TetherError

MAX_ENDPOINT = 2048  # characters: push services' URLs are a few hundred


class SubscriptionError(TetherError):
    code = "bad_params"


@dataclass(frozen=True)
class Subscription:
    device_id: str
    endpoint: str
    p256dh: str
    auth: str

    def info(self) -> dict[str, Any]:
        """As pywebpush takes it (the browser's ``PushSubscription.toJSON()``)."""
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


def check(endpoint: str, p256dh: str, auth: str, *, allowed: Sequence[str] = ()) -> None:
    """Refuse, saying why, a subscription the host will not send to."""
    if len(endpoint) > MAX_ENDPOINT:
        raise SubscriptionError(f"the push endpoint is longer than {MAX_ENDPOINT} characters")
    if not any(endpoint.startswith(prefix) for prefix in allowed):
        _check_public_https(endpoint)
    key = _b64u(p256dh, "p256dh")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key)
    except ValueError:
        raise SubscriptionError("the subscription's p256dh is not a P-256 public key") from None
    if len(_b64u(auth, "auth")) != 16:
        raise SubscriptionError("the subscription's auth secret is not 16 bytes")


def _check_public_https(endpoint: str) -> None:
    try:
        parts = urlsplit(endpoint)
        _ = parts.port  # a malformed port raises here
    except ValueError:
        raise SubscriptionError("the push endpoint is not a URL") from None
    if parts.scheme != "https" or not parts.hostname or parts.username or parts.password:
        raise SubscriptionError("the push endpoint must be an https:// URL of a push service",
                                hint="subscribe from the browser's PushManager; it gives the endpoint")
    name = parts.hostname
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        if name == "localhost" or name.endswith((".localhost", ".local", ".internal")) or "." not in name:
            raise SubscriptionError(f"the push endpoint's host {name!r} is not a public name") from None
        return
    if not address.is_global:
        raise SubscriptionError(f"the push endpoint's address {name} is not a public one")


def _b64u(value: str, what: str) -> bytes:
    try:
        return b64u_decode(value)
    except ValueError:
        raise SubscriptionError(f"the subscription's {what} is not base64url") from None


# -- storage (inside the caller's transaction) ------------------------------------------------


def save(conn: sqlite3.Connection, sub: Subscription) -> None:
    conn.execute(
        "INSERT INTO push_subscriptions (device_id, endpoint, p256dh, auth, created, state)"
        " VALUES (?, ?, ?, ?, ?, 'active') ON CONFLICT (device_id) DO UPDATE SET endpoint = excluded.endpoint,"
        " p256dh = excluded.p256dh, auth = excluded.auth, created = excluded.created, state = 'active',"
        " last_result = NULL, last_at = NULL, sent = 0",
        (sub.device_id, sub.endpoint, sub.p256dh, sub.auth, time.time()),
    )


def remove(conn: sqlite3.Connection, device_id: str) -> bool:
    return conn.execute("DELETE FROM push_subscriptions WHERE device_id = ?", (device_id,)).rowcount == 1


def active(conn: sqlite3.Connection) -> list[tuple[Subscription, frozenset[str], str | None]]:
    """Every active subscription of a device that is not revoked: with the device's scopes and
    workspace restriction."""
    rows = conn.execute(
        "SELECT p.device_id, p.endpoint, p.p256dh, p.auth, d.scopes, d.workspace FROM push_subscriptions p"
        " JOIN devices d ON d.id = p.device_id WHERE p.state = 'active' AND d.revoked_at IS NULL"
    )
    return [(Subscription(r[0], r[1], r[2], r[3]), frozenset(json.loads(r[4])), r[5]) for r in rows]


def is_active(conn: sqlite3.Connection, device_id: str) -> bool:
    """Whether the device still takes pushes (not revoked, not unsubscribed, not gone)."""
    return conn.execute(
        "SELECT 1 FROM push_subscriptions p JOIN devices d ON d.id = p.device_id"
        " WHERE p.device_id = ? AND p.state = 'active' AND d.revoked_at IS NULL", (device_id,),
    ).fetchone() is not None


def record(conn: sqlite3.Connection, device_id: str, result: str, *, gone: bool = False) -> None:
    """How a delivery went; a subscription the push service says is gone is dropped (its state stays)."""
    if gone:
        conn.execute(
            "UPDATE push_subscriptions SET state = 'gone', endpoint = NULL, p256dh = NULL, auth = NULL,"
            " last_result = ?, last_at = ? WHERE device_id = ?", (result, time.time(), device_id))
        return
    accepted = 1 if result == "accepted" else 0
    conn.execute("UPDATE push_subscriptions SET last_result = ?, last_at = ?, sent = sent + ? WHERE device_id = ?",
                 (result, time.time(), accepted, device_id))


def states(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Each device's push state, as devices.list shows it: {state, last_result, last_at, sent}."""
    rows = conn.execute("SELECT device_id, state, last_result, last_at, sent FROM push_subscriptions")
    return {r[0]: {"state": r[1], "last_result": r[2], "last_at": r[3], "sent": r[4]} for r in rows}
