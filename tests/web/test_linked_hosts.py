"""Hosts linked to a paired host, in the web client: real relay and host processes, Chromium.

What `tether ssh` does is done here by hand, without SSH: a second host daemon ("box", its own home,
the same relay) gets a device bundle signed by the desktop host (`remote bundle` on stdin, as over
SSH) and the desktop is told of it with `hosts.link` on its unix socket (as `announce` does). The
page, paired with the desktop only, learns box from the desktop's `host.linked` event while open
(and from `hosts.linked` when it connects), lists it "via desktop", and drives a terminal there with
the keys it paired with the desktop. Revoked on the desktop and handed a bundle without it, box
refuses the page, and the page says so. Unlinked (`hosts.unlink`, as `tether ssh forget` does), box
leaves the page: at once while it is open, from `hosts.linked` when it connects again.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.procs import TETHER, Proc, remove, short_home, start_host, tether, tether_json
from tests.support.deployment import Deployment
from tether.client.connection import connect_local
from tether.crypto.encoding import b64u_encode
from tether.crypto.keys import Identity
from tether.home import HostPaths
from tether.sshremote.deploy import desktop_host, make_desktop_bundle

from .conftest import REPO, phone_page, start_web_relay
from .pages import TIMEOUT, device_id, listed, pair_page, type_line, until, wait_terminal

pytestmark = [pytest.mark.browser, pytest.mark.slow]

T = TypeVar("T")


def run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to the end from a synchronous test (Playwright's sync API holds this
    thread's event loop, so it runs in a thread of its own)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result(timeout=60)


@dataclass
class Linked(Deployment):
    box: Proc | None = None
    box_home: Path | None = None
    box_workspace: Path | None = None

    @property
    def desktop_id(self) -> str:
        return Identity.load(HostPaths(self.host_home).keys).id

    @property
    def box_identity(self) -> Identity:
        assert self.box_home is not None
        return Identity.load(HostPaths(self.box_home).keys)

    def hand_box_the_devices(self) -> None:
        """What `tether ssh` does over SSH: a bundle of the desktop's live devices, signed by it,
        installed with the remote side's own command; box's daemon picks it up within a second."""
        assert self.box is not None and self.box_home is not None

        async def bundle() -> bytes:
            return await make_desktop_bundle(await desktop_host(self.host_home), self.box_identity.id)

        data = run_async(bundle)
        before = self.box.log.count("inheriting ")
        command = [TETHER[0], "-m", "tether.sshremote.remote", "bundle", "--home", str(self.box_home)]
        result = subprocess.run(command, input=data, capture_output=True, timeout=60, cwd=REPO)
        assert result.returncode == 0 and b"tether-remote: " in result.stdout, result
        box = self.box
        until(lambda: box.log.count("inheriting ") > before, what="box to take the new bundle")

    def link_box(self, name: str = "box") -> None:
        """What `tether ssh` does last (sshremote/deploy.py announce): tell the desktop host, on its
        unix socket, with the relay URL the desktop itself dials."""
        identity = self.box_identity

        async def announce() -> None:
            desktop = await desktop_host(self.host_home)
            assert desktop.relay_url
            conn = await connect_local(self.host_home)
            try:
                await conn.call("hosts.link", {
                    "host_id": identity.id, "name": name, "static_public": b64u_encode(identity.static_public),
                    "relay_url": desktop.relay_url,
                })
            finally:
                await conn.close()

        run_async(announce)

    def unlink_box(self) -> int:
        """What `tether ssh forget box` does last: `hosts.unlink` on the desktop's unix socket. The
        seq of its `host.unlinked` event."""
        identity = self.box_identity

        async def unlink() -> int:
            conn = await connect_local(self.host_home)
            try:
                return int((await conn.call("hosts.unlink", {"host_id": identity.id}))["seq"])
            finally:
                await conn.close()

        return run_async(unlink)


@pytest.fixture
def linked() -> Iterator[Linked]:
    desktop_home, desktop_ws = short_home("th"), short_home("tw")
    box_home, box_ws = short_home("tb"), short_home("tw")
    relay, port = start_web_relay()
    procs = [relay]
    try:
        desktop = start_host(desktop_home, f"ws://127.0.0.1:{port}", desktop_ws, name="desktop")
        procs.append(desktop)
        box = start_host(box_home, f"ws://127.0.0.1:{port}", box_ws, name="box")
        procs.append(box)
        yield Linked(relay, port, desktop, desktop_home, desktop_ws, box, box_home, box_ws)
    finally:
        for proc in reversed(procs):
            proc.stop()
        remove(desktop_home, desktop_ws, box_home, box_ws)


def stored_hosts(page: Any) -> dict[str, Any]:
    return {
        h["host_id"]: h
        for h in page.evaluate(
            """async () => {
              const { store } = await import("/store.js");
              return (await store.listHosts()).map((h) => ({ ...h, host_static: Array.from(h.host_static) }));
            }"""
        )
    }


def conn_state(page: Any, host_id: str) -> str | None:
    return page.evaluate(f"window.tether.conns.get({host_id!r})?.state ?? null")


def attempts(page: Any, host_id: str) -> int:
    return int(page.evaluate(f"window.tether.conns.get({host_id!r})?.attempts ?? 0"))


def answer_taken(page: Any, host_id: str) -> None:
    """Once the page is connected to `host_id`: its `hosts.linked` answer on that connection has
    been taken (asked before this call, so answered before it, then learned in turn)."""
    until(lambda: conn_state(page, host_id) == "connected", what="the page's channel to the desktop")
    page.evaluate(
        """async (hostId) => {
          await window.tether.conns.get(hostId).call("hosts.linked");
          await window.tether._learning;
        }""",
        host_id,
    )


def event_taken(page: Any, host_id: str, seq: int) -> None:
    """The page's host-wide subscription to `host_id` has event `seq`, and has acted on it."""
    until(lambda: page.evaluate(f"window.tether.models.get({host_id!r})?.sub?.cursor ?? 0") >= seq,
          what=f"event {seq} to reach the page")
    page.evaluate("async () => { await window.tether._learning; }")


