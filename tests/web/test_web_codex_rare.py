"""[8]: items and notices the real Codex 0.169 sends only with features its user turns on, each
made by a scripted model and checked in `sessions events --json` and on the page: `sleep` (the
model's clock.sleep tool, `[features.sleep_tool] mode = "always_on"`), `collabAgentToolCall` (the
multi_agent_v1 tools offered by default), `model/rerouted` (the model server answers with another
model than asked, as its `openai-model` header says), `hookPrompt` (a Stop hook of the host user's,
trusted, that blocks once with a reason) and `subAgentActivity` (`[features] multi_agent_v2`); and
the notices a user's own config makes Codex send: `configWarning` (`[features] multi_agent`) and
`deprecationNotice` (`[features] web_search_request`); and the server request `currentTime/read`
(`[features.current_time_reminder]` with `clock_source = "external"`), which tether refuses.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agents.codex.conftest import FAKE_KEY_ENV
from tether.agents.codex import AppServer, find_codex

from .pages import until
from .test_web_codex import (
    CODEX_TIMEOUT,
    CodexWebDeployment,
    cli_events,
    codex_wrapper,
    deploy_codex,
    start_on_page,
    status,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SLEEP_AND_HELP = [
    {"call": {"name": "sleep", "namespace": "clock", "arguments": {"duration_ms": 300}}},
    {"text": "Rested.", "headers": {"openai-model": "gpt-5.4-mini"}},
    {"call": {"name": "spawn_agent", "namespace": "multi_agent_v1", "arguments": {"message": "say hi"}}},
    {"text": "ok"}, {"text": "ok"}, {"text": "ok"},
]


def other_items(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["data"]["type"]: e["data"] for e in events
            if e["type"] == "item.completed" and e["data"]["kind"] == "other"}


def card(page: Any, type_: str) -> Any:
    return page.locator(f'.card.other[data-type="{type_}"]')


@pytest.fixture
def sleepy() -> Iterator[CodexWebDeployment]:
    with deploy_codex(SLEEP_AND_HELP, '\n[features.sleep_tool]\nenabled = true\nmode = "always_on"\n') as d:
        yield d


def test_sleep_a_helper_agent_and_a_rerouted_model_are_shown(
    page: Any, sleepy: CodexWebDeployment, cli_home: Path,
) -> None:
    session = start_on_page(page, sleepy, cli_home, "wait a moment")
    page.locator(".card.agent", has_text="Rested.").wait_for(timeout=CODEX_TIMEOUT)
    until(lambda: status(page) == "idle", timeout=CODEX_TIMEOUT / 1000, what="the first turn to end")
    page.fill("#composer", "ask a helper")
    page.click("#send")
    card(page, "collabAgentToolCall").wait_for(timeout=CODEX_TIMEOUT)
    until(lambda: status(page) == "idle", timeout=CODEX_TIMEOUT / 1000, what="the second turn to end")

    events = cli_events(cli_home, session)
    items = other_items(events)
    assert (items["sleep"]["title"], items["sleep"]["summary"]) == ("waiting", "for 0.3 s")
    assert items["collabAgentToolCall"]["title"] == "agent tool call"
    assert "spawnAgent" in items["collabAgentToolCall"]["summary"]
    (rerouted,) = [e["data"] for e in events if e["type"] == "agent.notice" and e["data"]["source"] == "model/rerouted"]
    assert rerouted["level"] == "warning" and "gpt-5.4-mini" in rerouted["message"]

    assert "for 0.3 s" in card(page, "sleep").text_content()
    assert "waiting" in card(page, "sleep").locator("strong").text_content()
    notice = page.locator('.card.notice[data-level="warning"]', has_text="gpt-5.4-mini")
    assert notice.count() == 1
    assert not page.errors  # type: ignore[attr-defined]


HOOK = """import json, sys
event = json.load(sys.stdin)
if not event.get("stop_hook_active"):
    print(json.dumps({"decision": "block", "reason": "Run the tests before stopping."}))
