"""The web client end to end: real relay and host processes, Chromium at a phone's size.

Pair from the link `tether pair` prints, see the host online, reload (still paired, the secret
gone from the URL and the history), then drive a pty session from the page.
"""

from __future__ import annotations

import os
import re
import signal
import time
from typing import Any

import pytest

from tests.procs import tether, tether_json
from tests.support.deployment import Deployment

from .conftest import start_web_relay
from .pages import (
    TIMEOUT,
    device_id,
    listed,
    open_new_terminal,
    pair_page,
    terminal_text,
    type_line,
    until,
    wait_terminal,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _pair(page: Any, deployment: Deployment) -> str:
    return pair_page(page, deployment)


def test_pair_see_online_reload_and_drive_a_terminal(page: Any, web_deployment: Deployment) -> None:
    d = web_deployment
    secret = _pair(page, d)
    host_id = tether_json(d.host_home, "devices", "list", "--json")
    devices = host_id if isinstance(host_id, list) else host_id.get("devices", [])
    assert any(dev["name"] == "phone-under-test" for dev in devices), devices

    row = 'a.host[data-online="1"]'
    page.wait_for_selector(row, timeout=TIMEOUT)
    assert "test-host" in page.text_content(row)
    assert page.text_content(f"{row} .presence") == "online"

    # Reload: still paired (keys and host in IndexedDB), no secret anywhere in reach.
    page.reload()
    page.wait_for_selector(row, timeout=TIMEOUT)
    assert secret not in page.url
    assert page.evaluate("history.length") <= 3
    for _ in range(page.evaluate("history.length")):
        assert secret not in page.url and "#pair" not in page.url
        if page.go_back(timeout=5000) is None:
            break
    page.goto(d.origin + "/")
    page.wait_for_selector(row, timeout=TIMEOUT)
    stored = page.evaluate(
        """async () => {
          const { store } = await import("/store.js");
          const hosts = await store.listHosts();
          const keys = await store.getKeys();
          return { hosts: hosts.map((h) => ({ ...h, host_static: h.host_static.length })),
                   signingExtractable: keys.signing.extractable, staticExtractable: keys.static.extractable };
        }"""
    )
    assert stored["signingExtractable"] is False and stored["staticExtractable"] is False
    (host,) = stored["hosts"]
    assert host["name"] == "test-host" and host["relay_url"] == d.origin and host["host_static"] == 32
    assert set(host["scopes"]) >= {"read", "prompt"}

    # A terminal started from the CLI shows up in the page.
    started = tether_json(d.host_home, "sessions", "start", "--json", "--", "bash", "--norc", "-i")
    session_id = started["id"] if isinstance(started, dict) else str(started)
    page.click(row)
    page.wait_for_selector(f'a.session[data-session="{session_id}"]', timeout=TIMEOUT)
    page.wait_for_selector('#conn-state[data-state="connected"]', timeout=TIMEOUT)
    page.click(f'a.session[data-session="{session_id}"]')
    type_line(page, "echo tether-$((6*7))-ok")
    wait_terminal(page, "tether-42-ok")
    # The pty follows the phone's screen: it was resized to what the terminal fits.
    size = page.evaluate("document.getElementById('terminal').tetherSize()")
    assert 30 <= size["cols"] < 80, size
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = next(s for s in listed(d.host_home, "sessions") if s["id"] == session_id)
        if (got["cols"], got["rows"]) == (size["cols"], size["rows"]):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the pty was not resized to {size}: {got}")
    type_line(page, "stty size")
    wait_terminal(page, f"{size['rows']} {size['cols']}")
    # Keys a phone keyboard lacks, as buttons: Ctrl-C interrupts a running command. (Once it
    # runs: a Ctrl-C that comes while bash still reads the line is a character, not a signal.)
    type_line(page, "echo sleeping-$((2*3)); sleep 30; echo not-$((1))-interrupted")
    wait_terminal(page, "sleeping-6")
    page.click('button.key[data-key="Ctrl-C"]')
    type_line(page, "echo after-$((3+4))")
    wait_terminal(page, "after-7")
    assert "not-1-interrupted" not in terminal_text(page)
    page.screenshot(path="/tmp/tether-web-terminal.png")
    assert not page.errors  # type: ignore[attr-defined]


def test_insecure_context_says_what_to_do(page: Any, web_deployment: Deployment) -> None:
    link = web_deployment.pairing_link()
    insecure = re.sub(r"^http://127\.0\.0\.1", "http://insecure.tether.test", link)
    page.goto(insecure)
    page.wait_for_selector("#insecure", timeout=TIMEOUT)
    assert page.evaluate("window.isSecureContext") is False
    text = page.text_content("#insecure")
    assert "HTTPS" in text and "localhost" in text
    assert page.get_attribute("#https-link", "href").startswith("https://insecure.tether.test:")


def test_the_page_survives_a_relay_restart(page: Any, web_deployment: Deployment) -> None:
    d = web_deployment
    _pair(page, d)
    page.wait_for_selector('a.host[data-online="1"]', timeout=TIMEOUT)
    open_new_terminal(page, d)
    type_line(page, "echo before-$((2*2))")
    wait_terminal(page, "before-4")

    # The host-wide subscription's cursor is persisted in IndexedDB.
    page.goto(f"{d.origin}/")
    page.click('a.host[data-online="1"]')
    page.wait_for_selector("a.session", timeout=TIMEOUT)
    cursor = page.evaluate(
        """async () => {
          const { store } = await import("/store.js");
          return (await store.getCursor(window.tether.hosts[0].host_id)).cursor;
        }"""
    )
    assert cursor > 0
    page.go_back()
    page.wait_for_selector('#conn-state[data-state="connected"]', timeout=TIMEOUT)
    page.click("a.host")
    page.click("a.session")
    page.wait_for_selector('#conn-state[data-state="connected"]', timeout=TIMEOUT)

    # The relay restarts on the same port: the page reconnects by itself and keeps working.
    d.relay.stop()
    page.wait_for_selector('#conn-state:not([data-state="connected"])', timeout=TIMEOUT)
    # What the page says of it, once, and without literal backticks ([11] 11).
    note = page.locator("#conn-detail")
    note.wait_for(timeout=TIMEOUT)
    said = note.text_content()
    assert said.count("was lost") <= 1 and "`" not in said, said
    relay, _ = start_web_relay(d.relay_port)
    d.relay = relay
    page.wait_for_selector('#conn-state[data-state="connected"]', timeout=30_000)
    wait_terminal(page, "before-4")
    type_line(page, "echo again-$((2*3))")
    wait_terminal(page, "again-6")
    assert not page.errors  # type: ignore[attr-defined]


def test_big_output_flows_because_the_page_acks(page: Any, web_deployment: Deployment) -> None:
    d = web_deployment
    _pair(page, d)
    open_new_terminal(page, d)
    # ~1.3 MB of output: far past the host's 512 KiB window, so it only all arrives if the page
    # acknowledges each notification (events.ack).
    type_line(page, "seq 1 200000; echo big-$((1+1))-done")
    shown = wait_terminal(page, "big-2-done", timeout=30)
    assert "199999\n200000" in shown


def test_relay_killed_and_restarted_the_page_shows_every_line_once(page: Any, web_deployment: Deployment) -> None:
    """The relay dies (SIGKILL) while a command keeps printing numbered lines; restarted on the same
    port, the page reconnects by itself and its terminal has every number exactly once, in order."""
    d = web_deployment
    _pair(page, d)
    page.wait_for_selector('a.host[data-online="1"]', timeout=TIMEOUT)
    open_new_terminal(page, d)
    count = 120
    type_line(page, f"for i in $(seq 1 {count}); do echo line-$i; sleep 0.08; done; echo all-$((60*2))-printed")
    wait_terminal(page, "line-5")

    d.relay.stop(signal.SIGKILL)
    page.wait_for_selector('#conn-state:not([data-state="connected"])', timeout=TIMEOUT)
    time.sleep(3)  # the command keeps printing while nobody can reach the host
    relay, _ = start_web_relay(d.relay_port)
    d.relay = relay
    page.wait_for_selector('#conn-state[data-state="connected"]', timeout=30_000)
    shown = wait_terminal(page, "all-120-printed", timeout=30)
    numbers = [int(m.group(1)) for m in re.finditer(r"^line-(\d+)$", shown, re.MULTILINE)]
    assert numbers == list(range(1, count + 1)), numbers
    assert not page.errors  # type: ignore[attr-defined]


def test_a_revoked_browser_says_so_and_stops(page: Any, web_deployment: Deployment) -> None:
    d = web_deployment
    pair_page(page, d, "--scopes", "read,prompt,approve,admin")
    page.click('a.host[data-online="1"]')
    page.wait_for_selector('#conn-state[data-state="connected"]', timeout=TIMEOUT)

    # Admin scope: the Devices screen lists this browser and renames it.
    page.click("#devices-link")
    me = device_id(d.host_home, "phone-under-test")
    row = page.locator(f'.device[data-device="{me}"]')
    row.wait_for(timeout=TIMEOUT)
    assert "this browser" in row.text_content()
    row.locator("button", has_text="Rename").click()
    page.fill(f"#rename-{me}", "my phone")
    page.click(f'.device[data-device="{me}"] button[type="submit"]')
    page.locator(f'.device[data-device="{me}"]', has_text="my phone").wait_for(timeout=TIMEOUT)
    assert device_id(d.host_home, "my phone") == me
    page.go_back()
    page.wait_for_selector("#sessions", timeout=TIMEOUT)

    # Revoked on the host: the open page says so, and stops knocking.
    tether(d.host_home, "devices", "revoke", me)
    page.wait_for_selector("#revoked", timeout=TIMEOUT)
    assert page.get_attribute("#conn-state", "data-state") == "revoked"
    assert "revoked" in page.text_content("#revoked")
    attempts = page.evaluate("window.tether.conns.get(window.tether.hosts[0].host_id).attempts")
    page.evaluate("window.tether.wake()")  # as when the phone wakes up or the network returns
    time.sleep(3)
    assert page.evaluate("window.tether.conns.get(window.tether.hosts[0].host_id).attempts") == attempts

    # After a reload it still knows, without asking the host again.
    page.goto(d.origin + "/")
    row_sel = 'a.host[data-state="revoked"]'
    page.wait_for_selector(row_sel, timeout=TIMEOUT)
    page.click(row_sel)
    page.wait_for_selector("#revoked", timeout=TIMEOUT)
    assert page.evaluate("window.tether.conns.get(window.tether.hosts[0].host_id).attempts") == 0

    # All it offers: forget the host.
    page.click("#forget-host")
    page.wait_for_selector("#hosts .empty", timeout=TIMEOUT)
    assert page.evaluate("(async () => (await (await import('/store.js')).store.listHosts()).length)()") == 0
    assert not page.errors  # type: ignore[attr-defined]


def test_a_browser_held_to_a_workspace_offers_only_that_one(page: Any, web_deployment: Deployment) -> None:
    d = web_deployment
    mine = d.workspace / "mine"
    mine.mkdir()
    (d.workspace / "other").mkdir()
    pair_page(page, d, "--workspace", str(mine))
    host_id = tether_json(d.host_home, "status", "--json")["host"]["id"]
    page.wait_for_selector('a.host[data-online="1"]', timeout=TIMEOUT)
    page.goto(f"{d.origin}/#/host/{host_id}/new")
    page.wait_for_selector("#new-workspace option", state="attached", timeout=TIMEOUT)
    real = os.path.realpath(mine)
    until(lambda: page.eval_on_selector_all("#new-workspace option", "els => els.map(e => e.value)") == [real],
          what="only the browser's workspace is offered")
    page.goto(f"{d.origin}/#/host/{host_id}/settings")
    page.wait_for_selector("#settings-workspace", timeout=TIMEOUT)
    assert page.text_content("#settings-workspace") == real