def test_a_linked_host_is_learned_live_and_used_like_a_paired_one(browser: Any, page: Any, linked: Linked) -> None:
    d = linked
    desk, box_id = d.desktop_id, d.box_identity.id
    pair_page(page, d)
    page.wait_for_selector(f'a.host[data-host="{desk}"][data-online="1"]', timeout=TIMEOUT)
    # The page keeps the host it paired with connected, even on the hosts screen.
    until(lambda: conn_state(page, desk) == "connected", what="the page's channel to the desktop")
    dialed = attempts(page, desk)
    row = f'a.host[data-host="{box_id}"]'
    assert page.locator(row).count() == 0

    # `tether ssh` by hand: box gets the desktop's devices, then the desktop announces it.
    d.hand_box_the_devices()
    d.link_box()

    # The open page learns it from the host.linked event, over the channel it already had.
    page.wait_for_selector(row, timeout=TIMEOUT)
    assert attempts(page, desk) == dialed
    assert page.get_attribute(row, "data-via") == desk
    assert page.text_content(f"{row} .name") == "box"
    assert page.text_content(f"{row} .via") == "via desktop"
    page.wait_for_selector(f'{row}[data-online="1"]', timeout=TIMEOUT)
    assert page.text_content(f"{row} .presence") == "online"

    # Saved like a pairing, with the device the desktop pairing made: nothing was paired with box.
    hosts = stored_hosts(page)
    box, desktop = hosts[box_id], hosts[desk]
    assert bytes(box["host_static"]) == d.box_identity.static_public
    assert box["device_id"] == desktop["device_id"] == device_id(d.host_home, "phone-under-test")
    assert box["relay_url"] == desktop["relay_url"] == d.origin
    assert box["scopes"] == desktop["scopes"]
    assert box["linked"]["via"] == desk and box["linked"]["via_name"] == "desktop"
    assert "linked" not in desktop
    assert tether_json(d.box_home, "devices", "list", "--json") in ([], {"devices": []})

    # Open box and drive a terminal there, as on a host paired directly.
    page.click(row)
    page.wait_for_selector('#conn-state[data-state="connected"]', timeout=TIMEOUT)
    assert "Linked via desktop" in page.text_content("#linked-via")
    page.click("#new-session")
    page.wait_for_selector("#new-form", timeout=TIMEOUT)
    page.fill("#new-command", "bash --norc -i")
    page.click("#start-session")
    type_line(page, "echo linked-$((40+2))")
    wait_terminal(page, "linked-42")
    session = page.url.rsplit("/", 1)[1]

    def ids(home: Path) -> set[str]:
        return {s["id"] for s in listed(home, "sessions")}

    assert session in ids(d.box_home) and session not in ids(d.host_home)

    # Reloaded: box is still there (IndexedDB), still via the desktop.
    page.goto(d.origin + "/")
    page.wait_for_selector(f'{row}[data-online="1"]', timeout=TIMEOUT)
    assert page.text_content(f"{row} .via") == "via desktop"

    # Forgotten (Settings), box stays away whatever `hosts.linked` says, until the desktop
    # announces it anew (another `tether ssh`): then it is back at once.
    page.goto(f"{d.origin}/#/host/{box_id}/settings")
    assert page.text_content("#settings-via") == "desktop"
    page.click("#forget-host")
    page.click("#confirm-forget")
    page.wait_for_selector(f'a.host[data-host="{desk}"]', timeout=TIMEOUT)
    assert page.locator(row).count() == 0
    until(lambda: conn_state(page, desk) == "connected", what="the page's channel to the desktop")
    page.evaluate(
        f"""async () => {{
          const conn = window.tether.conns.get({desk!r});
          await window.tether.learnLinked({desk!r}, await conn.call("hosts.linked"));
        }}"""
    )
    assert page.locator(row).count() == 0 and box_id not in stored_hosts(page)
    d.link_box()
    page.wait_for_selector(f'{row}[data-via="{desk}"]', timeout=TIMEOUT)
    # A newer announcement of a learned host (renamed) updates it in place.
    d.link_box(name="build-box")
    page.locator(f"{row} .name", has_text="build-box").wait_for(timeout=TIMEOUT)
    assert stored_hosts(page)[box_id]["name"] == "build-box"

    # Another browser pairs with the desktop after the link: it learns box from `hosts.linked` as
    # it connects. Paired with box directly afterwards, box is its own pairing, and what the
    # desktop says later never turns it back into a linked entry.
    with phone_page(browser, "second browser") as other:
        pair_page(other, d, name="second-browser")
        other.wait_for_selector(row, timeout=TIMEOUT)
        assert other.text_content(f"{row} .via") == "via desktop"
        box_deployment = Deployment(d.relay, d.relay_port, d.box, d.box_home, d.box_workspace)
        pair_page(other, box_deployment, name="second-browser")
        other.wait_for_selector(f"{row}:not([data-via])", timeout=TIMEOUT)
        other.goto(d.origin + "/")
        other.wait_for_selector(f'{row}[data-online="1"]', timeout=TIMEOUT)
        until(lambda: conn_state(other, desk) == "connected", what="the second browser's channel to the desktop")
        told = other.evaluate(
            f"""async () => {{
              const conn = window.tether.conns.get({desk!r});
              const linked = await conn.call("hosts.linked");
              await window.tether.learnLinked({desk!r}, linked);
              return linked.map((h) => h.host_id);
            }}"""
        )
        assert told == [box_id]
        assert "linked" not in stored_hosts(other)[box_id]
        assert other.locator(f"{row} .via").count() == 0
    assert not page.errors  # type: ignore[attr-defined]


