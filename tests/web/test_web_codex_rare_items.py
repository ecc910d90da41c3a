"""[8]: the Codex items tether sessions never ask for, made by the real Codex 0.169 with a scripted
model and checked in ``sessions events --json`` and on the page (a phone viewport) — the same
setups as tests/agents/codex/test_codex_rare_items.py, through real relay and host processes:

- ``dynamicToolCall`` and its server request ``item/tool/call``: the host's codex is the test proxy
  (tests/agents/codex/appserver_proxy.py) in front of the real app-server, which declares a dynamic
  tool in ``thread/start``; the model calls it, tether refuses Codex's ``item/tool/call`` ("refused:
  …"), the tool call's card says it failed, and the turn goes on.
- ``functionCallOutput``: the same proxy hands a tool's output over in ``turn/start``; its "tool
  output" card shows the tool and the output, and the next prompt from the page is an ordinary turn.
- ``imageGeneration``: the host's CODEX_HOME has a fake ChatGPT login (tests/support/chatgpt_login.py)
  on the scripted model, which also answers the Images API; the "image generation" card shows the
  prompt and where Codex saved the picture, never the picture's base64.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agents.codex.appserver_proxy import write_proxy
from tests.agents.codex.test_codex_rare_items import PAINT_TOOL, tool_outputs
from tests.procs import remove, short_home
from tests.support.chatgpt_login import chatgpt_login, refresh_url
from tests.support.fake_responses import FakeResponses
from tether.agents.codex import find_codex

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
from .test_web_codex_rare import card

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def proxied(request: pytest.FixtureRequest) -> Iterator[tuple[CodexWebDeployment, Path]]:
    """The host's codex: the test proxy in front of the real one; the test gives the proxy's rules
    and the model's script (indirect parameters). (The deployment, the log of the requests the
    proxy changed.)"""
    rules, script = request.param
    where = short_home("tp")  # outside the host's home, which Codex's sandbox hides
    try:
        proxy, changed = write_proxy(where, find_codex(codex_wrapper()).path, rules)
        with deploy_codex(script, binary=proxy) as d:
            yield d, changed
    finally:
        remove(where)


def changed_requests(changed: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in changed.read_text().splitlines()] if changed.exists() else []


def completed(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["type"] == "item.completed" and e["data"]["kind"] == kind]


DYNAMIC = [{"call": {"name": "paint_lookup", "arguments": {"colour": "teal"}}}, {"text": "No catalogue, then."}]


@pytest.mark.parametrize("proxied", [([{"method": "thread/start", "set": {"dynamicTools": [PAINT_TOOL]}}], DYNAMIC)],
                         ids=["declared"], indirect=True)
def test_a_dynamic_tool_call_is_refused_and_its_card_says_it_failed(
    page: Any, proxied: tuple[CodexWebDeployment, Path], cli_home: Path,
) -> None:
    d, changed = proxied
    session = start_on_page(page, d, cli_home, "look teal up")
    page.locator(".card.agent", has_text="No catalogue, then.").wait_for(timeout=CODEX_TIMEOUT)
    until(lambda: status(page) == "idle", timeout=CODEX_TIMEOUT / 1000, what="the turn to end")
    # The proxy declared the tool, and the model was offered it: Codex's own doing, not the script's.
    [sent] = changed_requests(changed)
    assert sent["method"] == "thread/start" and sent["params"]["dynamicTools"] == [PAINT_TOOL]
    assert "paint_lookup" in [t.get("name") for t in d.model_requests()[0]["tools"]]

    # On the page: the tool call, failed, with its name and arguments; Codex's result behind "Result".
    tool = page.locator('.card.tool[data-tool="paint_lookup"]')
    assert tool.count() == 1 and tool.get_attribute("data-status") == "failed"
    assert tool.locator("strong").text_content() == "paint_lookup"
    assert tool.locator(".badge").text_content() == "failed"
    assert json.loads(tool.locator("pre.tool-input").text_content() or "") == {"colour": "teal"}
    tool.locator("details.tool-output summary").click()
    assert tool.locator("details.tool-output pre.output").text_content() == "dynamic tool request failed"
    # Codex's request to run it: refused at once, and said.
    refused = page.locator('.card.notice[data-level="warning"]', has_text="item/tool/call")
    assert refused.count() == 1
    said = refused.text_content() or ""
    assert said.startswith("⚠ refused: Codex asked item/tool/call (") and "tool: paint_lookup" in said
    assert said.endswith("; tether registers no dynamic tools")
    assert page.locator("section.card.approval").count() == 0  # nobody was asked

    events = cli_events(cli_home, session)
    [call] = completed(events, "tool_call")
    assert (call["tool"], call["server"], call["status"]) == ("paint_lookup", None, "failed")
    assert call["output"] == "dynamic tool request failed"
    [notice] = [e["data"] for e in events if e["type"] == "agent.notice" and e["data"]["source"] == "item/tool/call"]
    assert notice["level"] == "warning" and said == f"⚠ {notice['message']}"
    assert not [e for e in events if e["type"] == "approval.requested"]
    assert [e["data"]["status"] for e in events if e["type"] == "turn.completed"] == ["completed"]
    # Codex told the model the call failed; the model's answer ended the turn.
    assert list(tool_outputs(d.model_requests()[1]).values()) == ["dynamic tool request failed"]
    assert not page.errors  # type: ignore[attr-defined]


HANDED = {"name": "paint_lookup", "output": "teal is #008080"}


HAND_OVER = [{"method": "turn/start", "when_text": "hand the lookup over", "set": {"input": [], "toolOutput": HANDED}}]


@pytest.mark.parametrize("proxied", [(HAND_OVER, [{"text": "Teal it is."}, {"text": "Still here."}])],
                         ids=["handed"], indirect=True)
def test_a_tool_output_handed_over_is_a_card_and_the_next_prompt_a_turn(
    page: Any, proxied: tuple[CodexWebDeployment, Path], cli_home: Path,
) -> None:
    d, changed = proxied
    session = start_on_page(page, d, cli_home, "hand the lookup over")
    page.locator(".card.agent", has_text="Teal it is.").wait_for(timeout=CODEX_TIMEOUT)
    until(lambda: status(page) == "idle", timeout=CODEX_TIMEOUT / 1000, what="the first turn to end")
    [sent] = changed_requests(changed)
    assert sent["method"] == "turn/start" and sent["params"]["toolOutput"] == HANDED

    output = card(page, "functionCallOutput")
    assert output.count() == 1 and output.get_attribute("data-status") == "completed"
    assert output.locator("strong").text_content() == "tool output"
    summary = output.locator("p.summary").text_content() or ""
    assert "name: paint_lookup" in summary and "output: teal is #008080" in summary

    # The next prompt from the page: an ordinary turn, with the output in the model's history.
    page.fill("#composer", "and now?")
    page.click("#send")
    page.locator(".card.agent", has_text="Still here.").wait_for(timeout=CODEX_TIMEOUT)
    until(lambda: status(page) == "idle", timeout=CODEX_TIMEOUT / 1000, what="the second turn to end")
    assert card(page, "functionCallOutput").count() == 1
    later = json.dumps(d.model_requests()[-1]["input"])
    assert "and now?" in later and "teal is #008080" in later

    events = cli_events(cli_home, session)
    [item] = completed(events, "other")
    assert (item["type"], item["title"], item["summary"]) == ("functionCallOutput", "tool output", summary)
    assert [m["text"] for m in completed(events, "agent_message")] == ["Teal it is.", "Still here."]
    assert [e["data"]["status"] for e in events if e["type"] == "turn.completed"] == ["completed", "completed"]
    assert not page.errors  # type: ignore[attr-defined]


@pytest.fixture
def logged_in() -> Iterator[CodexWebDeployment]:
    def login(home: Path, model_url: str) -> dict[str, str]:
        chatgpt_login(home, model_url)
        return refresh_url(model_url)  # were Codex to refresh the login: the scripted server, not OpenAI

    script = [{"call": {"name": "imagegen", "namespace": "image_gen", "arguments": {"prompt": "a teal square"}}},
              {"text": "Here is your square."}]
    with deploy_codex(script, write_home=login) as d:
        yield d


def test_an_image_generation_shows_its_prompt_and_where_the_picture_is(
    page: Any, logged_in: CodexWebDeployment, cli_home: Path,
) -> None:
    d = logged_in
    session = start_on_page(page, d, cli_home, "draw a teal square")
    page.locator(".card.agent", has_text="Here is your square.").wait_for(timeout=CODEX_TIMEOUT)
    until(lambda: status(page) == "idle", timeout=CODEX_TIMEOUT / 1000, what="the turn to end")
    assert "image_gen" in [t.get("name") for t in d.model_requests()[0]["tools"]]
    [saved] = (d.host_home / "codex-home" / "generated_images").rglob("*.png")
    picture = FakeResponses().image  # what the scripted server answered the Images API with
    assert saved.read_bytes() == picture

    image = card(page, "imageGeneration")
    assert image.count() == 1 and image.get_attribute("data-status") == "completed"
    assert image.locator("strong").text_content() == "image generation"
    assert image.locator("p.summary").text_content() == f"a teal square; saved as {saved}"
    assert base64.b64encode(picture).decode()[:12] not in (page.text_content("#cards") or "")

    events = cli_events(cli_home, session)
    [item] = completed(events, "other")
    assert (item["type"], item["title"], item["summary"]) == (
        "imageGeneration", "image generation", f"a teal square; saved as {saved}")
    assert [e["data"]["status"] for e in events if e["type"] == "turn.completed"] == ["completed"]
    # The model got the picture back as the tool's output.
    [returned] = tool_outputs(d.model_requests()[1]).values()
    assert returned[0]["image_url"] == "data:image/png;base64," + base64.b64encode(picture).decode()
    assert not page.errors  # type: ignore[attr-defined]

