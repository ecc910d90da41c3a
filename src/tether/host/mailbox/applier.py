"""What devices queued at the relay while the host was away, applied once and in order.

Each item is sealed by a device for this host (:mod:`tether.crypto.seal`): opening it proves which
device's key sealed it, whatever the relay says. It is then applied as that device's own request
(its scopes and workspace *now*, the audit, the ``cid`` that makes a command apply once), after
these checks: the device is still paired and not revoked, and it is the device the relay says
queued it; the item is for this host; its number ``n`` is new for the device and not below one
already applied (a replay or a reordering by the relay is refused); it is not older than a day.
What is refused is said on the session (``mailbox.refused``), so the person sees why their queued
approval or prompt did not go through; nothing is applied late by accident: an approval answered
or withdrawn meanwhile is no longer pending, and the session refuses it.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from tether.crypto.seal import SealError, open_sealed
from tether.errors import TetherError
from tether.host.audit import Actor, AuditLog
from tether.host.db import Database
from tether.host.eventlog import EventLog
from tether.host.keyring import HostKeyring
from tether.host.principal import Principal
from tether.host.projection import get_approval
from tether.host.store import Device, Store
from tether.host.workspaces import within
from tether.protocol.events import EventType, MailboxRefused, encoded
from tether.protocol.frames import MailboxItem
from tether.protocol.mailbox import ITEM, Queued, context, decode_queued
from tether.protocol.scopes import parse_scopes
from tether.relay.link import RelayLink

log = logging.getLogger(__name__)

#: A queued item older than this (by the device's clock) is refused: the world moved on.
MAX_AGE_SECONDS = 86400.0

Apply = Callable[[Principal, str, dict[str, Any]], Awaitable[Any]]


class Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Applier:
    """Takes one relay link's queued items and applies them (:meth:`run`)."""

    def __init__(self, db: Database, log_: EventLog, store: Store, audit: AuditLog, keyring: HostKeyring, *,
                 host_id: str, apply: Apply) -> None:
        self.db, self.log, self.store, self.audit, self.keyring = db, log_, store, audit, keyring
        self.host_id = host_id
        self.apply = apply

    async def run(self, link: RelayLink) -> None:
        """What waited at the relay, then each item queued while the link lasts; until cancelled
        or the link is lost."""
        try:
            for item in await link.take():
                await self.one(link, item)
            while True:
                await self.one(link, await link.mailbox_items.get())
        except TetherError as exc:  # the link is gone (the next one takes what is left), or no mailbox
            log.info("queued items: %s", exc.message)

    async def one(self, link: RelayLink, item: MailboxItem) -> None:
        try:
            await self._apply(item)
        except Refused as refused:
            log.info("a queued item (%d) was refused: %s", item.item, refused.message)
        await link.ack([item.item])

    async def _apply(self, item: MailboxItem) -> None:
        try:
            sender, plaintext = open_sealed(self.keyring.statics(), context(ITEM, self.host_id), item.sealed)
        except SealError as exc:
            self.audit.record(Actor.unknown(), "mailbox.item", "unreadable", detail=exc.message)
            raise Refused("unreadable", exc.message) from None
        device = await self.store.get_device_by_static(sender)
        if device is None or device.revoked or device.identity_public != item.device_identity:
            why = "unknown" if device is None else "revoked" if device.revoked else "identity_mismatch"
            self.audit.record(Actor.unknown() if device is None else Actor("device", device.id, device.name),
                              "mailbox.item", why)
            raise Refused(why, "the item's device is not (or no longer) paired with this host")
        actor = Actor("device", device.id, device.name)
        try:
            queued = decode_queued(plaintext)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self.audit.record(actor, "mailbox.item", "malformed", detail=str(exc)[:200])
            raise Refused("malformed", "the item is not a queued request") from None
        if queued.host_id != self.host_id:
            self.audit.record(actor, "mailbox.item", "other_host")
            raise Refused("other_host", "the item was queued for another host")
        seen = await self.db.run(lambda c: _seen(c, device.id, queued.n), write=False)
        if seen == "applied":
            return  # delivered again (the host went away before acking it): applied already
        principal = Principal(kind="device", id=device.id, name=device.name, scopes=parse_scopes(device.scopes),
                              workspace=device.workspace)
        try:
            if seen == "later":
                raise Refused("out_of_order", "it arrived after a later item of the same device was applied")
            if time.time() - queued.queued_at > MAX_AGE_SECONDS:
                raise Refused("stale", "it waited more than a day for the host; send it again if it still matters")
            try:
                await self.apply(principal, queued.method, queued.params)
            except TetherError as exc:
                raise Refused(exc.code, await self._why(queued, exc)) from None
            except Exception:
                log.exception("applying a queued %s failed", queued.method)
                raise Refused("internal", "the host failed on it (see its log); send it again") from None
        except Refused as refused:
            await self._record(device.id, queued.n, refused.code)
            await self._say(queued, device, refused)
            raise
        await self._record(device.id, queued.n, "ok")

    async def _why(self, queued: Queued, exc: TetherError) -> str:
        """Why the request was refused, as the person who queued it should read it."""
        approval = queued.params.get("approval")
        if exc.code == "approval_conflict" and isinstance(approval, str):
            found = await self.db.run(lambda c: get_approval(c, approval), write=False)
            by = (found or {}).get("by") or {}
            if found is not None and found["status"] == "resolved" and by.get("name"):
                return f"{by['name']} answered it first ({found.get('decision')}), while the host was away"
            return "it was no longer waiting for an answer when the host came back (withdrawn, or the turn ended)"
        return exc.message

    async def _record(self, device_id: str, n: int, outcome: str) -> None:
        await self.db.run(lambda c: c.execute(
            "INSERT OR IGNORE INTO mailbox_applied (device_id, n, outcome, at) VALUES (?, ?, ?, ?)",
            (device_id, n, outcome, time.time())))

    async def _say(self, queued: Queued, device: Device, refused: Refused) -> None:
        """The refusal, on the session the request was for (when the device may see it)."""
        session = queued.params.get("id")
        if not isinstance(session, str):
            return
        row = await self.db.run(
            lambda c: c.execute("SELECT workspace FROM sessions WHERE id = ?", (session,)).fetchone(), write=False)
        if row is None or not within(row[0], device.workspace):
            return  # a session it may not see hears nothing of it
        cid = queued.params.get("cid")
        note = MailboxRefused(cid=cid if isinstance(cid, str) else None, method=queued.method, code=refused.code,
                              message=refused.message, queued_at=queued.queued_at,
                              by={"id": device.id, "name": device.name})
        type_, data = encoded(note)
        assert type_ is EventType.MAILBOX_REFUSED
        await self.log.append(session, type_, data, note.cid)


def _seen(conn: sqlite3.Connection, device_id: str, n: int) -> str:
    """"applied" (this one was), "later" (a later one was), or "new"."""
    if conn.execute("SELECT 1 FROM mailbox_applied WHERE device_id = ? AND n = ?", (device_id, n)).fetchone():
        return "applied"
    latest = conn.execute("SELECT MAX(n) FROM mailbox_applied WHERE device_id = ?", (device_id,)).fetchone()[0]
    return "later" if latest is not None and latest > n else "new"
