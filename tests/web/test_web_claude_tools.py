"""More of Claude Code on the phone ([8] item 3): real relay and host processes, the real Claude
Code CLI, the scripted Messages-API model as a process.

An MCP server's tool (tests/support/fake_mcp.py, named in ``[agents.claude] mcp_config``) is asked
about on its tool card and approved; a sub-agent's command is asked about and approved; both
results are on their cards and in ``tether sessions events --json``. And with the model server
unreachable, the page shows Claude Code's retries as "reconnecting (attempt n)", live, then the
turn's failure.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.scripted_model import Turn

from .conftest import REPO, ScriptedDeployment
from .pages import until
from .test_web_claude import TIMEOUT, deploy_claude, tool
from .test_web_codex import cli_events, start_on_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCRIPT: list[Turn] = [
    tool("mcp__notes__lookup", query="blue"),
    tool("Agent", description="look around", prompt="list the files", subagent_type="general-purpose"),
    {"bash": {"command": "echo sub-agent-was-here"}},  # the sub-agent's first request
    {"text": "found the files"},  # the sub-agent's report
    {"text": "Notes and files found."},
]


@pytest.fixture
def tools_deployment(tmp_path: Path) -> Iterator[ScriptedDeployment]:
    mcp = tmp_path / "mcp.json"
    mcp.write_text(json.dumps({"mcpServers": {"notes": {
        "command": sys.executable, "args": ["-m", "tests.support.fake_mcp"], "env": {"PYTHONPATH": str(REPO)}}}}))
    with deploy_claude(SCRIPT, f'mcp_config = "{mcp}"\n') as d:
        yield d


def approve_next(page: Any, label: str) -> Any:
    waiting = page.locator('section.card.approval[data-resolved=""]')
    waiting.wait_for(timeout=TIMEOUT)
    card = page.locator(f'section.card.approval[data-approval="{waiting.get_attribute("data-approval")}"]')
    assert card.get_attribute("aria-label") == label
    shown = card.text_content()
    card.locator("button.approve").click()
    until(lambda: card.get_attribute("data-resolved") == "approve", what="the card answered")
    return shown


def test_an_mcp_tool_and_a_sub_agents_command_on_the_phone(
    page: Any, tools_deployment: ScriptedDeployment, cli_home: Path,
) -> None:
    session = start_on_page(page, tools_deployment, cli_home, "find notes and files", agent="claude")
    shown = approve_next(page, "Approval: use a tool")
    assert "notes · lookup" in shown and '"query": "blue"' in shown
    shown = approve_next(page, "Approval: run a command")
    assert "echo sub-agent-was-here" in shown
    page.locator(".card.agent", has_text="Notes and files found.").wait_for(timeout=TIMEOUT)

    lookup = page.locator('.card.tool[data-tool="lookup"]')
    lookup.locator("summary").click()
    assert lookup.locator("pre.output").text_content() == "3 notes about blue"
    agent = page.locator('.card.tool[data-tool="Agent"]')
    assert agent.locator(".tool-input").text_content() == "look around\nlist the files"
    assert page.locator(".card.command", has_text="echo sub-agent-was-here").locator(".output").text_content() \
        == "sub-agent-was-here"
    assert page.locator(".card.agent", has_text="found the files").count() == 0  # only in the report

    done = [e["data"] for e in cli_events(cli_home, session) if e["type"] == "item.completed"]
    calls = {d["tool"]: d for d in done if d["kind"] == "tool_call"}
    assert calls["lookup"]["server"] == "notes" and calls["lookup"]["output"] == "3 notes about blue"
    assert "found the files" in calls["Agent"]["output"]
    assert not page.errors  # type: ignore[attr-defined]


@pytest.fixture
def unreachable_deployment() -> Iterator[ScriptedDeployment]:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}", "CLAUDE_CODE_MAX_RETRIES": "2"}
    with deploy_claude([], env=env) as d:
        yield d


def test_retries_while_the_model_server_is_away_show_live_then_the_failure(
    page: Any, unreachable_deployment: ScriptedDeployment, cli_home: Path,
) -> None:
    session = start_on_page(page, unreachable_deployment, cli_home, "hello", agent="claude")
    page.locator("#session-retrying", has_text="reconnecting (attempt 1)").wait_for(timeout=TIMEOUT)
    page.locator(".card.retrying", has_text="Reconnecting (attempt").wait_for(timeout=TIMEOUT)
    page.locator(".turn-end", has_text="Turn failed").wait_for(timeout=TIMEOUT)
    assert page.locator("#session-retrying").count() == 0
    events = cli_events(cli_home, session)
    assert [e["data"]["attempt"] for e in events if e["type"] == "turn.retrying"] == [1, 2]
    (ended,) = [e["data"] for e in events if e["type"] == "turn.completed"]
    assert ended["status"] == "failed" and ended["error"]
    assert not page.errors  # type: ignore[attr-defined]
