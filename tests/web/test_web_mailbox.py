"""[9] part 2 on the phone: while its host is away the page shows what the host left at the relay
(its sessions and latest events, said to be that, with their age) and queues what is typed
there; the host applies it once when it is back (through a relay restart meanwhile), or the page
shows why not. Real relay, host and builtin agent processes on a scripted model; the page's seal
against Python's."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tests.procs import Proc
from tether.crypto.keys import raw_private, raw_public
from tether.crypto.seal import open_sealed, seal
from tether.protocol.mailbox import ITEM, SNAPSHOT, context

from .conftest import BuiltinDeployment, builtin_host, start_web_relay, write_file_call
from .pages import TIMEOUT, until
from .test_web_codex import cli_events, start_on_page, status

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HOST = "mailbox-host"
FIRST = "remember the word teal"
FIRST_REPLY = "Noted: teal."
FOLLOW_UP = "which word did I ask you to remember?"
SECOND_REPLY = "You asked me to remember teal."
AGENT_TIMEOUT = 60_000


SEAL = """
async ([devicePrivate, hostPublic, hostId, sealedForMe, plaintext]) => {
  const { importX25519Private } = await import("/noise.js");
  const { seal, openSealed } = await import("/seal.js");
  const { context, ITEM, SNAPSHOT } = await import("/mailbox.js");
  const { fromHex, toHex, utf8, fromUtf8 } = await import("/bytes.js");
  const me = await importX25519Private(fromHex(devicePrivate));
  const out = { context: toHex(context(ITEM, hostId)) };
  out.sealed = toHex(await seal(me, fromHex(hostPublic), context(ITEM, hostId), utf8(plaintext)));
  const opened = await openSealed(me, context(SNAPSHOT, hostId), fromHex(sealedForMe));
  out.sender = toHex(opened.sender);
  out.opened = fromUtf8(opened.plaintext);
  // Bound to its direction and host: as an item, or for another host, it does not open.
  for (const [name, ctx] of [["as item", context(ITEM, hostId)], ["other host", context(SNAPSHOT, hostId + "x")]]) {
    try { await openSealed(me, ctx, fromHex(sealedForMe)); out[name] = "opened"; }
    catch (err) { out[name] = err.name; }
  }
  return out;
}
"""


def test_the_page_seals_and_opens_mailbox_blobs_as_python_does(page: Any, static_relay: int) -> None:
    page.goto(f"http://127.0.0.1:{static_relay}/healthz")
    device, host = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    host_id = "abcdefghijklmnopqrst"
    snapshot = json.dumps({"host_id": host_id, "note": "for the phone ✓"})
    sealed = seal(host, raw_public(device), context(SNAPSHOT, host_id), snapshot.encode())
    out = page.evaluate(SEAL, [raw_private(device).hex(), raw_public(host).hex(), host_id, sealed.hex(),
                               "a queued prompt ✓"])
    assert bytes.fromhex(out["context"]) == context(ITEM, host_id)
    assert out["opened"] == snapshot and bytes.fromhex(out["sender"]) == raw_public(host)
    assert out["as item"] == out["other host"] == "SealError"
    sender, plaintext = open_sealed([host], context(ITEM, host_id), bytes.fromhex(out["sealed"]))
    assert sender == raw_public(device) and plaintext.decode() == "a queued prompt ✓"


READ = """
async ([devicePrivate, hostPublic, hostId, blobs]) => {
  const { importX25519Private } = await import("/noise.js");
  const { Mailbox } = await import("/mailbox.js");
  const { fromHex } = await import("/bytes.js");
  const staticKey = await importX25519Private(fromHex(devicePrivate));
  const out = [];
  for (const blob of blobs) {
    // A relay link that holds `blob` for this browser, and nothing else of a connection.
    const link = { isClosed: false, snapshot: async () => ({ depositedAt: 1, sealed: fromHex(blob) }) };
    const host = { host_id: hostId, name: "desk", host_static: fromHex(hostPublic) };
    const mailbox = new Mailbox({ host, relay: { link }, identity: { staticKey } });
    try {
      out.push((await mailbox.read()).snapshot.host_name);
    } catch (err) {
      out.push(`${err.name}: ${err.message}`);
    }
  }
  return out;
}
"""


def test_the_page_shows_a_snapshot_only_from_the_host_key_it_paired_with(page: Any, static_relay: int) -> None:
    page.goto(f"http://127.0.0.1:{static_relay}/healthz")
    device, host, impostor = (X25519PrivateKey.generate() for _ in range(3))
    host_id = "abcdefghijklmnopqrst"

    def snapshot(sender: X25519PrivateKey, of: str, ctx: bytes | None = None) -> str:
        body = json.dumps({"host_id": of, "host_name": "desk", "taken_at": 1.0, "head": 1, "sessions": [],
                           "events": {}})
        return seal(sender, raw_public(device), ctx or context(SNAPSHOT, host_id), body.encode()).hex()

    out = page.evaluate(READ, [raw_private(device).hex(), raw_public(host).hex(), host_id, [
        snapshot(host, host_id),
        snapshot(impostor, host_id),  # the relay (or anyone) sealing with another key
        snapshot(host, "another-host-id"),  # the host's snapshot of another of its ids
        snapshot(host, host_id, context(ITEM, host_id)),  # sealed for the other direction
    ]])
    assert out[0] == "desk"
    assert out[1] == out[2] == "MailboxError: the snapshot at the relay was not sealed by desk's key"
    assert out[3] == "MailboxError: the relay holds a snapshot for this browser that does not open"


def banner(page: Any) -> str:
    return str(page.text_content("#away-banner") or "")


def host_requests(d: BuiltinDeployment) -> list[str]:
    log = d.host_home / "fake_openai-requests.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    return [json.dumps(json.loads(line)["body"]) for line in lines if line.strip()]


CURSOR = """async (hostId) => (await (await import("/store.js")).store.getCursor(hostId))?.cursor"""


def steady(read: Any) -> Any:
    """``read()`` when it says the same twice, half a second apart (else None)."""
    first = read()
    time.sleep(0.5)
    return first if first and read() == first else None


def away_from_the_snapshot(page: Any, session: str) -> None:
    """The page, reloaded while the host is away, shows what it left at the relay."""
    page.reload()
    page.wait_for_selector('#away-banner[data-state="shown"]', timeout=TIMEOUT)
    said = banner(page)
    assert said.startswith(f"{HOST} is offline · showing what it reported ") and said.endswith(" ago"), said
    assert page.get_attribute("#conn-state", "data-state") == "offline"
    assert page.url.endswith(f"/session/{session}")


def test_a_session_of_a_host_that_is_away_is_shown_and_takes_a_prompt_queued_through_a_relay_restart(
    page: Any, cli_home: Path,
) -> None:
    with builtin_host([{"text": FIRST_REPLY}, {"text": SECOND_REPLY}], HOST) as d:
        relay_home = Path(d.relay.args[-1])
        session = start_on_page(page, d, cli_home, FIRST, agent="builtin")
        page.locator(".card.agent", has_text=FIRST_REPLY).wait_for(timeout=AGENT_TIMEOUT)
        until(lambda: status(page) == "idle", timeout=AGENT_TIMEOUT / 1000, what="the first turn to end")
        host_id = page.evaluate("window.tether.hosts[0].host_id")
        # Where the page's persisted cursor stands once the turn's events are all in.
        cursor = until(lambda: steady(lambda: page.evaluate(CURSOR, host_id)), what="a steady cursor")

        d.host.stop()  # SIGTERM: as it stops, the host leaves each device its last snapshot
        away_from_the_snapshot(page, session)
        # Its latest events, drawn as live ones: the prompt and the agent's answer.
        page.locator(".card.agent", has_text=FIRST_REPLY).wait_for(timeout=TIMEOUT)
        assert page.locator(".card.user", has_text=FIRST).count() == 1
        assert status(page) == "idle"
        # The host's sessions, from the snapshot too.
        page.goto(f"{d.origin}/#/host/{host_id}")
        page.wait_for_selector(f'a.row.session[data-session="{session}"]', timeout=TIMEOUT)
        assert banner(page).startswith(f"{HOST} is offline · showing what it reported ")
        page.click(f'a.row.session[data-session="{session}"]')
        page.locator(".card.agent", has_text=FIRST_REPLY).wait_for(timeout=TIMEOUT)

        # The composer queues: it says so, and the prompt says where it waits.
        assert page.text_content("#send") == "Queue"
        assert page.text_content("#composer-note") == f"Queue — sent when {HOST} is back"
        # Too large for one sealed message: refused with the relay's sentence, never lost silently.
        page.fill("#composer", "x" * 70_000)
        page.click("#send")
        refused = page.locator('.card.pending[data-state="failed"]')
        refused.wait_for(timeout=TIMEOUT)
        assert "too large for the relay's mailbox; shorten it" in refused.text_content()

        page.fill("#composer", FOLLOW_UP)
        page.click("#send")
        held = page.locator('.card.pending[data-state="held"]', has_text=FOLLOW_UP)
        held.wait_for(timeout=TIMEOUT)
        assert f"queued at the relay · will be sent when {HOST} is back" in held.text_content()
        # Still waiting after a reload (the page keeps what it queued), and never sent twice.
        away_from_the_snapshot(page, session)
        page.locator('.card.pending[data-state="held"]', has_text=FOLLOW_UP).wait_for(timeout=TIMEOUT)

        # What the host left at the relay moved no cursor: the page still resumes from where the
        # host last spoke to it, not from what it merely read.
        assert page.evaluate(CURSOR, host_id) == cursor
        # The relay restarts while the host is away: the prompt waits in its mailbox on disk.
        d.relay.stop()
        relay: Proc | None = None
        host: Proc | None = None
        try:
            relay, _ = start_web_relay(d.relay_port, relay_home)
            page.wait_for_selector('#away-banner[data-state="shown"]', timeout=TIMEOUT)
            host = d.host.again()
            host.wait_for(r"connected to relay")
            # Back: the live state replaces the snapshot, the queued prompt runs and is answered.
            page.locator(".card.agent", has_text=SECOND_REPLY).wait_for(timeout=AGENT_TIMEOUT)
            page.wait_for_selector('#conn-state[data-state="connected"]', timeout=TIMEOUT)
            assert not page.locator("#away-banner").count()
            delivered = page.locator(".card.user", has_text=FOLLOW_UP)
            assert delivered.count() == 1
            assert page.locator(".card.agent", has_text=FIRST_REPLY).count() == 1  # the live one, alone
            assert delivered.locator('.prompt-state[data-state="applied"]').count() == 1
            assert not page.locator('.card.pending[data-state="held"]').count()
            until(lambda: status(page) == "idle", timeout=AGENT_TIMEOUT / 1000, what="the queued turn to end")

            events = cli_events(cli_home, session)
            assert [e["data"]["input"] for e in events if e["type"] == "turn.started"] == [FIRST, FOLLOW_UP]
            assert not [e for e in events if e["type"] == "mailbox.refused"]
            (asked,) = [r for r in host_requests(d) if FOLLOW_UP in r]
            assert FIRST in asked and FIRST_REPLY in asked  # the same conversation
            # Nothing of the snapshot reached the cursor: a reload replays nothing twice.
            page.reload()
            page.locator(".card.agent", has_text=SECOND_REPLY).wait_for(timeout=TIMEOUT)
            assert page.locator(".card.user", has_text=FOLLOW_UP).count() == 1
            assert page.locator(".card.agent", has_text=FIRST_REPLY).count() == 1
            assert not page.errors  # type: ignore[attr-defined]
        finally:
            if host is not None:
                host.stop()
            if relay is not None:
                relay.stop()


# Fills this device's share of the relay's mailbox (64 items) with prompts for no session (the
# host refuses them quietly when it is back): the next one is refused by the relay itself.
FILL = """
async (hostId) => {
  const { newCid } = await import("/connection.js");
  const mailbox = window.tether.models.get(hostId).mailbox;
  for (let n = 0; n < 100; n++) {
    try {
      await mailbox.queue("sessions.send", { id: "s_none", text: "filler", cid: newCid() });
    } catch (err) {
      return [n, err.name];
    }
  }
  return [100, null];
}
"""

REFUSAL = "it was no longer waiting for an answer when the host came back (withdrawn, or the turn ended)"


def test_an_approval_queued_while_the_host_is_away_is_refused_when_it_comes_back_and_the_page_says_why(
    page: Any, cli_home: Path,
) -> None:
    script = [write_file_call("out.txt", "yes\n", "c1"), {"text": "Written."}, {"text": "Again."}]
    with builtin_host(script, HOST) as d:
        session = start_on_page(page, d, cli_home, "write out.txt", agent="builtin")
        page.wait_for_selector('.card.approval[data-resolved=""]', timeout=AGENT_TIMEOUT)
        host_id = page.evaluate("window.tether.hosts[0].host_id")

        d.host.stop()  # its pending approval is cleared when it starts again
        away_from_the_snapshot(page, session)
        # The approval as the host left it, still waiting: answered here, it is queued at the relay.
        card = page.locator('.card.approval[data-resolved=""]')
        card.wait_for(timeout=TIMEOUT)
        assert "out.txt" in card.text_content()
        card.locator("button.approve").click()
        note = page.locator('.queued-answer[data-state="held"]')
        note.wait_for(timeout=TIMEOUT)
        assert note.text_content() == f"Approved: queued at the relay · will be sent when {HOST} is back"
        assert card.locator("button.approve").is_disabled()

        # The relay's own refusal (this device's share is used up) shows with its sentence.
        assert page.evaluate(FILL, host_id) == [63, "MailboxRefused"]  # and the approval: 64
        page.fill("#composer", "one more")
        page.click("#send")
        full = page.locator('.card.pending[data-state="failed"]', has_text="one more")
        full.wait_for(timeout=TIMEOUT)
        assert "items waiting for the host, its limit here; wait until the host is back" in full.text_content()

        host = d.host.again()
        try:
            host.wait_for(r"connected to relay")
            page.wait_for_selector('#conn-state[data-state="connected"]', timeout=TIMEOUT)
            refused = page.locator('.queued-answer[data-state="refused"]')
            refused.wait_for(timeout=AGENT_TIMEOUT)
            assert REFUSAL in refused.text_content()
            notice = page.locator(".card.notice", has_text=REFUSAL)
            notice.wait_for(timeout=TIMEOUT)
            assert notice.text_content().startswith(
                "⚠ phone-under-test's approval, queued at the relay while the host was away, was not applied: ")
            assert not (d.workspace / "out.txt").exists()
            (event,) = [e for e in cli_events(cli_home, session) if e["type"] == "mailbox.refused"]
            assert event["data"]["method"] == "sessions.approve" and event["data"]["by"]["name"] == "phone-under-test"
            # Said on the session for good: a reloaded page shows it from the log.
            page.reload()
            page.locator(".card.notice", has_text=REFUSAL).wait_for(timeout=TIMEOUT)
            assert not page.errors  # type: ignore[attr-defined]
        finally:
            host.stop()


UPGRADE = """
async () => {
  // The database as the page before the mailbox left it (version 1: keys, hosts, cursors).
  await new Promise((resolve, reject) => {
    const req = indexedDB.open("tether", 1);
    req.onupgradeneeded = () => {
      const db = req.result;
      db.createObjectStore("keys");
      db.createObjectStore("hosts", { keyPath: "host_id" });
      db.createObjectStore("cursors", { keyPath: "host_id" });
    };
    req.onsuccess = () => {
      const db = req.result;
      const tx = db.transaction(["hosts", "cursors"], "readwrite");
      tx.objectStore("hosts").put({ host_id: "h1", name: "desk" });
      tx.objectStore("cursors").put({ host_id: "h1", cursor: 42, sessions: [] });
      tx.oncomplete = () => (db.close(), resolve());
    };
    req.onerror = () => reject(req.error);
  });
  const { store } = await import("/store.js");
  const out = { hosts: await store.listHosts(), cursor: (await store.getCursor("h1")).cursor };
  const first = await store.takeMailboxNumber("h1");
  const second = await store.takeMailboxNumber("h1");
  out.numbers = [second > first, first >= Date.now() - 60000];
  await store.putOutbox({ cid: "c1", host_id: "h1", session: "s_1", queued_at: 1 });
  out.outbox = (await store.listOutbox("h1")).map((e) => e.cid);
  await store.deleteHost("h1");
  out.forgotten = (await store.listOutbox("h1")).length;
  return out;
}
"""


def test_the_browser_storage_upgrade_keeps_paired_hosts_and_cursors(page: Any, static_relay: int) -> None:
    page.goto(f"http://127.0.0.1:{static_relay}/healthz")
    out = page.evaluate(UPGRADE)
    assert out["hosts"] == [{"host_id": "h1", "name": "desk"}] and out["cursor"] == 42
    assert out["numbers"] == [True, True]  # item numbers only grow, and are at least the time in ms
    assert out["outbox"] == ["c1"] and out["forgotten"] == 0
