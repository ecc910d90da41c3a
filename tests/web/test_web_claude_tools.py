"""More of Claude Code on the phone ([8] item 3): real relay and host processes, the real Claude
Code CLI, the scripted Messages-API model as a process.

An MCP server's tool (tests/support/fake_mcp.py, named in ``[agents.claude] mcp_config``) is asked
about on its tool card and approved, after the model's thinking; a sub-agent's command is asked about
and approved; both results are on their cards and in ``tether sessions events --json``. Then a web
search, a file written and the MCP server's form, each answered on the phone. And with the model server
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
    {"thinking": "the notes first", **tool("mcp__notes__lookup", query="blue")},
    tool("Agent", description="look around", prompt="list the files", subagent_type="general-purpose"),
    {"bash": {"command": "echo sub-agent-was-here"}},  # the sub-agent's first request
    {"text": "found the files"},  # the sub-agent's report
    {"text": "Notes and files found."},
    # Turn 2: a web search, a file written, and an MCP server's form.
    tool("WebSearch", query="blue paint"),
    {"text": "sky blue paint, https://paint.example/blue"},  # the search's own model call
    {"write": {"file_path": "PAINT", "content": "sky blue\n"}},
    tool("mcp__notes__lookup", query="ask"),
    {"text": "Painting."},
]


@pytest.fixture
def tools_deployment(tmp_path: Path) -> Iterator[ScriptedDeployment]:
    mcp = tmp_path / "mcp.json"
    mcp.write_text(json.dumps({"mcpServers": {"notes": {
        "command": sys.executable, "args": ["-m", "tests.support.fake_mcp"], "env": {"PYTHONPATH": str(REPO)}}}}))
    with deploy_claude(SCRIPT, f'mcp_config = "{mcp}"\n', script_for=written_in) as d:
        yield d


def written_in(script: list[Turn], workspace: Path) -> list[Turn]:
    """The script with its file write aimed at the deployment's workspace."""
    return [{**t, "write": {**t["write"], "file_path": str(workspace / "paint.txt")}} if "write" in t else t
            for t in script]


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
    ran = page.locator(".card.command", has_text="echo sub-agent-was-here")
    assert ran.locator(".output").text_content() == "sub-agent-was-here"
    assert ran.locator(".badge.exit").text_content() == "exit 0"
    assert page.locator(".card.agent", has_text="found the files").count() == 0  # only in the report

    done = [e["data"] for e in cli_events(cli_home, session) if e["type"] == "item.completed"]
    calls = {d["tool"]: d for d in done if d["kind"] == "tool_call"}
    assert calls["lookup"]["server"] == "notes" and calls["lookup"]["output"] == "3 notes about blue"
    assert "found the files" in calls["Agent"]["output"]
    assert page.locator(".card.reasoning p").text_content() == "the notes first"
    assert [d["text"] for d in done if d["kind"] == "reasoning"] == ["the notes first"]
    (command,) = [d for d in done if d["kind"] == "command"]
    assert (command["command"], command["output"], command["exit_code"]) == (
        "echo sub-agent-was-here", "sub-agent-was-here", 0)

    # Turn 2: each asked about on the phone.
    page.fill("#composer", "find a blue, write it down, ask the painter")
    page.click("#send")
    shown = approve_next(page, "Approval: use a tool")
    assert "WebSearch" in shown and "blue paint" in shown
    paint = tools_deployment.workspace / "paint.txt"
    shown = approve_next(page, "Approval: change a file")
    assert str(paint) in shown and "+sky blue" in shown
    approve_next(page, "Approval: use a tool")  # the MCP lookup
    form = page.locator('form.card.question[data-resolved=""]')
    form.wait_for(timeout=TIMEOUT)
    form.locator('input[type=radio][value="sky"]').check()
    form.locator('fieldset[data-part="coats"] input.own').fill("2")
    form.locator("button.answer").click()
    page.locator(".card.agent", has_text="Painting.").wait_for(timeout=TIMEOUT)

    assert paint.read_text() == "sky blue\n"
    assert page.locator(".card.file .badge").text_content() == "applied"
    search = page.locator('.card.tool[data-tool="WebSearch"]')
    assert search.locator(".tool-input").text_content() == "blue paint"
    done = [e["data"] for e in cli_events(cli_home, session) if e["type"] == "item.completed"]
    outputs = [d["output"] for d in done if d["kind"] == "tool_call" and d["tool"] == "lookup"]
    assert json.loads(outputs[-1].removeprefix("the form came back: ")) == {
        "action": "accept", "content": {"shade": "sky", "coats": 2}}
    assert [d["status"] for d in done if d["kind"] == "file_change"] == ["completed"]
    (searched,) = [d for d in done if d["kind"] == "tool_call" and d["tool"] == "WebSearch"]
    assert (searched["input"], searched["status"]) == ("blue paint", "completed")
    assert "sky blue paint" in searched["output"]
    assert not page.errors  # type: ignore[attr-defined]


@pytest.fixture
def unreachable_deployment() -> Iterator[ScriptedDeployment]:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Three retries: Claude Code's backoff keeps the session "reconnecting" for seconds, so a loaded
    # machine's page still draws that state before the failure (with two it once went by unseen).
    env = {"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}", "CLAUDE_CODE_MAX_RETRIES": "3"}
    with deploy_claude([], env=env) as d:
        yield d


def test_retries_while_the_model_server_is_away_show_live_then_the_failure(
    page: Any, unreachable_deployment: ScriptedDeployment, cli_home: Path,
) -> None:
    session = start_on_page(page, unreachable_deployment, cli_home, "hello", agent="claude")
    page.locator("#session-retrying", has_text="reconnecting (attempt").wait_for(timeout=TIMEOUT)
    page.locator(".card.retrying", has_text="Reconnecting (attempt").wait_for(timeout=TIMEOUT)
    page.locator(".turn-end", has_text="Turn failed").wait_for(timeout=TIMEOUT)
    assert page.locator("#session-retrying").count() == 0
    events = cli_events(cli_home, session)
    assert [e["data"]["attempt"] for e in events if e["type"] == "turn.retrying"] == [1, 2, 3]
    (ended,) = [e["data"] for e in events if e["type"] == "turn.completed"]
    assert ended["status"] == "failed" and ended["error"]
    assert not page.errors  # type: ignore[attr-defined]
