"""[9] 1, Web Push through real processes: the page subscribes from Settings (its subscription goes to
the host inside the E2E channel), the host pushes to a push service on loopback what an agent asks
— sealed to the browser's keys, which the test holds — and the page's real service worker shows it
with the page closed (delivered over CDP, as Chromium's push service would) and opens the session
on a click; an answer elsewhere closes it; a 410 from the push service removes the subscription and
the Devices screen says so; the relay never sees the plaintext.

Headless Chromium has no push service of its own: the page's PushManager.subscribe is given the
loopback service's endpoint and the test's keys (an init script), everything after that is real.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest

from tests.procs import TETHER, Proc, login, remove, short_home, tether, tether_json
from tests.support.deployment import Deployment
from tests.support.fake_push import Browser, Push
from tether.agents.sandbox import available

from .conftest import BuiltinDeployment, builtin_host, phone_page, write_file_call
from .pages import TIMEOUT, listed, pair_page, until
from .test_notifications import CLICK_JS

pytestmark = [pytest.mark.browser]

PROMPT = "write the release notes"
SCRIPT = [
    write_file_call("NOTES.md", "# 1.0\n", "c1"),
    {"text": "Wrote NOTES.md."},
    write_file_call("MORE.md", "more\n", "c2"),
    {"text": "Not written."},
]

# The browser's PushManager, as a push service would answer it: the loopback endpoint, our keys.
SUBSCRIBE_JS = """([endpoint, keys]) => {
  let current = null;
  const make = (options) => ({
    endpoint, expirationTime: null, options,
    toJSON: () => ({endpoint, expirationTime: null, keys}),
    unsubscribe: async () => { current = null; return true; },
  });
  PushManager.prototype.subscribe = async function (options) { current = make(options); return current; };
  PushManager.prototype.getSubscription = async function () { return current; };
}"""

WINDOWS_JS = """async () => (await self.clients.matchAll({type: 'window', includeUncontrolled: true}))
  .map((w) => [w.url, w.visibilityState, w.focused])"""
WORKER_NOTIFICATIONS_JS = """async () => (await self.registration.getNotifications())
  .map((n) => ({title: n.title, body: n.body, tag: n.tag, data: n.data}))"""


@dataclass
class PushDeployment(BuiltinDeployment):
    push: Proc | None = None
    pushes_log: Path = Path()

    def pushes(self) -> list[Push]:
        if not self.pushes_log.exists():
            return []
        return [Push.from_json(json.loads(line)) for line in self.pushes_log.read_text().splitlines() if line.strip()]

    def answer(self, path: str, status: int) -> None:
        self.pushes_log.with_suffix(".status").write_text(json.dumps({path: status}))


@pytest.fixture
def push_deployment() -> Iterator[PushDeployment]:
    if not available():
        pytest.skip("bubblewrap unusable here")
    logs = short_home("tp")
    push = Proc([TETHER[0], "-m", "tests.support.fake_push", "--log", str(logs / "pushes.jsonl")], name="fake_push")
    config = f'[push]\nallow_endpoints = ["http://127.0.0.1:{_port(push)}/"]\nsubject = "mailto:owner@example.com"\n'
    try:
        with builtin_host(SCRIPT, "laptop", config) as d:
            yield PushDeployment(**{f.name: getattr(d, f.name) for f in fields(d)}, push=push,
                                 pushes_log=logs / "pushes.jsonl")
    finally:
        push.stop()
        remove(logs)


def _port(proc: Proc) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        match = re.search(r"PORT (\d+)", proc.out)
        if match:
            return int(match.group(1))
        time.sleep(0.05)
    raise AssertionError(f"the push service did not start:\n{proc.log}")


def push_worker(context: Any, host_id: str) -> Any:
    """The service worker of the host's push registration (scope push/<host id>/)."""
    def find() -> Any:
        for worker in context.service_workers:
            if worker.evaluate("self.registration.scope").endswith(f"/push/{host_id}/"):
                return worker
        return None
    return until(find, what="the push registration's service worker")