def test_a_linked_host_that_drops_the_browser_says_it_refuses_it(page: Any, linked: Linked) -> None:
    d = linked
    desk, box_id = d.desktop_id, d.box_identity.id
    pair_page(page, d)
    d.hand_box_the_devices()
    d.link_box()
    row = f'a.host[data-host="{box_id}"]'
    page.wait_for_selector(f'{row}[data-online="1"]', timeout=TIMEOUT)
    page.click(row)
    page.wait_for_selector('#conn-state[data-state="connected"]', timeout=TIMEOUT)

    # Revoked on the desktop: the desktop closes the page's channel at once; box, still holding the
    # old bundle, has not heard yet.
    tether(d.host_home, "devices", "revoke", device_id(d.host_home, "phone-under-test"))
    until(lambda: stored_hosts(page)[desk].get("revoked"), what="the desktop to refuse the page")
    assert conn_state(page, box_id) == "connected"
    assert page.locator("#revoked").count() == 0

    # The desktop's new bundle reaches box (`tether ssh refresh`): box closes the channel, and the
    # page says why and what to do.
    d.hand_box_the_devices()
    page.wait_for_selector('#revoked[data-linked="1"]', timeout=TIMEOUT)
    assert page.get_attribute("#conn-state", "data-state") == "revoked"
    panel = page.text_content("#revoked")
    assert "refused" in panel and "box" in panel and "desktop" in panel and "tether ssh refresh box" in panel
    assert "revoked" in page.text_content("#revoked-detail")  # the refusal's own words
    assert stored_hosts(page)[box_id]["revoked"]

    # Try again: box still refuses (the relay no longer admits it there); nothing else changes.
    before = attempts(page, box_id)
    page.click("#retry-host")
    until(lambda: attempts(page, box_id) > before and conn_state(page, box_id) == "revoked",
          what="the retry to be refused")
    page.wait_for_selector('#revoked[data-linked="1"]', timeout=TIMEOUT)
    page.evaluate("window.tether.wake()")
    time.sleep(2)
    assert attempts(page, box_id) == before + 1

    # The hosts screen, after a reload: both refused, known without dialing either.
    page.goto(d.origin + "/")
    page.wait_for_selector(f'{row}[data-state="revoked"]', timeout=TIMEOUT)
    page.wait_for_selector(f'a.host[data-host="{desk}"][data-state="revoked"]', timeout=TIMEOUT)
    assert "refused" in page.text_content(f"{row} .state") and page.text_content(f"{row} .presence") == "refused"
    assert page.text_content(f"{row} .via") == "via desktop"
    page.click(row)
    page.wait_for_selector('#revoked[data-linked="1"]', timeout=TIMEOUT)
    assert attempts(page, box_id) == 0 and attempts(page, desk) == 0

    # All that is left to do: forget it.
    page.click("#forget-host")
    page.wait_for_selector(f'a.host[data-host="{desk}"]', timeout=TIMEOUT)
    assert page.locator(row).count() == 0
    assert box_id not in stored_hosts(page)
    assert not page.errors  # type: ignore[attr-defined]


