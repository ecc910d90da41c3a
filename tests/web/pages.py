"""What the browser tests do on the page: pair from a link, read the terminal, type like a person."""

from __future__ import annotations

import time
from typing import Any

from tests.procs import tether_json

TIMEOUT = 15_000  # ms, for anything that crosses processes


def pair_page(page: Any, deployment: Any, *extra: str, name: str = "phone-under-test") -> str:
    """Open `tether pair`'s link on the page and pair; returns the link's secret."""
    link = deployment.pairing_link(*extra)
    secret = link.rsplit(".", 1)[1]
    host_id = link.split("#pair=")[1].split(".")[0]
    page.goto(link)
    page.wait_for_selector("#pair-host-id", timeout=TIMEOUT)
    # The secret left the address bar at once, before the person even confirmed.
    assert "#pair" not in page.url and secret not in page.url
    assert page.text_content("#pair-host-id") == host_id
    page.fill("#device-name", name)
    page.click("#pair-button")
    page.wait_for_selector(f'a.host[data-host="{host_id}"]', timeout=TIMEOUT)
    return secret


def listed(home: Any, what: str) -> list[dict[str, Any]]:
    """What `tether WHAT list --json` prints (sessions, devices): a list."""
    result = tether_json(home, what, "list", "--json")
    assert isinstance(result, list), result
    return result


def device_id(host_home: Any, name: str) -> str:
    return str(next(d["id"] for d in listed(host_home, "devices") if d["name"] == name and not d.get("revoked")))


def terminal_text(page: Any) -> str:
    """What the page's terminal (xterm.js) shows, scrollback included, one line per line."""
    # Empty until the terminal view is up (xterm.js loads after the session's screen).
    return "\n".join(page.evaluate("document.getElementById('terminal')?.tetherLines?.() ?? []"))


def wait_terminal(page: Any, text: str, timeout: float = TIMEOUT / 1000) -> str:
    # (wait_for_function would eval a string, which the page's CSP forbids: poll instead.)
    deadline = time.monotonic() + timeout
    while True:
        shown = terminal_text(page)
        if text in shown:
            return shown
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the terminal:\n{shown}")
        time.sleep(0.1)


def type_line(page: Any, line: str) -> None:
    """Type as a person would: tap the terminal, type on the keyboard, press Enter."""
    page.wait_for_selector('#terminal[data-ready="1"]', timeout=TIMEOUT)
    page.click("#terminal")
    page.keyboard.type(line)
    page.keyboard.press("Enter")


def until(check: Any, timeout: float = TIMEOUT / 1000, what: str = "condition", seen: Any = None) -> Any:
    """Poll ``check`` until it is truthy; on timeout the error says what ``seen()`` shows then."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f" (seen: {seen()!r})" if seen else ""))
        time.sleep(0.2)


def open_new_terminal(page: Any, deployment: Any) -> str:
    """A bash session started from the host's CLI, opened on the (paired) page once connected;
    returns its id."""
    started = tether_json(deployment.host_home, "sessions", "start", "--json", "--", "bash", "--norc", "-i")
    host_id = page.evaluate("window.tether.hosts[0].host_id")
    page.goto(f"{deployment.origin}/#/host/{host_id}/session/{started['id']}")
    page.wait_for_selector('#conn-state[data-state="connected"]', timeout=TIMEOUT)
    return str(started["id"])