def test_pushes_reach_a_closed_page_and_open_the_session(
    page: Any, push_deployment: PushDeployment, cli_home: Path,
) -> None:
    d = push_deployment
    browser = Browser()
    assert d.push is not None
    endpoint = f"http://127.0.0.1:{_port(d.push)}/push/page"
    context = page.context
    context.grant_permissions(["notifications"], origin=d.origin)
    page.add_init_script(f"({SUBSCRIBE_JS})({json.dumps([endpoint, browser.keys()])})")
    pair_page(page, d, "--scopes", "read,prompt,approve,admin")  # admin: its Devices screen lists devices
    host_id = str(page.get_attribute("a.host", "data-host"))
    login(cli_home, d.pairing_link(), "--name", "cli", "--json")

    # Turned on in Settings: this browser's subscription is on the host, for this device only.
    page.evaluate("(h) => { location.hash = `#/host/${h}/settings`; }", host_id)
    page.check("#notify-toggle")
    until(lambda: page.get_attribute("#push-state", "data-state") == "subscribed", what="subscribed",
          seen=lambda: page.text_content("#settings"))
    devices = listed(d.host_home, "devices")
    mine = next(x for x in devices if x["name"] == "phone-under-test")
    assert mine["push"]["state"] == "active" and next(x for x in devices if x["name"] == "cli")["push"] is None
    said = tether(d.host_home, "devices", "list").stdout
    assert "push: on, nothing sent yet" in said and "push: off" in said

    # The page is closed; an agent asks. The host pushes; the service worker shows it.
    worker = push_worker(context, host_id)
    keeper = context.new_page()  # the browser stays open (a blank tab), the app's page does not
    cdp = context.new_cdp_session(keeper)
    # What Chromium says of the worker's versions and errors, for a failure's message.
    versions: list[str] = []
    cdp.on("ServiceWorker.workerVersionUpdated", lambda e: versions.extend(
        f"{v['versionId']} {v['status']}/{v['runningStatus']}" for v in e["versions"]))
    cdp.on("ServiceWorker.workerErrorReported", lambda e: versions.append(f"error: {e['errorMessage']}"))
    cdp.send("ServiceWorker.enable")
    console: list[str] = []  # what the service workers wrote to it
    context.on("console", lambda m: console.append(m.text) if m.worker else None)
    page.close()
    session = tether_json(cli_home, "sessions", "start", "--agent", "builtin", PROMPT, "--json")["id"]
    pushed = until(lambda: [p for p in d.pushes() if p.path == "/push/page"], what="a push", timeout=30)[0]
    payload = browser.decrypt(pushed.body)
    assert payload["kind"] == "approval" and payload["session"] == session and payload["title"] == PROMPT
    assert "NOTES.md" not in json.dumps(payload)  # the minimum: no path, no command, no output
    registration = until(lambda: _registration_id(cdp, host_id), what="the push registration's id")
    def notifications() -> Any:  # looked up each time: a push may start another instance of the worker
        return push_worker(context, host_id).evaluate(WORKER_NOTIFICATIONS_JS)
    def seen() -> Any:
        return push_worker(context, host_id).evaluate(WINDOWS_JS), notifications(), versions[-12:], console
    shown = _deliver(cdp, d.origin, registration, payload, notifications, "the notification shown", seen)
    assert [(n["title"], n["body"], n["tag"]) for n in shown] == [
        (f"laptop · {PROMPT}", "waits for your approval", f"tether:{host_id}:approval:{payload['approval']}")]

    # A click brings the app to that session, where the approval waits. (With no window open the
    # worker opens one, which only a real click may: a test's click reaches an open app instead.)
    opened = context.new_page()
    opened.goto(f"{d.origin}/")
    opened.wait_for_selector(f'a.host[data-host="{host_id}"]', timeout=TIMEOUT)
    assert worker.evaluate(CLICK_JS, shown[0]["tag"])
    until(lambda: opened.evaluate("location.hash") == f"#/host/{host_id}/session/{session}",
          what="the app at the session", seen=lambda: opened.evaluate("location.hash"))
    opened.locator('.card.approval[data-resolved=""]').wait_for(timeout=TIMEOUT)
    assert worker.evaluate(WORKER_NOTIFICATIONS_JS) == []
    opened.close()
    # The worker shows nothing while a window is visible and focused: it must have seen this one go.
    until(lambda: worker.evaluate(WINDOWS_JS) == [], what="the worker to see no window",
          seen=lambda: worker.evaluate(WINDOWS_JS))

    # Answered elsewhere: a close follows, and takes the notification away.
    assert len(_deliver(cdp, d.origin, registration, payload, notifications, "shown again", seen)) == 1
    tether(cli_home, "sessions", "approve", session, payload["approval"])
    close = until(lambda: [browser.decrypt(p.body) for p in d.pushes() if p.path == "/push/page"
                           and browser.decrypt(p.body)["kind"] == "close"], what="the close push")[0]
    assert close["tag"] == shown[0]["tag"]
    _deliver(cdp, d.origin, registration, close, lambda: notifications() == [], "the notification closed", seen)

    # The push service says the subscription is gone: the host drops it; the Devices screen says so.
    d.answer("/push/page", 410)
    tether(cli_home, "sessions", "send", session, "one more")
    def state() -> str:
        return str(next(x for x in listed(d.host_home, "devices") if x["name"] == "phone-under-test")["push"]["state"])
    until(lambda: state() == "gone", what="the subscription dropped", timeout=30)
    assert "push: gone" in tether(d.host_home, "devices", "list").stdout
    app = context.new_page()
    app.goto(f"{d.origin}/#/host/{host_id}/devices")
    app.locator('small.push[data-push="gone"]').wait_for(timeout=TIMEOUT)
    assert "gone" in (app.text_content('small.push[data-push="gone"]') or "")

    # Revoked: its subscription goes with it.
    tether(d.host_home, "devices", "revoke", mine["id"])
    assert next(x for x in listed(d.host_home, "devices") if x["id"] == mine["id"])["push"] is None

    # Only ciphertext went through the relay and the push service.
    assert PROMPT not in d.relay.log and PROMPT.encode() not in b"".join(p.body for p in d.pushes())


