"""The host's side of the relay's mailbox, without a relay: each queued item is judged by what is
sealed in it (tests/e2e/test_mailbox.py runs the whole path). A hostile relay may replay, reorder,
forge or misattribute items; a device may queue for another host or another workspace."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tether.crypto.keys import Identity
from tether.crypto.seal import open_sealed, seal
from tether.errors import TetherError
from tether.host.audit import AuditLog
from tether.host.db import Database
from tether.host.eventlog import EventLog
from tether.host.keyring import HostKeyring
from tether.host.mailbox.applier import Applier, Refused
from tether.host.mailbox.deposits import MAX_TEXT, Depositor
from tether.host.principal import Principal
from tether.host.store import Grantee, Store
from tether.protocol.frames import MailboxItem
from tether.protocol.mailbox import ITEM, SNAPSHOT, Queued, context, decode_snapshot, encode

HOST_ID = "hosthosthosthosthost"


@dataclass
class Box:
    db: Database
    log: EventLog
    store: Store
    keyring: HostKeyring
    applier: Applier
    applied: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    fail_with: TetherError | None = None


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Box]:
    db = await Database.open(tmp_path / "host.db")
    log = await EventLog.open(db)
    store, audit = Store(db), AuditLog(db)
    keyring = HostKeyring(tmp_path / "keys.json")
    made: list[Box] = []

    async def apply(principal: Principal, method: str, params: dict[str, Any]) -> None:
        made[0].applied.append((principal.id, method, params))
        if made[0].fail_with is not None:
            raise made[0].fail_with

    made.append(Box(db, log, store, keyring, Applier(db, log, store, audit, keyring, host_id=HOST_ID, apply=apply)))
    yield made[0]
    await audit.close()
    await log.close()
    await db.close()


async def device(box: Box, name: str, workspace: str | None = None, scopes: tuple[str, ...] = ("read", "prompt")
                 ) -> Identity:
    ident = Identity.generate()
    await box.store.add_device(Grantee(f"d_{name}", name, ident.identity_public, ident.static_public, list(scopes),
                                       workspace))
    return ident


def item(box: Box, sender: Identity, n: int, *, text: str = "hi", host_id: str = HOST_ID, age: float = 0.0,
         relay_says: bytes | None = None, number: int = 1) -> MailboxItem:
    queued = Queued(host_id, n, time.time() - age, "sessions.send", {"id": "s_1", "text": text, "cid": f"c{n}"})
    sealed = seal(sender.static, box.keyring.identity.static_public, context(ITEM, HOST_ID), encode(queued))
    return MailboxItem(0, number, relay_says or sender.identity_public, int(time.time() * 1000), sealed)


async def judged(box: Box, one: MailboxItem) -> str:
    try:
        await box.applier._apply(one)
    except Refused as refused:
        return refused.code
    return "ok"


async def test_an_item_is_applied_as_its_device_once_however_often_the_relay_delivers_it(box: Box) -> None:
    phone = await device(box, "phone")
    once = item(box, phone, 5)
    assert await judged(box, once) == "ok"
    assert await judged(box, once) == "ok"  # delivered again: not applied again
    assert box.applied == [("d_phone", "sessions.send", {"id": "s_1", "text": "hi", "cid": "c5"})]
    assert await judged(box, item(box, phone, 6, text="next")) == "ok"
    assert [p["text"] for _, _, p in box.applied] == ["hi", "next"]


async def test_replayed_reordered_forged_and_misattributed_items_are_refused(box: Box) -> None:
    phone, other = await device(box, "phone"), await device(box, "other")
    stranger = Identity.generate()  # never paired
    assert await judged(box, item(box, phone, 10)) == "ok"
    assert await judged(box, item(box, phone, 9)) == "out_of_order"  # held back by the relay, then sent
    assert await judged(box, item(box, stranger, 1)) == "unknown"
    # The relay says another device queued it: the sealed sender decides, and they disagree.
    assert await judged(box, item(box, phone, 11, relay_says=other.identity_public)) == "identity_mismatch"
    assert await judged(box, item(box, phone, 12, host_id="otherhostotherhostxx")) == "other_host"
    assert await judged(box, item(box, phone, 13, age=2 * 86400)) == "stale"
    tampered = item(box, phone, 14)
    flipped = bytearray(tampered.sealed)
    flipped[-1] ^= 1
    assert await judged(box, MailboxItem(0, 1, phone.identity_public, 0, bytes(flipped))) == "unreadable"
    await box.store.revoke_device("d_phone")
    assert await judged(box, item(box, phone, 15)) == "revoked"
    assert [p["text"] for _, _, p in box.applied] == ["hi"]


async def test_a_refusal_of_the_host_is_said_on_the_session_for_a_device_that_sees_it(box: Box) -> None:
    phone = await device(box, "phone", workspace="/w/a")
    for sid, workspace in (("s_1", "/w/a"), ("s_2", "/w/b")):
        await box.log.append(sid, "session.started", {"agent": "builtin", "workspace": workspace, "command": [],
                                                      "title": "t", "cols": 80, "rows": 24})
    box.fail_with = TetherError("the session has ended", hint="start a new one", code="session_finished")
    assert await judged(box, item(box, phone, 1)) == "session_finished"
    [said] = [e for e in await box.log.read(0, 100) if e.type == "mailbox.refused"]
    assert said.session == "s_1" and said.cid == "c1"
    assert said.data["message"] == "the session has ended" and said.data["by"] == {"id": "d_phone", "name": "phone"}
    # Aimed at a session outside its workspace: refused by the host, and nothing said there.
    queued = Queued(HOST_ID, 2, time.time(), "sessions.send", {"id": "s_2", "text": "x", "cid": "c2"})
    sealed = seal(phone.static, box.keyring.identity.static_public, context(ITEM, HOST_ID), encode(queued))
    assert await judged(box, MailboxItem(0, 2, phone.identity_public, 0, sealed)) == "session_finished"
    assert [e.session for e in await box.log.read(0, 100) if e.type == "mailbox.refused"] == ["s_1"]


async def test_any_sealed_bytes_are_refused_cleanly(box: Box) -> None:
    phone = await device(box, "fuzz")
    rng = random.Random(7)
    for size in [0, 1, 95, 96, 97, *(rng.randrange(400) for _ in range(40))]:
        junk = rng.randbytes(size)
        assert await judged(box, MailboxItem(0, 1, phone.identity_public, 0, junk)) == "unreadable"
        # Well sealed by a paired device, but not a queued request.
        sealed = seal(phone.static, box.keyring.identity.static_public, context(ITEM, HOST_ID), junk)
        assert await judged(box, MailboxItem(0, 1, phone.identity_public, 0, sealed)) == "malformed"
    assert box.applied == []


async def test_each_device_gets_a_snapshot_of_what_it_may_see_and_only_it_can_open_it(box: Box) -> None:
    wide, narrow = await device(box, "wide"), await device(box, "narrow", workspace="/w/a")
    reader = await device(box, "no-read", scopes=("prompt",))
    for sid, workspace in (("s_a", "/w/a"), ("s_b", "/w/b")):
        await box.log.append(sid, "session.started", {"agent": "builtin", "workspace": workspace, "command": [],
                                                      "title": sid, "cols": 80, "rows": 24})
        await box.log.append(sid, "session.output", {"stream": "pty", "data": "x" * (3 * MAX_TEXT)})

    class Link:
        def __init__(self) -> None:
            self.deposited: dict[bytes, bytes] = {}

        async def deposit(self, identity: bytes, sealed: bytes) -> None:
            self.deposited[identity] = sealed

    link = Link()
    depositor = Depositor(box.db, box.log, box.store, box.keyring, host_id=HOST_ID, host_name=lambda: "laptop")
    assert await depositor.deposit_all(link)  # type: ignore[arg-type]
    assert set(link.deposited) == {wide.identity_public, narrow.identity_public}  # no read scope: nothing
    assert reader.identity_public not in link.deposited

    def opened(who: Identity) -> Any:
        sender, plain = open_sealed([who.static], context(SNAPSHOT, HOST_ID), link.deposited[who.identity_public])
        assert sender == box.keyring.identity.static_public
        return decode_snapshot(plain)

    assert {s["id"] for s in opened(wide).sessions} == {"s_a", "s_b"}
    mine = opened(narrow)
    assert {s["id"] for s in mine.sessions} == {"s_a"} and set(mine.events) == {"s_a"}
    [output] = [e for e in mine.events["s_a"] if e["type"] == "session.output"]
    assert len(output["data"]["data"]) == MAX_TEXT + 1  # clipped, marked with an ellipsis
    with pytest.raises(TetherError):
        open_sealed([wide.static], context(SNAPSHOT, HOST_ID), link.deposited[narrow.identity_public])

    # Nothing changed: nothing is sent again.
    link.deposited.clear()
    assert await depositor.deposit_all(link)  # type: ignore[arg-type]
    assert link.deposited == {}