def test_a_host_unlinked_by_its_desktop_leaves_the_open_page_until_linked_again(page: Any, linked: Linked) -> None:
    d = linked
    desk, box_id = d.desktop_id, d.box_identity.id
    pair_page(page, d)
    d.hand_box_the_devices()
    d.link_box()
    row = f'a.host[data-host="{box_id}"]'
    page.wait_for_selector(f'{row}[data-online="1"]', timeout=TIMEOUT)
    until(lambda: conn_state(page, desk) == "connected", what="the page's channel to the desktop")
    dialed = attempts(page, desk)
    # Box's screen is open, over a channel of its own.
    page.click(row)
    page.wait_for_selector('#conn-state[data-state="connected"]', timeout=TIMEOUT)
    page.evaluate(f"window.boxConn = window.tether.conns.get({box_id!r})")

    # `tether ssh forget box`, by hand: the desktop unlinks it. The page hears `host.unlinked` over
    # the channel it already had, closes box's, leaves its screen and says why.
    d.unlink_box()
    page.wait_for_selector("#hosts-notice", timeout=TIMEOUT)
    assert page.text_content("#hosts-notice") == "box was removed by desktop"
    assert page.url == d.origin + "/#/"
    assert page.locator(row).count() == 0
    assert page.locator(f'a.host[data-host="{desk}"]').count() == 1
    assert attempts(page, desk) == dialed
    assert page.evaluate(f"window.tether.conns.has({box_id!r}) || window.tether.models.has({box_id!r})") is False
    until(lambda: page.evaluate("window.boxConn._stopped && window.boxConn.peer === null"),
          what="the channel to box to close")
    hosts = stored_hosts(page)
    assert box_id not in hosts and desk in hosts

    # Reloaded: box stays away (the desktop's `hosts.linked` no longer lists it); nothing to say.
    page.goto(d.origin + "/")
    page.wait_for_selector(f'a.host[data-host="{desk}"][data-online="1"]', timeout=TIMEOUT)
    answer_taken(page, desk)
    assert page.locator(row).count() == 0 and box_id not in stored_hosts(page)
    assert page.locator("#hosts-notice").count() == 0

    # Linked again (another `tether ssh`): back at once, via the desktop, usable.
    d.link_box()
    page.wait_for_selector(f'{row}[data-via="{desk}"][data-online="1"]', timeout=TIMEOUT)
    page.click(row)
    page.wait_for_selector('#conn-state[data-state="connected"]', timeout=TIMEOUT)

    # Forgotten by the person, then unlinked and linked again: a new announcement brings it back.
    page.goto(f"{d.origin}/#/host/{box_id}/settings")
    page.click("#forget-host")
    page.click("#confirm-forget")
    page.wait_for_selector(f'a.host[data-host="{desk}"]', timeout=TIMEOUT)
    assert page.locator(row).count() == 0
    unlinked = d.unlink_box()
    event_taken(page, desk, unlinked)
    assert page.locator(row).count() == 0 and page.locator("#hosts-notice").count() == 0
    page.evaluate("window.askedBefore = window.tether._tick")
    d.link_box()
    page.wait_for_selector(f'{row}[data-via="{desk}"]', timeout=TIMEOUT)
    assert stored_hosts(page)[box_id]["linked"]["via"] == desk

    # Words older than the announcement it took leave box alone: that unlink replayed (a page
    # resuming from an old cursor), or a `hosts.linked` answer asked before the announcement.
    page.evaluate(
        """async ([desk, box, seq]) => {
          await window.tether.followLinked(desk, [{ type: "host.unlinked", seq, ts: 0, data: { host_id: box } }]);
          await window.tether.learnLinked(desk, [], { complete: true, asked: window.askedBefore });
        }""",
        [desk, box_id, unlinked],
    )
    assert box_id in stored_hosts(page) and page.locator(row).count() == 1
    assert not page.errors  # type: ignore[attr-defined]


