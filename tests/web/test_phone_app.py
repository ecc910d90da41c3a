"""The phone app a person keeps using ([11]): each point a browser test at a phone viewport, with
real relay, host and agent processes (the builtin agent on a scripted model, or a pty)."""

from __future__ import annotations

import json
import random
import shlex
import signal
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import login, start_host, tether, tether_json
from tests.support.deployment import Deployment, deployed
from tests.support.stall_proxy import StallProxy

from .conftest import BUILTIN_SCRIPT, BuiltinDeployment, builtin_host, start_web_relay
from .pages import TIMEOUT, listed, open_new_terminal, pair_page, terminal_text, type_line, until, wait_terminal

pytestmark = [pytest.mark.browser]

LONG = "\n".join(f"Line {n} of a long answer, so the conversation is taller than the phone." for n in range(120))


@pytest.fixture
def long_answer() -> Iterator[BuiltinDeployment]:
    with builtin_host([{"text": LONG}], "phone-host") as d:
        yield d


def start_builtin(page: Any, d: BuiltinDeployment, prompt: str) -> str:
    pair_page(page, d)
    page.click('a.host[data-online="1"]')
    page.click("#new-session")
    page.check('input[name="agent"][value="builtin"]')
    page.fill("#new-prompt", prompt)
    page.click("#start-session")
    page.wait_for_selector("#cards", timeout=TIMEOUT)
    return str(page.url.rsplit("/", 1)[1])


