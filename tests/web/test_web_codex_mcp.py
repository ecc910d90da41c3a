"""An MCP server's tool and form through Codex, on the phone ([8] item 1): real relay and host
processes, the real Codex CLI with tests/support/fake_mcp.py as its MCP server, the scripted
Responses-API model.

The model calls the server's tool; Codex asks whether to allow it, and the page shows an approval
card naming the server and tool with the arguments; approved there, the server asks for a form
(a shade to choose, a number of coats), which the page shows as a question card; answered there,
the server gets the values typed, and the tool's result is on its card. Forms tether cannot put (a
link to open, a field of several choices) are declined and said ("refused: …"); a nested form Codex
refuses itself, and a tool allowed for the session is not asked about again. ``tether sessions
events --json`` shows the same.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO
from .pages import until
from .test_web_codex import CODEX_TIMEOUT, CodexWebDeployment, card_kinds, cli_events, deploy_codex, start_on_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCRIPT = [
    {"call": {"name": "lookup", "namespace": "mcp__notes", "arguments": {"query": "ask"}}},
    {"text": "Painting."},
    # Turn 2: the server asks for a link to be opened instead of a form: refused, said, the turn goes on.
    {"call": {"name": "lookup", "namespace": "mcp__notes", "arguments": {"query": "link"}}},
    {"text": "No sign-in, then."},
    # Turn 3: a form with a field of several choices: declined and said; the tool is allowed for the
    # session. Turn 4: a nested form, which Codex refuses itself; the tool is not asked about again.
    {"call": {"name": "lookup", "namespace": "mcp__notes", "arguments": {"query": "walls"}}},
    {"text": "No walls, then."},
    {"call": {"name": "lookup", "namespace": "mcp__notes", "arguments": {"query": "nested"}}},
    {"text": "No form, then."},
]
MCP_CONFIG = f"""
[mcp_servers.notes]
command = {json.dumps(sys.executable)}
args = ["-m", "tests.support.fake_mcp"]
env = {{ PYTHONPATH = {json.dumps(str(REPO))} }}
"""


def agent_says(page: Any, text: str, cli_home: Path, session: str, d: CodexWebDeployment) -> None:
    """Wait for the agent's card with ``text``; if it never comes, say where the session stood
    (its cards on the page, its last events on the host, how many requests the scripted model
    had of its script), which a timeout alone does not."""
    def stood() -> dict[str, Any]:
        shown = ("kind", "decision", "status", "message", "input")
        events = [(e["type"], {k: v for k, v in (e.get("data") or {}).items() if k in shown})
                  for e in cli_events(cli_home, session)[-15:]]
        return {"cards": card_kinds(page), "last events": events,
                "model requests": f"{len(d.model_requests())} for a script of {len(SCRIPT)}"}

    until(lambda: page.locator(".card.agent", has_text=text).first.is_visible(), timeout=CODEX_TIMEOUT / 1000,
          what=f"the agent's card saying {text!r}", seen=stood)


@pytest.fixture
def mcp_deployment() -> Iterator[CodexWebDeployment]:
    with deploy_codex(SCRIPT, MCP_CONFIG) as d:
        yield d


def test_an_mcp_tool_and_its_form_are_answered_on_the_phone(
    page: Any, mcp_deployment: CodexWebDeployment, cli_home: Path,
) -> None:
    session = start_on_page(page, mcp_deployment, cli_home, "paint the wall")

    allow = page.locator('section.card.approval[data-resolved=""]')
    allow.wait_for(timeout=CODEX_TIMEOUT)
    assert allow.get_attribute("aria-label") == "Approval: use a tool"
    assert allow.locator("strong.tool").text_content() == "notes · lookup"
    assert json.loads(allow.locator("pre.tool-input").text_content()) == {"query": "ask"}
    assert 'run tool "lookup"' in allow.locator(".reason").text_content()
    allow.locator("button.approve").click()

    form = page.locator('form.card.question[data-resolved=""]')
    form.wait_for(timeout=CODEX_TIMEOUT)
    assert form.locator("legend").all_text_contents() == ["Coats", "Shade"]
    form.locator('input[type=radio][value="navy"]').check()
    form.locator('fieldset[data-part="coats"] input.own').fill("2")
    form.locator("button.answer").click()

    agent_says(page, "Painting.", cli_home, session, mcp_deployment)
    tool = page.locator('.card.tool[data-tool="lookup"]')
    assert tool.locator("strong").text_content() == "notes · lookup"
    tool.locator("details.tool-output summary").click()
    result = tool.locator("details.tool-output pre.output").text_content()
    assert json.loads(result.removeprefix("the form came back: ")) == {
        "action": "accept", "content": {"shade": "navy", "coats": 2}}

    events = cli_events(cli_home, session)
    asked = [e["data"]["kind"] for e in events if e["type"] == "approval.requested"]
    assert asked == ["tool", "question"]
    (called,) = [e["data"] for e in events if e["type"] == "item.completed" and e["data"]["kind"] == "tool_call"]
    assert (called["server"], called["tool"], called["status"]) == ("notes", "lookup", "completed")

    page.fill("#composer", "sign in first")
    page.click("#send")
    allow.wait_for(timeout=CODEX_TIMEOUT)
    allow.locator("button.approve").click()
    agent_says(page, "No sign-in, then.", cli_home, session, mcp_deployment)
    refused = page.locator(".card.notice", has_text="https://paint.example/login")
    assert refused.count() == 1 and "refused:" in (refused.text_content() or "")
    (said,) = [e["data"] for e in cli_events(cli_home, session) if e["type"] == "agent.notice"
               and e["data"]["source"] == "mcpServer/elicitation/request"]
    assert said["message"].startswith("refused: ") and "not a link to open" in said["message"]

    page.fill("#composer", "choose the walls")
    page.click("#send")
    allow.wait_for(timeout=CODEX_TIMEOUT)
    allow.locator("button.approve-session").click()
    agent_says(page, "No walls, then.", cli_home, session, mcp_deployment)
    several = page.locator(".card.notice", has_text="walls.title: Walls")
    assert several.count() == 1 and (several.text_content() or "").startswith("⚠ refused: ")
    assert page.locator(".card.question").count() == 1  # only turn 1's: nobody was asked

    page.fill("#composer", "measure the wall")
    page.click("#send")
    agent_says(page, "No form, then.", cli_home, session, mcp_deployment)
    assert page.locator('section.card.approval[data-resolved=""]').count() == 0  # allowed for the session
    nested = page.locator('.card.tool[data-tool="lookup"]').last
    nested.locator("details.tool-output summary").click()
    came_back = json.loads((nested.locator("pre.output").text_content() or "").removeprefix("the form came back: "))
    assert came_back["action"] == "error" and came_back["error"]["code"] == -32602

    events = cli_events(cli_home, session)
    asked = [e["data"] for e in events if e["type"] == "approval.requested"]
    assert [a["kind"] for a in asked] == ["tool", "question", "tool", "tool"]
    decided = [e["data"]["decision"] for e in events if e["type"] == "approval.resolved"]
    assert decided == ["approve", "answered", "approve", "approve_for_session"]
    refused = [e["data"]["message"] for e in events if e["type"] == "agent.notice"
               and e["data"]["source"] == "mcpServer/elicitation/request"]
    assert len(refused) == 2 and "walls.title: Walls" in refused[1]  # the link's and this one; none for nested
    outputs = [e["data"]["output"] for e in events
               if e["type"] == "item.completed" and e["data"]["kind"] == "tool_call"]
    assert outputs[1:3] == ['the form came back: {"action": "decline"}'] * 2
    assert not page.errors  # type: ignore[attr-defined]