def _deliver(cdp: Any, origin: str, registration: str, message: dict[str, Any], check: Any, what: str,
             seen: Any) -> Any:
    """``message`` pushed as Chromium's push service would, until ``check()`` says what it did:
    what ``check`` returned. DevTools' delivery drops its outcome (a push the browser failed to
    dispatch, its worker not started in time, is lost without a word), where a push service learns
    it and sends again; so does this, at most three times. A worker that never does it still fails."""
    for _ in range(3):
        cdp.send("ServiceWorker.deliverPushMessage", {"origin": origin, "registrationId": registration,
                                                      "data": json.dumps(message)})
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            done = check()
            if done:
                return done
            time.sleep(0.2)
    raise AssertionError(f"{what}: not after three pushes (seen: {seen()!r})")


def _registration_id(cdp: Any, host_id: str) -> str | None:
    found: dict[str, str] = {}
    cdp.on("ServiceWorker.workerRegistrationUpdated", lambda ev: found.update(
        {r["registrationId"]: r["scopeURL"] for r in ev["registrations"]}))
    cdp.send("ServiceWorker.disable")
    cdp.send("ServiceWorker.enable")
    time.sleep(0.3)
    return next((rid for rid, scope in found.items() if scope.endswith(f"/push/{host_id}/")), None)


IPHONE_SAFARI = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
                 " Version/18.2 Mobile/15E148 Safari/604.1")


def test_an_iphone_tab_is_told_to_add_tether_to_the_home_screen(
    browser: Any, page: Any, web_deployment: Deployment,
) -> None:
    d = web_deployment
    pair_page(page, d)
    host_id = str(page.get_attribute("a.host", "data-host"))
    page.evaluate("(h) => { location.hash = `#/host/${h}/settings`; }", host_id)
    page.wait_for_selector("#notify-toggle", timeout=TIMEOUT)
    assert page.locator("#ios-hint").count() == 0  # not an iPhone

    with phone_page(browser, "iphone tab", user_agent=IPHONE_SAFARI) as tab:
        pair_page(tab, d)
        tab.evaluate("(h) => { location.hash = `#/host/${h}/settings`; }", host_id)
        tab.wait_for_selector("#ios-hint", timeout=TIMEOUT)
        assert "Add to Home Screen" in (tab.text_content("#ios-hint") or "")
