"""[9] 1, the host's side of Web Push, in process against a push service on loopback: each kind of
push is sealed to the browser's keys and signed with the host's VAPID key, carries the minimum,
goes only to devices that may see the session, records how it went; a gone subscription is
dropped, an unreachable service is said once, a hanging endpoint delays only its own device; and
subscriptions a device sends are checked (fuzzed)."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.fake_push import Browser, FakePush
from tether.host.db import Database
from tether.host.eventlog import EventLog
from tether.host.push import keys, subscriptions
from tether.host.push.notices import DELIVERY, Notice, notice_for
from tether.host.push.sender import PushSender
from tether.host.push.subscriptions import Subscription, SubscriptionError, check
from tether.host.store import Grantee, Store
from tether.protocol.events import EventType

HOST = "hosthosthosthosthost"
PROMPT = "deploy with the key sk-live-SECRET-123"  # a session title: in the payload, cut short
COMMAND = "curl -H 'Authorization: Bearer sk-cmd-SECRET' https://api"


async def device(store: Store, name: str, scopes: list[str], workspace: str | None = None) -> str:
    ident, static = os.urandom(32), os.urandom(32)
    return (await store.add_device(Grantee(f"d_{name}", name, ident, static, scopes, workspace))).id


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Database, EventLog, Store, PushSender, FakePush]]:
    db = await Database.open(tmp_path / "host" / "state.db")
    log = await EventLog.open(db)
    key = keys.load_or_create(tmp_path / "host" / "push-vapid.pem")
    # A push service that does not answer is given up on after 0.5 s (10 s on a host).
    sender = PushSender(db, log, key, host_id=HOST, host_name="laptop", subject="mailto:owner@example.com",
                        timeout=0.5)
    async with FakePush() as push:
        task = asyncio.create_task(sender.run())
        yield db, log, Store(db), sender, push
        task.cancel()
        await sender.close()
    await log.close()
    await db.close()


async def subscribe(db: Database, push: FakePush, device_id: str, browser: Browser) -> None:
    sub = Subscription(device_id, push.endpoint(device_id), **browser.keys())
    await db.run(functools.partial(subscriptions.save, sub=sub))


async def session(log: EventLog, sid: str, workspace: str) -> None:
    await log.append(sid, EventType.SESSION_STARTED, {"agent": "builtin", "workspace": workspace, "command": [],
                                                      "title": PROMPT, "cols": 80, "rows": 24})



async def three_turns(log: EventLog, tmp_path: Path) -> None:
    """A session whose three turns each end: three pushes for every device that sees it."""
    await session(log, "s_1", str(tmp_path))
    for n in range(3):
        await log.append("s_1", EventType.TURN_STARTED, {"turn": f"t_{n}", "input": "x"})
        await log.append("s_1", EventType.TURN_COMPLETED, {"turn": f"t_{n}", "status": "completed", "error": None})

async def test_each_kind_is_sealed_signed_minimal_and_goes_where_it_may(
    world: tuple[Database, EventLog, Store, PushSender, FakePush], tmp_path: Path,
) -> None:
    db, log, store, _, push = world
    phone, watcher = Browser(), Browser()
    mine = await device(store, "phone", ["read", "approve"])
    other = await device(store, "other", ["read"], workspace=str(tmp_path / "elsewhere"))
    blind = await device(store, "blind", ["prompt"])  # no read: sees no events, gets no pushes
    for dev, browser in ((mine, phone), (other, watcher), (blind, Browser())):
        await subscribe(db, push, dev, browser)
    await session(log, "s_1", str(tmp_path))
    await log.append("s_1", EventType.TURN_STARTED, {"turn": "t_1", "input": "go"})
    asked = {"approval": "ap_1", "item": None, "kind": "command", "details": {"command": COMMAND}, "options": []}
    await log.append("s_1", EventType.APPROVAL_REQUESTED, asked)
    await log.append("s_1", EventType.APPROVAL_RESOLVED, {"approval": "ap_1", "decision": "approve",
                                                          "by": {"id": "d_x", "name": "x"}})
    question = {**asked, "approval": "ap_2", "kind": "question", "details": {"questions": []}}
    await log.append("s_1", EventType.APPROVAL_REQUESTED, question)
    await log.append("s_1", EventType.APPROVAL_CLEARED, {"approval": "ap_2", "reason": "the turn ended"})
    await log.append("s_1", EventType.TURN_COMPLETED, {"turn": "t_1", "status": "completed", "error": None})
    await log.append("s_1", EventType.TURN_STARTED, {"turn": "t_2", "input": "again"})
    await log.append("s_1", EventType.TURN_COMPLETED, {"turn": "t_2", "status": "failed", "error": "x"})
    await log.append("s_1", EventType.SESSION_EXITED, {"exit_code": 1, "signal": None, "reason": "boom"})

    got = await push.wait(7)
    assert {p.path for p in got} == {f"/push/{mine}"}  # not the other workspace, not without read
    payloads = [phone.decrypt(p.body) for p in got]
    kinds = [p["kind"] for p in payloads]
    assert kinds == ["approval", "close", "question", "close", "turn_finished", "turn_failed", "session_failed"], kinds
    first = payloads[0]
    assert first == {"v": 1, "kind": "approval", "host": HOST, "host_name": "laptop", "session": "s_1",
                     "title": PROMPT[:60], "tag": f"tether:{HOST}:approval:ap_1", "approval": "ap_1"}
    assert payloads[1]["tag"] == first["tag"]  # the close replaces that very notification
    assert payloads[4]["tag"] == f"tether:{HOST}:session:s_1"
    for p, payload in zip(got, payloads, strict=True):
        assert b"sk-cmd-SECRET" not in p.body and "sk-cmd-SECRET" not in str(payload)  # never the command
        assert p.headers["Content-Encoding"] == "aes128gcm"
        assert (p.headers["Urgency"], int(p.headers["TTL"])) == DELIVERY[payload["kind"]]
        assert p.vapid_key() == keys.public_key(keys.load_or_create(tmp_path / "host" / "push-vapid.pem"))
    assert got[0].headers["Topic"] == got[1].headers["Topic"] != got[4].headers["Topic"]
    async with asyncio.timeout(10):  # the last result is recorded just after its answer
        while (states := await db.run(subscriptions.states, write=False))[mine]["sent"] < 7:
            await asyncio.sleep(0.02)
    assert states[mine]["last_result"] == "accepted" and states[mine]["sent"] == 7
    assert states[other]["sent"] == 0 and states[blind]["sent"] == 0


async def test_a_gone_subscription_is_dropped_and_an_unreachable_service_said_once(
    world: tuple[Database, EventLog, Store, PushSender, FakePush], tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    db, log, store, sender, push = world
    gone = await device(store, "gone", ["read"])
    await subscribe(db, push, gone, Browser())
    push.status[f"/push/{gone}"] = 410
    await session(log, "s_1", str(tmp_path))
    await log.append("s_1", EventType.SESSION_EXITED, {"exit_code": 0, "signal": None, "reason": None})
    await push.wait(1)
    async with asyncio.timeout(10):
        while (await db.run(subscriptions.states, write=False))[gone]["state"] != "gone":
            await asyncio.sleep(0.02)
    assert await db.run(subscriptions.active, write=False) == []

    # A push service nobody answers at: the result says so, the log says it once.
    far = Subscription("d_far", "http://127.0.0.1:9/push/x", **Browser().keys())
    notice = Notice("turn_finished", "s_1", "tag")
    with caplog.at_level(logging.WARNING):
        assert await sender.send(far, notice, "t") == ("unreachable", False)
        assert await sender.send(far, notice, "t") == ("unreachable", False)
    assert len([r for r in caplog.records if "cannot reach the push service" in r.message]) == 1


async def test_a_hanging_endpoint_delays_only_its_own_device(
    world: tuple[Database, EventLog, Store, PushSender, FakePush], tmp_path: Path,
) -> None:
    db, log, store, _, push = world
    stuck, fine = await device(store, "stuck", ["read"]), await device(store, "fine", ["read"])
    await subscribe(db, push, stuck, Browser())
    await subscribe(db, push, fine, Browser())
    push.hang.add(f"/push/{stuck}")
    await three_turns(log, tmp_path)
    got = await push.wait(3, timeout=5)
    assert [p.path for p in got] == [f"/push/{fine}"] * 3


async def test_what_waits_for_a_device_revoked_meanwhile_is_not_sent(
    world: tuple[Database, EventLog, Store, PushSender, FakePush], tmp_path: Path,
) -> None:
    db, log, store, _, push = world
    slow = await device(store, "slow", ["read"])
    await subscribe(db, push, slow, Browser())
    push.hang.add(f"/push/{slow}")
    await three_turns(log, tmp_path)
    async with asyncio.timeout(5):
        while not push.started:
            await asyncio.sleep(0.02)
    assert await store.revoke_device(slow)
    push.hang.clear()
    await asyncio.sleep(1.5)
    assert push.started == [f"/push/{slow}"]  # the two queued behind it were dropped, not sent


def test_notices_leave_out_what_needs_no_attention() -> None:
    from tether.host.event import Event

    def ev(type: str, **data: object) -> Event:
        return Event(1, "s_1", type, 0.0, dict(data))

    assert notice_for(ev(EventType.TURN_COMPLETED, turn="t", status="interrupted", error=None), HOST) is None
    assert notice_for(ev(EventType.ITEM_COMPLETED, kind="agent_message"), HOST) is None
    assert notice_for(Event(1, None, EventType.HOST_LINKED, 0.0, {}), HOST) is None
    ok = notice_for(ev(EventType.SESSION_EXITED, exit_code=0), HOST)
    assert ok is not None and ok.kind == "session_finished"


GOOD = Browser().keys()


@pytest.mark.parametrize("endpoint, why", [
    ("http://push.example.com/x", "https"),
    ("https://localhost/x", "not a public name"),
    ("https://127.0.0.1/x", "not a public one"),
    ("https://[::1]/x", "not a public one"),
    ("https://10.1.2.3/x", "not a public one"),
    ("https://169.254.169.254/latest", "not a public one"),
    ("https://intranet/x", "not a public name"),
    ("https://user:pw@push.example.com/x", "https"),
    ("https://push.example.com:99999/x", "not a URL"),
    ("https://push.example.com/" + "a" * 2100, "longer than"),
])
def test_endpoints_the_host_will_not_post_to_are_refused(endpoint: str, why: str) -> None:
    with pytest.raises(SubscriptionError, match=why) as refused:
        check(endpoint, GOOD["p256dh"], GOOD["auth"])
    assert refused.value.code == "bad_params"


def test_keys_are_checked_and_an_owner_allowed_prefix_passes() -> None:
    check("https://fcm.googleapis.com/fcm/send/abc", GOOD["p256dh"], GOOD["auth"])
    check("http://127.0.0.1:8080/push/1", GOOD["p256dh"], GOOD["auth"], allowed=["http://127.0.0.1:8080/"])
    with pytest.raises(SubscriptionError, match="not a P-256 public key"):
        check("https://push.example.com/x", "AAAA", GOOD["auth"])
    with pytest.raises(SubscriptionError, match="not 16 bytes"):
        check("https://push.example.com/x", GOOD["p256dh"], "AAAA")
    with pytest.raises(SubscriptionError, match="not base64url"):
        check("https://push.example.com/x", GOOD["p256dh"], "a")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.text(max_size=100), st.text(max_size=30))
def test_any_subscription_is_taken_or_refused_with_a_reason(endpoint: str, p256dh: str, auth: str) -> None:
    try:
        check(endpoint, p256dh, auth)
    except SubscriptionError as exc:
        assert exc.message
