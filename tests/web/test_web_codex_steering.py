"""Choosing the model and reasoning effort of the next turn from the phone ([8] item 2), and an item
(Codex's web search) shown as a tool call with its query: real relay
and host processes, the real Codex CLI, the scripted Responses-API model recording each request.

The composer's Model button lists what Codex itself offers (its ``model/list``); a model and an
effort chosen there go with the next prompt, and that turn's request to the model server carries
them (the first turn's did not). The CLI lists the same models and refuses one Codex does not offer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import tether, tether_json

from .pages import until
from .test_web_codex import CODEX_TIMEOUT, CodexWebDeployment, cli_events, deploy_codex, start_on_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The first response says how much of the account's rate limit is used, as OpenAI's server does in
# its headers (Codex then sends account/rateLimits/updated).
LIMIT = {"x-codex-primary-used-percent": "42", "x-codex-primary-window-minutes": "300"}
SCRIPT = [{"web_search": "tether relay protocol", "text": "first answer", "headers": LIMIT}, {"text": "second answer"}]


@pytest.fixture
def steering_deployment() -> Iterator[CodexWebDeployment]:
    with deploy_codex(SCRIPT) as d:
        yield d


def test_the_next_turn_runs_on_the_model_and_effort_chosen_on_the_phone(
    page: Any, steering_deployment: CodexWebDeployment, cli_home: Path
) -> None:
    d = steering_deployment
    session = start_on_page(page, d, cli_home, "one")
    page.locator(".card.agent", has_text="first answer").wait_for(timeout=CODEX_TIMEOUT)
    # What the model server said it used (15 tokens a response), in the session header.
    until(lambda: "15 tokens" in (page.text_content("#session-usage") or ""), what="the usage in the header")
    until(lambda: "limit 42% used" in (page.text_content("#session-usage") or ""), what="the rate limit in the header")
    # Codex's web search: a tool call, with its query.
    searched = page.locator('.card.tool[data-tool="web search"]')
    assert searched.locator("strong").text_content() == "web search"
    assert searched.locator(".tool-input").text_content() == "tether relay protocol"

    # What Codex offers, on the phone and in the CLI alike.
    listed = tether_json(cli_home, "sessions", "models", session, "--json")
    assert listed and all({"id", "name", "efforts"} <= set(m) for m in listed)
    other = next(m for m in listed if not m["default"] and "high" in m["efforts"])
    page.click("#turn-settings-toggle")
    until(lambda: page.locator("#model-select option").count() == len(listed) + 1, what="the models listed")
    page.select_option("#model-select", other["id"])
    until(lambda: page.locator("#effort-select option").count() == len(other["efforts"]) + 1, what="its efforts")
    page.select_option("#effort-select", "high")

    page.fill("#composer", "two")
    page.click("#send")
    page.locator(".card.agent", has_text="second answer").wait_for(timeout=CODEX_TIMEOUT)
    shown = page.locator(".card.user", has_text="two").locator(".turn-model").text_content()
    assert shown == f"on {other['id']} · high"

    first, second = d.model_requests()[:2]
    assert first["model"] == "mock-model" and second["model"] == other["id"]
    assert second["reasoning"]["effort"] == "high" and (first.get("reasoning") or {}).get("effort") != "high"
    events = cli_events(cli_home, session)
    started = [e["data"] for e in events if e["type"] == "turn.started"]
    (chosen,) = [s for s in started if "model" in s]
    # The web search and the usage, as the CLI reads them.
    (search,) = [e["data"] for e in events if e["type"] == "item.completed" and e["data"]["kind"] == "tool_call"]
    assert (search["tool"], search["input"], search["status"]) == ("web search", "tether relay protocol", "completed")
    usage = [e["data"] for e in events if e["type"] == "agent.usage"]
    assert [u["total_tokens"] for u in usage if u["total_tokens"] is not None][-1] == 30  # 15 a response
    (limit,) = [u["rate_limit"] for u in usage if u["rate_limit"] is not None]
    assert (limit["used_percent"], limit["window_minutes"]) == (42, 300)
    assert (chosen["input"], chosen["model"], chosen["effort"]) == ("two", other["id"], "high")

    # A model Codex does not offer, or an effort the model lacks: refused before anything runs.
    refused = tether(cli_home, "sessions", "send", session, "three", "--model", "no-such-model", check=False)
    assert refused.returncode != 0 and "offers no model 'no-such-model'" in refused.stderr
    refused = tether(cli_home, "sessions", "send", session, "three", "--effort", "astronomical", check=False)
    assert refused.returncode != 0 and "'astronomical' is not one of" in refused.stderr
    assert len(d.model_requests()) == 2
    assert json.dumps(listed)  # the CLI's --json is JSON
    assert not page.errors  # type: ignore[attr-defined]
