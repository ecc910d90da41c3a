"""The host's snapshots in the relay's mailbox: what each device shows while the host is away.

For every paired device with ``read``, the sessions it may see (each live one with its pending
approvals and its latest events), sealed for that device alone (:mod:`tether.crypto.seal`) and
left at the relay. Kept current while the host is connected: after the log settles (a couple of
seconds after a change), and every ten minutes so that the phone's "as of" stays honest. A
device's snapshot is sent again only when what it says changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from tether.crypto.seal import MAX_SEALED_PLAINTEXT, seal
from tether.errors import TetherError
from tether.host.db import Database
from tether.host.eventlog import EventLog
from tether.host.keyring import HostKeyring
from tether.host.projection import TERMINAL, list_sessions, pending_approvals
from tether.host.store import Device, Store
from tether.host.workspaces import within
from tether.lograte import LogLimiter
from tether.protocol.events import EventType
from tether.protocol.frames import CloseCode
from tether.protocol.mailbox import SNAPSHOT, Snapshot, context, encode
from tether.protocol.scopes import Scope, parse_scopes
from tether.relay.errors import MailboxRefusal
from tether.relay.link import RelayLink

log = logging.getLogger(__name__)

#: Latest events of each live session a snapshot carries.
EVENTS_PER_SESSION = 20
#: Characters of one text field of an event in a snapshot (a command's output, a diff…).
MAX_TEXT = 2000
SETTLE_SECONDS = 2.0
REFRESH_SECONDS = 600.0
# Streamed pieces: the completed item says it all.
_SKIPPED = (EventType.ITEM_DELTA.value,)


class Depositor:
    """Keeps one relay link's mailbox of this host current (:meth:`run`), and leaves a last
    snapshot as the host stops (:meth:`deposit_all`)."""

    def __init__(self, db: Database, log_: EventLog, store: Store, keyring: HostKeyring, *,
                 host_id: str, host_name: Callable[[], str]) -> None:
        self.db, self.log, self.store, self.keyring = db, log_, store, keyring
        self.host_id = host_id
        self.host_name = host_name
        self._sent: dict[str, bytes] = {}  # device id → digest of what it was last left
        self._quiet = LogLimiter(log, 600.0)

    async def run(self, link: RelayLink) -> None:
        """Deposit at once, then whenever the log has changed and settled; until cancelled or
        the relay keeps no mailbox."""
        self._sent.clear()  # a new connection: leave each device its snapshot once more
        while True:
            if not await self.deposit_all(link):
                return
            seen = self.log.head
            try:
                async with asyncio.timeout(REFRESH_SECONDS):
                    await self.log.wait_for(seen + 1)
            except TimeoutError:
                self._sent.clear()  # nothing changed: a fresh "as of" all the same
                continue
            if self.log.closed:
                return
            await asyncio.sleep(SETTLE_SECONDS)

    async def deposit_all(self, link: RelayLink) -> bool:
        """Leave every device its snapshot as of now; False when the relay keeps no mailbox."""
        devices = [d for d in await self.store.list_devices() if Scope.READ in parse_scopes(d.scopes)]
        if not devices:
            return True
        sessions, events = await self._state()
        for device in devices:
            plaintext, digest = self._snapshot(device, sessions, events)
            if self._sent.get(device.id) == digest:
                continue
            sealed = seal(self.keyring.identity.static, device.static_public, context(SNAPSHOT, self.host_id),
                          plaintext)
            try:
                await link.deposit(device.identity_public, sealed)
            except MailboxRefusal as refused:
                if refused.close_code == CloseCode.MAILBOX_OFF:
                    log.info("the relay keeps no mailbox: devices will not see this host's sessions while it is away")
                    return False
                self._quiet.log(logging.WARNING, "deposit", "the relay's mailbox refused a snapshot: %s",
                                refused.message)
                continue
            except TetherError as exc:
                log.info("leaving snapshots in the relay's mailbox stopped: %s", exc.message)
                return True
            self._sent[device.id] = digest
        return True

    async def _state(self) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        def read(conn: Any) -> list[dict[str, Any]]:
            rows = list_sessions(conn)
            for row in rows:
                if _live(row):
                    row["approvals"] = pending_approvals(conn, row["id"])
            return rows

        sessions = await self.db.run(read, write=False)
        events = {s["id"]: [_clipped(e.to_wire()) for e in await self.log.tail(s["id"], EVENTS_PER_SESSION, _SKIPPED)]
                  for s in sessions if _live(s)}
        return sessions, events

    def _snapshot(self, device: Device, sessions: list[dict[str, Any]],
                  events: dict[str, list[dict[str, Any]]]) -> tuple[bytes, bytes]:
        """The device's snapshot as plaintext (fitting one sealed message), and a digest of what
        it says (its time left out)."""
        seen = [s for s in sessions if within(s["workspace"], device.workspace)]
        mine = {s["id"]: list(events.get(s["id"], ())) for s in seen if s["id"] in events}
        head = max((s["last_seq"] or 0 for s in seen), default=0)
        snapshot = Snapshot(self.host_id, self.host_name(), 0.0, head, seen, mine)
        body = encode(snapshot)
        # Too large for one sealed message: the oldest events go first, then the oldest sessions.
        while len(body) > MAX_SEALED_PLAINTEXT - 64:
            longest = max(mine.values(), key=len, default=[])
            if longest:
                longest.pop(0)
            elif seen:
                mine.pop(seen.pop(0)["id"], None)
            else:
                break
            snapshot = Snapshot(self.host_id, self.host_name(), 0.0, head, seen, mine, truncated=True)
            body = encode(snapshot)
        digest = hashlib.sha256(body).digest()
        return encode(msgspec.structs.replace(snapshot, taken_at=time.time())), digest


def _live(session: dict[str, Any]) -> bool:
    return session["status"] not in TERMINAL and not session["archived"]


def _clipped(value: Any) -> Any:
    """An event as a snapshot carries it: long texts cut (a phone shows the gist, the host keeps all)."""
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + "…"
    if isinstance(value, dict):
        return {k: _clipped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clipped(v) for v in value]
    return value