def test_a_host_unlinked_while_the_page_was_closed_goes_when_it_connects(
    browser: Any, page: Any, linked: Linked
) -> None:
    d = linked
    desk, box_id = d.desktop_id, d.box_identity.id
    row = f'a.host[data-host="{box_id}"]'
    pair_page(page, d)
    d.hand_box_the_devices()
    d.link_box()
    page.wait_for_selector(f'{row}[data-via="{desk}"]', timeout=TIMEOUT)

    with phone_page(browser, "second browser") as other:
        # Another browser learned box from the desktop, then paired with it directly: its own
        # pairing, which no unlink touches (live or in an answer).
        pair_page(other, d, name="second-browser")
        other.wait_for_selector(f'{row}[data-via="{desk}"]', timeout=TIMEOUT)
        box_deployment = Deployment(d.relay, d.relay_port, d.box, d.box_home, d.box_workspace)
        pair_page(other, box_deployment, name="second-browser")
        other.wait_for_selector(f"{row}:not([data-via])", timeout=TIMEOUT)
        other.goto(d.origin + "/")
        other.wait_for_selector(f'{row}[data-online="1"]', timeout=TIMEOUT)
        until(lambda: conn_state(other, desk) == "connected", what="the second browser's channel to the desktop")

        # The first page closes (for a same-origin page without the app, so its IndexedDB can be
        # reached), and the desktop unlinks box meanwhile.
        page.goto(d.origin + "/icon.svg")
        seq = d.unlink_box()

        event_taken(other, desk, seq)
        other_box = stored_hosts(other)[box_id]
        assert "linked" not in other_box
        assert other.locator(f"{row}:not([data-via])").count() == 1
        assert other.locator("#hosts-notice").count() == 0
        other.goto(d.origin + "/")
        answer_taken(other, desk)
        assert "linked" not in stored_hosts(other)[box_id]
        assert other.locator(row).count() == 1
        assert not other.errors

    # Without its cursor the page follows the desktop from its head, so no `host.unlinked` is
    # replayed to it: only the `hosts.linked` answer can tell it box is gone.
    page.evaluate(
        """(hostId) => new Promise((resolve, reject) => {
          const open = indexedDB.open("tether");
          open.onerror = () => reject(open.error);
          open.onsuccess = () => {
            const tx = open.result.transaction("cursors", "readwrite");
            tx.objectStore("cursors").delete(hostId);
            tx.oncomplete = () => (open.result.close(), resolve());
            tx.onerror = () => reject(tx.error);
          };
        })""",
        desk,
    )
    page.goto(d.origin + "/")
    page.wait_for_selector("#hosts-notice", timeout=TIMEOUT)
    assert page.text_content("#hosts-notice") == "box was removed by desktop"
    assert page.locator(row).count() == 0
    assert box_id not in stored_hosts(page)
    answer_taken(page, desk)
    assert page.locator(row).count() == 0
    assert not page.errors  # type: ignore[attr-defined]
