"""Hosts linked to a paired host, in the web client: real relay and host processes, Chromium.

What `tether ssh` does is done here by hand, without SSH: a second host daemon ("box", its own home,
the same relay) gets a device bundle signed by the desktop host (`remote bundle` on stdin, as over
SSH) and the desktop is told of it with `hosts.link` on its unix socket (as `announce` does). The
page, paired with the desktop only, learns box from the desktop's `host.linked` event while open
(and from `hosts.linked` when it connects), lists it "via desktop", and drives a terminal there with
the keys it paired with the desktop. Revoked on the desktop and handed a bundle without it, box
refuses the page, and the page says so.
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
from tether.client.connection import connect_local
from tether.crypto.encoding import b64u_encode
from tether.crypto.keys import Identity
from tether.host.daemon import HostPaths
from tether.sshremote.deploy import desktop_host, make_desktop_bundle

from .conftest import PHONE, REPO, WebDeployment, start_web_relay
from .pages import TIMEOUT, device_id, pair_page, type_line, until, wait_terminal

pytestmark = [pytest.mark.browser, pytest.mark.slow]

T = TypeVar("T")


def run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to the end from a synchronous test (Playwright's sync API holds this
    thread's event loop, so it runs in a thread of its own)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result(timeout=60)


@dataclass
class Linked(WebDeployment):
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
        listed = tether_json(home, "sessions", "list", "--json")
        return {s["id"] for s in (listed if isinstance(listed, list) else listed["sessions"])}

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
    context = browser.new_context(**PHONE)
    try:
        other = context.new_page()
        pair_page(other, d, name="second-browser")
        other.wait_for_selector(row, timeout=TIMEOUT)
        assert other.text_content(f"{row} .via") == "via desktop"
        box_deployment = WebDeployment(d.relay, d.relay_port, d.box, d.box_home, d.box_workspace)
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
    finally:
        context.close()
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