def on_screen(page: Any, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    return bool(box) and box["y"] >= 0 and box["y"] + box["height"] <= page.viewport_size["height"]


def test_the_top_bar_stays_on_screen_at_any_scroll_position(page: Any, long_answer: BuiltinDeployment) -> None:
    start_builtin(page, long_answer, "tell me a long story")
    page.locator(".card.agent", has_text="Line 119").wait_for(timeout=TIMEOUT)
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height > 3 * page.viewport_size["height"]
    for y in (0, height // 2, height):
        page.evaluate(f"window.scrollTo(0, {y})")
        page.wait_for_function(f"Math.abs(window.scrollY - Math.min({y}, "
                               "document.documentElement.scrollHeight - window.innerHeight)) < 2")
        # Polled: the bar is redrawn as events arrive, and a box is not measured on a replaced node.
        until(lambda: on_screen(page, "header.bar .back"), timeout=3, what=f"the back link on screen at {y}")
        until(lambda: on_screen(page, "#conn-state"), timeout=3, what=f"the connection state on screen at {y}")


def test_the_command_field_splits_words_as_a_shell_does(page: Any, web_deployment: Deployment) -> None:
    pair_page(page, web_deployment)
    # The splitter against Python's shlex (POSIX mode) on lines of quotes, escapes and blanks.
    rng = random.Random(11)
    lines = ["".join(rng.choice("ab '\"\\;|\t") for _ in range(rng.randrange(0, 14))) for _ in range(400)]
    got = page.evaluate("""async (lines) => {
      const { shellWords } = await import("/words.js");
      return lines.map((l) => { try { return shellWords(l); } catch (e) { return null; } });
    }""", lines)
    for line, words in zip(lines, got, strict=True):
        try:
            expected: list[str] | None = shlex.split(line)
        except ValueError:
            expected = None
        assert words == expected, line
    # What shlex does not do and a shell does: \\$ and \\` in double quotes are the characters.
    assert page.evaluate("""async () => (await import("/words.js")).shellWords('echo "a\\\\$b" $HOME')""") == [
        "echo", "a$b", "$HOME"]

    page.click('a.host[data-online="1"]')
    page.click("#new-session")
    page.fill("#new-command", "bash -c 'echo unclosed")
    assert page.get_attribute("#new-argv", "data-state") == "error"
    page.click("#start-session")
    assert "no closing '" in page.text_content("#new-error")
    page.fill("#new-command", "bash -c 'echo hi-$((6*7)); sleep 2'")
    assert page.locator("#new-argv code.word").all_text_contents() == ["bash", "-c", "echo hi-$((6*7)); sleep 2"]
    page.click("#start-session")
    wait_terminal(page, "hi-42")
    assert not page.errors  # type: ignore[attr-defined]


def test_a_used_link_says_so_and_offers_a_way_back(
    page: Any, web_deployment: Deployment, cli_home: Path,
) -> None:
    link = web_deployment.pairing_link()
    login(cli_home, link, "--name", "first-comer")  # the link works once: someone used it
    page.goto(link)
    page.wait_for_selector("#pair-host-id", timeout=TIMEOUT)
    # The id the page asks to check is printed by `tether pair` (and `tether up`) under the link.
    printed = tether(web_deployment.host_home, "pair").stdout
    assert f"this host's id: {page.text_content('#pair-host-id')}" in printed
    hint = page.locator(".screen p.hint").first
    assert "`" not in hint.text_content() and hint.locator("code").all_text_contents() == ["tether up", "tether pair"]
    page.click("#pair-button")
    page.wait_for_selector("#pair-status.error", timeout=TIMEOUT)
    said = page.locator("#pair-status")
    assert "no longer valid" in said.text_content() and "`" not in said.text_content()
    assert "tether pair" in said.locator("code").all_text_contents()
    # The relay does not tell a used link from an offline host: trying again is offered, and so is
    # a way back, even before this browser's first host.
    assert page.text_content("#pair-button") == "Try again"
    page.click("#pair-cancel")
    page.wait_for_selector("#hosts, .hosts, section.screen", timeout=TIMEOUT)
    assert "#pair" not in page.url
    assert not page.errors  # type: ignore[attr-defined]


def test_home_screen_icons_scrollback_setting_and_no_literal_backticks(
    page: Any, web_deployment: Deployment,
) -> None:
    pair_page(page, web_deployment)
    # iPhone's home screen takes a PNG apple-touch-icon (not the SVG); Android's install, PNGs too.
    href = page.get_attribute('link[rel="apple-touch-icon"]', "href")
    icon = page.request.get(f"{web_deployment.origin}/{href}")
    assert icon.headers["content-type"] == "image/png"
    assert struct.unpack(">II", icon.body()[16:24]) == (180, 180)
    manifest = page.request.get(f"{web_deployment.origin}/manifest.webmanifest").json()
    assert {"192x192", "512x512"} <= {i["sizes"] for i in manifest["icons"] if i["type"] == "image/png"}

    host_id = page.get_attribute('a.host[data-online="1"]', "data-host")
    # Commands in page text are code, never literal backticks: the hosts, host and devices screens.
    screens = (("", "#hosts"), (f"host/{host_id}", "#new-session"), (f"host/{host_id}/devices", "section.screen"))
    for screen, ready in screens:
        page.goto(f"{web_deployment.origin}/#/{screen}")
        page.wait_for_selector(ready, timeout=TIMEOUT)
        assert "`" not in page.inner_text("body"), screen
    page.goto(f"{web_deployment.origin}/#/host/{host_id}/settings")
    page.wait_for_selector("#scrollback")
    assert page.input_value("#scrollback") == "5000"
    assert "`" not in page.inner_text("body")
    page.select_option("#scrollback", "20000")

    page.goto(f"{web_deployment.origin}/#/host/{host_id}")
    page.click("#new-session")
    assert "`" not in page.inner_text("body")
    page.click("#start-session")  # bash
    page.wait_for_selector('#terminal[data-ready="1"]', timeout=TIMEOUT)
    assert page.get_attribute("#terminal", "data-scrollback") == "20000"
    page.reload()  # the choice stays with this browser
    page.wait_for_selector('#terminal[data-ready="1"]', timeout=TIMEOUT)
    assert page.get_attribute("#terminal", "data-scrollback") == "20000"
    assert not page.errors  # type: ignore[attr-defined]


@pytest.fixture
def no_claude() -> Iterator[Deployment]:
    """A host whose config names a Claude Code that is not there."""
    with deployed('[agents.claude]\nbinary = "/nonexistent/claude"\n', relay=start_web_relay) as d:
        yield d


def test_an_agent_the_host_cannot_start_is_offered_disabled_with_the_install_hint(
    page: Any, no_claude: Deployment,
) -> None:
    pair_page(page, no_claude)
    page.click('a.host[data-online="1"]')
    page.click("#new-session")
    claude = page.locator('label.choice[data-agent="claude"]')
    until(lambda: claude.get_attribute("data-available") == "0", what="Claude Code marked unavailable")
    assert page.locator('input[name="agent"][value="claude"]').is_disabled()
    said = claude.locator("small")
    assert "/nonexistent/claude" in said.text_content()
    assert "npm install -g @anthropic-ai/claude-code" in "".join(said.locator("code").all_text_contents())
    # What the host can start stays offered.
    assert page.locator('input[name="agent"][value="pty"]').is_enabled()
    assert page.locator('label.choice[data-agent="pty"]').get_attribute("data-available") == "1"
    assert not page.errors  # type: ignore[attr-defined]


@pytest.fixture
def asking() -> Iterator[BuiltinDeployment]:
    with builtin_host(BUILTIN_SCRIPT, "phone-host") as d:
        yield d


def _mark(page: Any, selectors: list[str]) -> None:
    """Tag the node each selector finds, so that a node replaced since shows untagged."""
    page.evaluate("(marked) => { for (const s of marked) document.querySelector(s).kept = s; }", selectors)


def _still_marked(page: Any, selectors: list[str]) -> list[str | None]:
    return list(page.evaluate("(marked) => marked.map((s) => document.querySelector(s).kept ?? null)", selectors))


def test_the_hosts_screen_redraws_in_place_so_a_tap_mid_redraw_is_not_lost(
    page: Any, asking: BuiltinDeployment, cli_home: Path,
) -> None:
    """The hosts screen redraws on every change (presence, approvals, a clock tick). Replacing its
    nodes each time lost a tap whose press and release straddled a redraw (they land on different
    nodes): the likely cause of a CI failure where the click on a host that had just come online
    did nothing. Its nodes are now kept and brought up to date."""
    pair_page(page, asking)
    row = page.locator('a.host[data-online="1"]')
    row.wait_for(timeout=TIMEOUT)
    marked = ["a.host", "a.host .name", "#scan-link"]
    _mark(page, marked)
    login(cli_home, asking.pairing_link(), "--name", "cli", "--json")
    first = tether_json(cli_home, "sessions", "start", "--agent", "builtin", "write hello.py", "--json")["id"]
    row.locator(".waiting").wait_for(timeout=TIMEOUT)  # redrawn: the row now counts an approval
    assert row.get_attribute("aria-label").endswith("1 waiting for approval")
    assert _still_marked(page, marked) == marked
    row.click()
    page.wait_for_selector("a.session", timeout=TIMEOUT)

    # The host's screen too: it redraws on every event of every session.
    marked = ["#new-session", f'a.session[data-session="{first}"]', "#session-filter"]
    _mark(page, marked)
    tether_json(cli_home, "sessions", "start", "--agent", "builtin", "and another", "--json")
    until(lambda: page.locator("a.session").count() == 2, what="the second session listed")
    # The first session's row is the same node wherever the new one was put.
    assert _still_marked(page, marked) == marked
    assert not page.errors  # type: ignore[attr-defined]


def test_the_hosts_screen_and_the_title_count_what_waits_one_tap_from_it(
    page: Any, asking: BuiltinDeployment,
) -> None:
    session = start_builtin(page, asking, "write hello.py")
    page.locator('.card.approval[data-resolved=""]').wait_for(timeout=TIMEOUT)
    page.goto(f"{asking.origin}/#/")
    row = page.locator("a.host")
    row.locator(".waiting").wait_for(timeout=TIMEOUT)
    assert row.locator(".waiting").text_content() == "1 waiting"
    assert row.get_attribute("aria-label").endswith("1 waiting for approval")
    until(lambda: page.title() == "(1) tether", what="the count in the title")

    row.click()
    page.click("#waiting-banner")  # one tap to the session that waits
    assert page.url.endswith(f"/session/{session}")
    card = page.locator('.card.approval[data-resolved=""]')
    card.locator("button.approve").click()
    until(lambda: page.title() == "tether", what="the count gone from the title")
    page.goto(f"{asking.origin}/#/")
    page.wait_for_selector("a.host", timeout=TIMEOUT)
    assert page.locator("a.host .waiting").count() == 0
    assert not page.errors  # type: ignore[attr-defined]


def test_keys_typed_while_the_host_is_unreachable_are_refused_visibly(
    page: Any, web_deployment: Deployment,
) -> None:
    d = web_deployment
    pair_page(page, d)
    open_new_terminal(page, d)
    type_line(page, "echo before-$((2*2))")
    wait_terminal(page, "before-4")

    d.relay.stop()
    page.wait_for_selector('#conn-state:not([data-state="connected"])', timeout=TIMEOUT)
    notice = page.locator("#term-offline")
    notice.wait_for(timeout=TIMEOUT)
    assert "not sent" in notice.text_content()
    type_line(page, "echo typed-$((3*3))-offline")
    assert "what you type is not sent" in notice.text_content()  # said as it happens

    relay, _ = start_web_relay(d.relay_port)
    d.relay = relay
    page.wait_for_selector('#conn-state[data-state="connected"]', timeout=30_000)
    until(lambda: notice.is_hidden(), what="the notice gone once connected")
    type_line(page, "echo after-$((5*5))")
    wait_terminal(page, "after-25")
    # Refused, not queued: what was typed offline never reached the shell.
    assert "typed-9-offline" not in terminal_text(page)
    assert not page.errors  # type: ignore[attr-defined]


def test_an_approval_tapped_while_offline_says_it_waits_then_goes_through(
    page: Any, asking: BuiltinDeployment,
) -> None:
    d = asking
    start_builtin(page, d, "write hello.py")
    card = page.locator('.card.approval[data-resolved=""]')
    card.wait_for(timeout=TIMEOUT)
    approval = card.get_attribute("data-approval")

    d.relay.stop()
    page.wait_for_selector('#conn-state:not([data-state="connected"])', timeout=TIMEOUT)
    card.locator("button.approve").click()
    note = page.locator(f'.card.approval[data-approval="{approval}"] .answering')
    until(lambda: note.count() and "will be sent when connected" in note.text_content(), what="the waiting note")
    assert page.locator(f'.card.approval[data-approval="{approval}"] button.approve').is_disabled()
    assert not (d.workspace / "hello.py").exists()

    relay, _ = start_web_relay(d.relay_port)
    d.relay = relay
    done = page.locator(f'.card.approval[data-approval="{approval}"][data-resolved="approve"]')
    done.wait_for(timeout=60_000)
    assert "Approved by phone-under-test" in done.text_content()
    assert done.locator(".answering").count() == 0
    until(lambda: (d.workspace / "hello.py").exists(), what="the approved write")
    assert not page.errors  # type: ignore[attr-defined]


def test_a_prompt_queued_while_the_agent_works_can_be_cancelled(
    page: Any, asking: BuiltinDeployment, cli_home: Path,
) -> None:
    d = asking
    session = start_builtin(page, d, "write hello.py")
    card = page.locator('.card.approval[data-resolved=""]')
    card.wait_for(timeout=TIMEOUT)
    page.fill("#composer", "then write denied.py")
    page.click("#send")
    queued = page.locator("#pending .card.queued")
    queued.wait_for(timeout=TIMEOUT)
    queued.locator("button.unqueue").click()
    until(lambda: queued.count() == 0, what="the queued prompt gone")

    card.locator("button.approve").click()
    page.locator(".card.agent", has_text="Wrote hello.py.").wait_for(timeout=TIMEOUT)
    until(lambda: page.get_attribute("#session-status", "data-status") == "idle", what="the turn's end")
    login(cli_home, d.pairing_link(), "--name", "cli-watcher", "--json")
    listed = tether(cli_home, "sessions", "events", session, "--json").stdout
    events = [json.loads(line) for line in listed.splitlines()]
    (dropped,) = [e["data"] for e in events if e["type"] == "turn.unqueued"]
    assert dropped["reason"] == "cancelled by phone-under-test"
    assert [e["data"]["input"] for e in events if e["type"] == "turn.started"] == ["write hello.py"]
    assert not page.errors  # type: ignore[attr-defined]


MARKDOWN = """# Result

Some **bold**, some `code`, a [link](https://example.com/docs) and a list:

1. one
2. two

```python
print("a line long enough to scroll inside its block, not to push the page wider than the phone: " * 3)
```

<img src=x onerror="window.__xss = 1"> <script>window.__xss = 2</script>
[a trap](javascript:window.__xss=3) <a href="javascript:window.__xss=4">another</a>
<iframe src="https://example.com"></iframe> <svg onload="window.__xss=5"></svg>
![tracker](https://tracker.example/pixel.png)
"""


@pytest.fixture
def formatted() -> Iterator[BuiltinDeployment]:
    with builtin_host([{"text": MARKDOWN}], "phone-host") as d:
        yield d


def test_agent_replies_are_formatted_and_nothing_in_them_runs(page: Any, formatted: BuiltinDeployment) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    start_builtin(page, formatted, "format something")
    card = page.locator(".card.agent .md")
    card.locator("h1").wait_for(timeout=TIMEOUT)
    assert card.locator("h1").text_content() == "Result"
    assert card.locator("strong").first.text_content() == "bold"
    assert card.locator("li").all_text_contents() == ["one", "two"]
    link = card.locator('a[href="https://example.com/docs"]')
    assert link.get_attribute("target") == "_blank" and link.get_attribute("rel") == "noopener noreferrer"
    # Code: its own scrolling, and a Copy button.
    block = card.locator(".codeblock pre")
    assert block.evaluate("el => el.scrollWidth > el.clientWidth")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert card.locator(".codeblock button.copy").text_content() == "Copy"
    # Nothing of the payloads survives or runs.
    for tag in ("script", "img", "iframe", "svg"):
        assert card.locator(tag).count() == 0, tag
    assert card.evaluate("el => [...el.querySelectorAll('*')].some(e => [...e.attributes].some(a => "
                         "a.name.startsWith('on') || /javascript:/i.test(a.value)))") is False
    assert page.evaluate("window.__xss") is None and dialogs == []
    assert not page.errors  # type: ignore[attr-defined]


def test_a_connection_that_stalls_without_closing_shows_reconnecting_then_recovers(
    page: Any, web_deployment: Deployment,
) -> None:
    d = web_deployment
    with StallProxy(d.relay_port) as proxy:
        # The page reaches the relay only through the proxy: its origin is the proxy's.
        link = d.pairing_link().replace(d.origin, f"http://127.0.0.1:{proxy.port}")
        page.goto(link)
        page.wait_for_selector("#pair-button", timeout=TIMEOUT)
        page.click("#pair-button")
        page.click('a.host[data-online="1"]', timeout=TIMEOUT)
        page.wait_for_selector('#conn-state[data-state="connected"]', timeout=TIMEOUT)

        proxy.pause()
        stalled = time.monotonic()
        page.wait_for_selector('#conn-state:not([data-state="connected"])', timeout=TIMEOUT)
        seen = time.monotonic() - stalled
        assert seen < 10, f"'connected' shown {seen:.1f} s over a dead path"
        print(f"stall noticed after {seen:.1f} s")
        proxy.resume()
        page.wait_for_selector('#conn-state[data-state="connected"]', timeout=30_000)
        assert not page.errors  # type: ignore[attr-defined]


def test_sessions_are_filtered_archived_and_deleted_from_the_phone(page: Any, web_deployment: Deployment) -> None:
    d = web_deployment
    pair_page(page, d)
    done = tether_json(d.host_home, "sessions", "start", "--json", "--", "sh", "-c", "echo bye-$((2+2))")["id"]
    live = tether_json(d.host_home, "sessions", "start", "--json", "--", "sleep", "60")["id"]
    host_id = page.evaluate("window.tether.hosts[0].host_id")
    page.goto(f"{d.origin}/#/host/{host_id}")
    row = page.locator(f'a.session[data-session="{done}"]')
    row.wait_for(timeout=TIMEOUT)
    page.select_option("#session-filter", "live")
    until(lambda: row.count() == 0, what="the ended session filtered out")
    assert page.locator(f'a.session[data-session="{live}"]').count() == 1
    page.select_option("#session-filter", "all")

    # Archived from its screen: out of the list, until the Archived filter is chosen.
    row.click()
    page.click("#archive-session")
    until(lambda: page.text_content("#archive-session") == "Unarchive", what="archived")
    page.goto(f"{d.origin}/#/host/{host_id}")
    page.wait_for_selector(f'a.session[data-session="{live}"]', timeout=TIMEOUT)
    assert row.count() == 0
    page.select_option("#session-filter", "archived")
    row.wait_for(timeout=TIMEOUT)

    # Deleted, after a confirmation: gone from the host, its history with it.
    row.click()
    page.click("#delete-session")
    page.click("#confirm-delete")
    page.wait_for_selector("#session-filter", timeout=TIMEOUT)
    page.select_option("#session-filter", "archived")
    until(lambda: row.count() == 0, what="the deleted session gone")
    assert done not in [s["id"] for s in listed(d.host_home, "sessions")]
    # A running session is not deleted: its screen offers no Delete.
    page.goto(f"{d.origin}/#/host/{host_id}/session/{live}")
    page.wait_for_selector("#archive-session", timeout=TIMEOUT)
    assert page.locator("#delete-session").count() == 0
    assert not page.errors  # type: ignore[attr-defined]


def test_a_terminal_whose_program_the_host_restart_ended_says_so_and_starts_again(
    page: Any, web_deployment: Deployment,
) -> None:
    d = web_deployment
    pair_page(page, d)
    session = open_new_terminal(page, d)

    d.host.stop(signal.SIGKILL)  # a crash: the host learns on restart that the program is gone
    d.host = start_host(d.host_home, f"ws://127.0.0.1:{d.relay_port}", d.workspace)
    page.locator("#program-gone").wait_for(timeout=30_000)
    assert "the host restarted" in page.text_content("#program-gone")
    page.click("#run-again")
    until(lambda: session not in page.evaluate("location.hash"), what="the new session's screen",
          seen=lambda: page.evaluate("location.hash"))
    again = page.evaluate("location.hash").rsplit("/", 1)[1]
    (new,) = [s for s in listed(d.host_home, "sessions") if s["id"] == again]
    assert new["command"] == ["bash", "--norc", "-i"] and new["status"] == "running"
    type_line(page, "echo again-$((7*6))")
    wait_terminal(page, "again-42")
    assert not page.errors  # type: ignore[attr-defined]
