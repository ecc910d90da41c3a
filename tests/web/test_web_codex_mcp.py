"""An MCP server's tool and form through Codex, on the phone ([8] item 1): real relay and host
processes, the real Codex CLI with tests/support/fake_mcp.py as its MCP server, the scripted
Responses-API model.

The model calls the server's tool; Codex asks whether to allow it, and the page shows an approval
card naming the server and tool with the arguments; approved there, the server asks for a form
(a shade to choose, a number of coats), which the page shows as a question card; answered there,
the server gets the values typed, and the tool's result is on its card. ``tether sessions events
--json`` shows the same.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO
from .test_web_codex import CODEX_TIMEOUT, CodexWebDeployment, cli_events, deploy_codex, start_on_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCRIPT = [
    {"call": {"name": "lookup", "namespace": "mcp__notes", "arguments": {"query": "ask"}}},
    {"text": "Painting."},
    # Turn 2: the server asks for a link to be opened instead of a form: refused, said, the turn goes on.
    {"call": {"name": "lookup", "namespace": "mcp__notes", "arguments": {"query": "link"}}},
    {"text": "No sign-in, then."},
]
MCP_CONFIG = f"""
[mcp_servers.notes]
command = {json.dumps(sys.executable)}
args = ["-m", "tests.support.fake_mcp"]
env = {{ PYTHONPATH = {json.dumps(str(REPO))} }}
"""


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

    page.locator(".card.agent", has_text="Painting.").wait_for(timeout=CODEX_TIMEOUT)
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
    page.locator(".card.agent", has_text="No sign-in, then.").wait_for(timeout=CODEX_TIMEOUT)
    refused = page.locator(".card.notice", has_text="https://paint.example/login")
    assert refused.count() == 1 and "refused:" in (refused.text_content() or "")
    (said,) = [e["data"] for e in cli_events(cli_home, session) if e["type"] == "agent.notice"
               and e["data"]["source"] == "mcpServer/elicitation/request"]
    assert said["message"].startswith("refused: ") and "not a link to open" in said["message"]
    assert not page.errors  # type: ignore[attr-defined]