"""
HOOKED = [
    {"text": "First answer."},
    {"text": "Tests pass."},
    {"call": {"name": "spawn_agent", "namespace": "collaboration",
              "arguments": {"task_name": "helper", "message": "say hi", "fork_turns": "none"}}},
    {"text": "ok"}, {"text": "ok"}, {"text": "ok"},
]


def trust_hooks(d: CodexWebDeployment) -> None:
    """What the Codex app does when its user trusts a hook: hooks/list, then the hash written to
    hooks.state (the host user's own CODEX_HOME, before the host runs a session in it)."""

    async def run() -> None:
        server = await AppServer.start(find_codex(codex_wrapper()), codex_home=d.host_home / "codex-home",
                                       cwd=d.workspace, env={FAKE_KEY_ENV: "dummy-key"})
        try:
            # The desktop app's own calls, which tether's client does not pass on (its allow-list).
            listed = await server._call("hooks/list", {"cwds": [str(d.workspace)]})
            state = {h["key"]: {"trusted_hash": h["currentHash"]}
                     for entry in listed["data"] for h in entry["hooks"]}
            assert state, listed
            await server._call("config/batchWrite", {"edits": [{"keyPath": "hooks.state", "mergeStrategy": "upsert",
                                                                "value": state}], "reloadUserConfig": True})
        finally:
            await server.close()

    error: list[BaseException] = []
    worker = threading.Thread(target=lambda: _run(run, error))
    worker.start()
    worker.join()
    if error:
        raise error[0]


def _run(coro: Any, error: list[BaseException]) -> None:
    try:
        asyncio.run(coro())
    except BaseException as exc:  # re-raised in the test's thread
        error.append(exc)


@pytest.fixture
def hooked(tmp_path: Path) -> Iterator[CodexWebDeployment]:
    script = tmp_path / "stop_hook.py"
    script.write_text(HOOK)
    config = ("\n[[hooks.Stop]]\n[[hooks.Stop.hooks]]\ntype = \"command\"\n"
              f"command = \"python3 {script}\"\ntimeout = 10\n")
    with deploy_codex(HOOKED, config, features="multi_agent_v2 = true") as d:
        trust_hooks(d)
        yield d


def test_a_hook_prompt_and_a_subagent_are_shown(page: Any, hooked: CodexWebDeployment, cli_home: Path) -> None:
    session = start_on_page(page, hooked, cli_home, "answer me")
    page.locator(".card.agent", has_text="Tests pass.").wait_for(timeout=CODEX_TIMEOUT)
    until(lambda: status(page) == "idle", timeout=CODEX_TIMEOUT / 1000, what="the hooked turn to end")
    page.fill("#composer", "ask a helper")
    page.click("#send")
    card(page, "subAgentActivity").first.wait_for(timeout=CODEX_TIMEOUT)

    events = cli_events(cli_home, session)
    items = other_items(events)
    assert (items["hookPrompt"]["title"], items["hookPrompt"]["summary"]) == ("hook", "Run the tests before stopping.")
    helpers = [e["data"]["summary"] for e in events if e["type"] == "item.completed"
               and e["data"].get("type") == "subAgentActivity"]
    assert items["subAgentActivity"]["title"] == "subagent" and "/root/helper: started" in helpers, helpers
    assert "Run the tests before stopping." in card(page, "hookPrompt").first.text_content()  # once a turn
    assert not page.errors  # type: ignore[attr-defined]


WIDEN = [
    {"call": {"name": "request_permissions", "arguments": {
        "permissions": {"network": {"enabled": True}}, "reason": "to fetch the paint catalogue"}}},
    {"text": "Without the network, then."},
]


@pytest.fixture
def widening() -> Iterator[CodexWebDeployment]:
    with deploy_codex(WIDEN, features="request_permissions_tool = true") as d:
        yield d


def test_a_request_to_widen_the_sandbox_is_refused_and_said(
    page: Any, widening: CodexWebDeployment, cli_home: Path,
) -> None:
    """`item/permissions/requestApproval` (the model's request_permissions tool): refused, on
    purpose — the sandbox is the host owner's policy, not widened from a phone — shown as
    "refused: …", and the turn goes on with nothing granted."""
    session = start_on_page(page, widening, cli_home, "get the catalogue")
    page.locator(".card.agent", has_text="Without the network, then.").wait_for(timeout=CODEX_TIMEOUT)
    refused = page.locator(".card.notice", has_text="item/permissions/requestApproval")
    assert refused.count() == 1 and "not widened from a device" in (refused.text_content() or "")
    events = cli_events(cli_home, session)
    (said,) = [e["data"] for e in events if e["type"] == "agent.notice"
               and e["data"]["source"] == "item/permissions/requestApproval"]
    assert said["message"].startswith("refused: ") and "to fetch the paint catalogue" in said["message"]
    assert not [e for e in events if e["type"] == "approval.requested"]  # nobody was asked
    (done,) = [e["data"] for e in events if e["type"] == "turn.completed"]
    assert done["status"] == "completed"
    told = json.dumps(widening.model_requests()[-1]["input"])
    assert '\\"network\\":null' in told  # Codex told the model nothing was granted
    assert not page.errors  # type: ignore[attr-defined]


@pytest.fixture
def deprecated() -> Iterator[CodexWebDeployment]:
    with deploy_codex([{"text": "Configured."}, {"text": "Again."}],
                      features="multi_agent = true\nweb_search_request = true") as d:
        yield d


def test_config_warnings_and_deprecation_notices_are_shown_once(
    page: Any, deprecated: CodexWebDeployment, cli_home: Path,
) -> None:
    """`configWarning` and `deprecationNotice` (what the host user's CODEX_HOME config makes Codex
    say at its start; it repeats the first as a `warning`): a warning each, once per session."""
    session = start_on_page(page, deprecated, cli_home, "hello")
    page.locator(".card.agent", has_text="Configured.").wait_for(timeout=CODEX_TIMEOUT)
    until(lambda: status(page) == "idle", timeout=CODEX_TIMEOUT / 1000, what="the first turn to end")
    page.fill("#composer", "again")
    page.click("#send")
    page.locator(".card.agent", has_text="Again.").wait_for(timeout=CODEX_TIMEOUT)
    until(lambda: status(page) == "idle", timeout=CODEX_TIMEOUT / 1000, what="the second turn to end")

    events = cli_events(cli_home, session)
    said = {e["data"]["source"]: e["data"] for e in events if e["type"] == "agent.notice"}
    assert len(said) == len([e for e in events if e["type"] == "agent.notice"])  # each once
    config, deprecation = said["configWarning"], said["deprecationNotice"]
    assert config["level"] == deprecation["level"] == "warning"
    assert config["message"].startswith("`[features].multi_agent` is deprecated.")
    assert deprecation["message"].startswith("`[features].web_search_request` is deprecated")
    assert "Set `web_search` to" in deprecation["message"]  # its details
    for notice in (config, deprecation):
        shown = page.locator('.card.notice[data-level="warning"]', has_text=notice["message"][:40])
        assert shown.count() == 1 and shown.text_content() == f"⚠ {notice['message']}"
    assert not page.errors  # type: ignore[attr-defined]


@pytest.fixture
def external_clock() -> Iterator[CodexWebDeployment]:
    config = '\n[features.current_time_reminder]\nenabled = true\nclock_source = "external"\n'
    with deploy_codex([{"text": "What time is it?"}], config) as d:
        yield d


def test_a_request_for_the_clients_clock_is_answered_with_the_host_s(
    page: Any, external_clock: CodexWebDeployment, cli_home: Path,
) -> None:
    """`currentTime/read` (Codex asks its client for the time when its user's config says the clock
    is external): the app-server client answers at once with the host's clock, nobody is asked and
    nothing is refused, and the turn goes on to the model. (Refused, Codex 0.169 fails the turn,
    "Fatal error: failed to read current time", before asking the model.)"""
    session = start_on_page(page, external_clock, cli_home, "what time is it?")
    page.locator(".card.agent", has_text="What time is it?").wait_for(timeout=CODEX_TIMEOUT)
    assert page.locator(".card.notice", has_text="currentTime/read").count() == 0

    events = cli_events(cli_home, session)
    assert not [e for e in events if e["type"] == "agent.notice" and e["data"].get("source") == "currentTime/read"]
    (done,) = [e["data"] for e in events if e["type"] == "turn.completed"]
    assert done["status"] == "completed"
    assert not [e for e in events if e["type"] == "approval.requested"]  # nobody was asked
    assert len(external_clock.model_requests()) == 1  # the model was asked
    assert not page.errors  # type: ignore[attr-defined]
