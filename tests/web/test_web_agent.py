"""A builtin agent session driven from the phone: real relay, host and scripted model processes.

The agent asks to write a file; the phone sees the exact diff and approves; a CLI device on the same
session sees `approval.resolved` and the file exists. A follow-up prompt sent while the agent is
still busy is queued by the host, shown as queued, and starts by itself when the turn ends (once,
with its cid); the second write is denied and no file appears.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.procs import login, tether, tether_json
from tether.agents.sandbox import available

from .conftest import BuiltinDeployment
from .pages import TIMEOUT, pair_page, until

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not available(), reason="bubblewrap unusable here"),
]


def cli_events(home: Path, session: str) -> list[dict[str, Any]]:
    out = tether(home, "sessions", "events", session, "--json").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def resolved(home: Path, session: str, decision: str) -> list[dict[str, Any]]:
    events = cli_events(home, session)
    return [e for e in events if e["type"] == "approval.resolved" and e["data"]["decision"] == decision]


def test_approve_and_deny_a_write_from_the_phone(page: Any, builtin_deployment: BuiltinDeployment,
                                                 cli_home: Path) -> None:
    d = builtin_deployment
    pair_page(page, d)
    link = tether_json(d.host_home, "pair", "--json")["link"]
    login(cli_home, link, "--name", "cli-watcher", "--json")

    # Start the agent from the New session screen, in the host's allowed workspace.
    page.click('a.host[data-online="1"]')
    page.click("#new-session")
    page.check('input[name="agent"][value="builtin"]')
    options = page.eval_on_selector_all("#new-workspace option", "els => els.map(e => e.value)")
    assert options == [str(d.workspace.resolve())]
    page.fill("#new-prompt", "write hello.py")
    page.click("#start-session")
    page.wait_for_selector("#cards", timeout=TIMEOUT)
    session = page.url.rsplit("/", 1)[1]
    assert session.startswith("s_")

    # The streamed text, then the approval card with the exact diff.
    page.locator(".card.agent", has_text="I will write hello.py for you.").wait_for(timeout=TIMEOUT)
    card = page.locator('.card.approval[data-resolved=""]')
    card.wait_for(timeout=TIMEOUT)
    assert "hello.py" in card.locator(".path").text_content()
    diff = card.locator("pre.diff").text_content()
    assert "+++ b/hello.py" in diff and "+print('hi')" in diff
    assert card.locator(".dl.add").first.text_content().startswith("+")
    assert card.locator("button.approve-session").is_visible()  # offered in `options`
    assert not (d.workspace / "hello.py").exists()

    # A follow-up while the agent waits: the host queues it, and the page says it is queued.
    page.fill("#composer", "then write denied.py")
    page.click("#send")
    queued = page.locator("#pending .card.queued")
    queued.wait_for(timeout=TIMEOUT)
    assert "then write denied.py" in queued.text_content() and "sent when the agent is done" in queued.text_content()
    assert queued.locator("button.unqueue").is_visible()
    queued_id = queued.get_attribute("data-queued")

    card.locator("button.approve").click()
    page.wait_for_selector('.card.approval[data-resolved="approve"]', timeout=TIMEOUT)
    assert "Approved by phone-under-test" in page.text_content('.card.approval[data-resolved="approve"]')
    # The CLI device on the same session sees the resolution; the file exists.
    (event,) = until(lambda: resolved(cli_home, session, "approve"), what="approval.resolved in the CLI")
    assert event["data"]["by"]["name"] == "phone-under-test"
    assert (d.workspace / "hello.py").read_text() == "print('hi')\n"
    page.locator(".card.agent", has_text="Wrote hello.py.").wait_for(timeout=TIMEOUT)
    page.wait_for_selector(".card.file .dl.add", timeout=TIMEOUT)  # the applied change, as a diff

    # The queued prompt started by itself once the turn ended: in the log with its state.
    applied = page.locator('.card.user .prompt-state[data-state="applied"]')
    applied.wait_for(timeout=TIMEOUT)
    assert page.locator("#pending .card").count() == 0

    # Second write: deny it.
    card = page.locator('.card.approval[data-resolved=""]')
    card.wait_for(timeout=TIMEOUT)
    assert "denied.py" in card.text_content()
    card.locator("button.deny").click()
    page.wait_for_selector('.card.approval[data-resolved="deny"]', timeout=TIMEOUT)
    until(lambda: resolved(cli_home, session, "deny"), what="the denial in the CLI")
    page.locator(".card.agent", has_text="I did not write denied.py").wait_for(timeout=TIMEOUT)
    assert not (d.workspace / "denied.py").exists()

    events = cli_events(cli_home, session)
    turns = [e for e in events if e["type"] == "turn.started" and e["data"].get("queued") == queued_id]
    assert len(turns) == 1 and turns[0]["data"]["input"] == "then write denied.py" and turns[0].get("cid")
    page.screenshot(path="/tmp/tether-web-agent.png", full_page=True)
    assert not page.errors  # type: ignore[attr-defined]
