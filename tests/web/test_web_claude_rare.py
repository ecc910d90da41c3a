"""[8]: what the real Claude Code 2.1.332 asks that tether does not put to a person, and its own
commands, on the phone (a phone viewport) and in ``tether sessions events --json``: real relay and
host processes, the scripted Messages-API model as a process, tests/support/fake_mcp.py as the MCP
server (named in ``[agents.claude] mcp_config``) — the setups of tests/agents/claude/test_claude_fidelity.py.

- The session's own commands (``tool_use`` Bash and its ``tool_result``): one approved, one denied;
  then a file written and edited (``tool_use`` Write / Edit), each approved with its diff.
- MCP forms tether cannot put (``control_request`` ``elicitation``): a field of several choices and a
  link to open (URL mode, which Claude Code passes on) are declined and said ("refused: …"); a
  nested form Claude Code refuses itself; the tool, allowed for the session on the page, is not
  asked about again.
- A form Claude Code withdraws (``control_cancel_request``: the MCP tool call ran out of time while
  the form waited): its card says it is no longer needed, and the turn goes on.
- A request tether does not handle (``mcp_message`` for a server of ``"type": "sdk"``): refused at
  once, said, and the turn goes on.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.deployment import Deployment
from tests.support.scripted_model import Turn

from .conftest import REPO, ScriptedDeployment
from .pages import until
from .test_web_claude import TIMEOUT, deploy_claude, tool
from .test_web_claude_tools import approve_next
from .test_web_codex import cli_events, start_on_page, status

pytestmark = [pytest.mark.browser, pytest.mark.slow]

GREETING = "echo from-claude-$((40+2))"
MARKER = "claude-marker.txt"


def lookup(query: str) -> Turn:
    return tool("mcp__notes__lookup", query=query)


def notes_config(tmp_path: Path, servers: dict[str, Any] | None = None) -> str:
    """``[agents.claude] mcp_config`` naming fake_mcp.py as the server "notes" (or ``servers``)."""
    mcp = tmp_path / "mcp.json"
    mcp.write_text(json.dumps({"mcpServers": servers or {"notes": {
        "command": sys.executable, "args": ["-m", "tests.support.fake_mcp"], "env": {"PYTHONPATH": str(REPO)}}}}))
    return f'mcp_config = "{mcp}"\n'


def idle(page: Any, what: str) -> None:
    until(lambda: status(page) == "idle", timeout=TIMEOUT / 1000, what=what)


def notices(events: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["type"] == "agent.notice" and e["data"]["source"] == source]


def completed(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["type"] == "item.completed" and e["data"]["kind"] == kind]


def send(page: Any, prompt: str) -> None:
    page.fill("#composer", prompt)
    page.click("#send")


COMMANDS: list[Turn] = [
    {"bash": {"command": GREETING, "description": "to greet"}},
    {"text": "It printed from-claude-42."},
    {"bash": {"command": f"echo declined > {MARKER}", "description": "to leave a marker"}},
    {"text": "Fine, no marker."},
    # Turn 3: a file written, then edited (each asked about with its diff).
    {"write": {"file_path": "NOTES", "content": "one\ntwo\n"}},
    {"edit": {"file_path": "NOTES", "old_string": "two", "new_string": "three"}},
    {"text": "Noted."},
]


def notes_in(script: list[Turn], workspace: Path) -> list[Turn]:
    """The script with its file write and edit aimed at notes.txt in the deployment's workspace."""
    path = str(workspace / "notes.txt")
    return [{**t, **{k: {**t[k], "file_path": path} for k in ("write", "edit") if k in t}} for t in script]


@pytest.fixture
def commands_deployment() -> Iterator[ScriptedDeployment]:
    with deploy_claude(COMMANDS, script_for=notes_in) as d:
        yield d


def test_claude_codes_own_commands_approved_and_denied_on_the_phone(
    page: Any, commands_deployment: ScriptedDeployment, cli_home: Path,
) -> None:
    d = commands_deployment
    session = start_on_page(page, d, cli_home, "greet me", agent="claude")
    shown = approve_next(page, "Approval: run a command")
    assert GREETING in shown and f"in {d.workspace}" in shown and "Why: to greet" in shown
    page.locator(".card.agent", has_text="It printed from-claude-42.").wait_for(timeout=TIMEOUT)
    ran = page.locator(".card.command", has_text=GREETING)
    assert ran.locator(".output").text_content() == "from-claude-42"
    assert ran.locator(".badge.exit").text_content() == "exit 0"
    idle(page, "the first turn to end")

    send(page, "now leave a marker")
    deny = page.locator('section.card.approval[data-resolved=""]')
    deny.wait_for(timeout=TIMEOUT)
    assert MARKER in (deny.locator("pre.cmd").text_content() or "")
    deny.locator("button.deny").click()
    page.locator(".card.agent", has_text="Fine, no marker.").wait_for(timeout=TIMEOUT)
    assert page.locator(".card.command", has_text=MARKER).locator(".badge").text_content() == "not run"
    assert not (d.workspace / MARKER).exists()
    idle(page, "the second turn to end")

    send(page, "take notes")
    notes = d.workspace / "notes.txt"
    assert "+one\n+two" in approve_next(page, "Approval: change a file")
    assert "-two\n+three" in approve_next(page, "Approval: change a file")
    page.locator(".card.agent", has_text="Noted.").wait_for(timeout=TIMEOUT)
    assert notes.read_text() == "one\nthree\n"
    written, edited = page.locator(".card.file").all()
    assert written.locator(".path").text_content() == edited.locator(".path").text_content() == str(notes)
    assert written.locator(".badge").text_content() == edited.locator(".badge").text_content() == "applied"
    assert [line.strip() for line in edited.locator(".dl.del, .dl.add").all_text_contents()] == ["-two", "+three"]
    idle(page, "the third turn to end")

    events = cli_events(cli_home, session)
    ran_item, not_run = completed(events, "command")
    assert (ran_item["command"], ran_item["cwd"], ran_item["output"], ran_item["exit_code"]) == (
        GREETING, str(d.workspace), "from-claude-42", 0)
    assert MARKER in not_run["command"] and not_run["status"] == "declined"
    assert [e["data"]["decision"] for e in events if e["type"] == "approval.resolved"] == [
        "approve", "deny", "approve", "approve"]
    assert "denied" in json.dumps(d.model_requests()[3]["messages"][-2:])  # the model was told
    changes = completed(events, "file_change")
    assert [(c["path"], c["status"]) for c in changes] == [(str(notes), "completed")] * 2
    assert "-two\n+three\n" in changes[1]["diff"]
    assert not page.errors  # type: ignore[attr-defined]


FORMS: list[Turn] = [
    lookup("walls"), {"text": "No walls, then."},
    lookup("nested"), {"text": "No form, then."},
    lookup("link"), {"text": "No sign-in, then."},
]


@pytest.fixture
def forms_deployment(tmp_path: Path) -> Iterator[ScriptedDeployment]:
    with deploy_claude(FORMS, notes_config(tmp_path)) as d:
        yield d


def test_forms_tether_cannot_put_are_declined_and_said_on_the_phone(
    page: Any, forms_deployment: ScriptedDeployment, cli_home: Path,
) -> None:
    session = start_on_page(page, forms_deployment, cli_home, "choose the walls", agent="claude")
    allow = page.locator('section.card.approval[data-resolved=""]')
    allow.wait_for(timeout=TIMEOUT)
    assert allow.get_attribute("aria-label") == "Approval: use a tool"
    allow.locator("button.approve-session").click()
    page.locator(".card.agent", has_text="No walls, then.").wait_for(timeout=TIMEOUT)
    several = page.locator('.card.notice[data-level="warning"]', has_text="walls.title: Walls")
    assert several.count() == 1
    assert (several.text_content() or "").startswith("⚠ refused: Claude Code asked elicitation (mcp_server_name: notes")
    assert page.locator(".card.question").count() == 0  # nobody was asked
    idle(page, "the first turn to end")

    send(page, "measure the wall")
    page.locator(".card.agent", has_text="No form, then.").wait_for(timeout=TIMEOUT)
    assert allow.count() == 0  # the tool was allowed for the session
    nested = page.locator('.card.tool[data-tool="lookup"]').last
    nested.locator("details.tool-output summary").click()
    came_back = json.loads((nested.locator("pre.output").text_content() or "").removeprefix("the form came back: "))
    assert came_back["action"] == "error" and came_back["error"]["code"] == -32602
    assert page.locator(".card.notice", has_text="refused:").count() == 1  # none for the nested form
    idle(page, "the second turn to end")

    send(page, "sign in")
    page.locator(".card.agent", has_text="No sign-in, then.").wait_for(timeout=TIMEOUT)
    link = page.locator('.card.notice[data-level="warning"]', has_text="https://paint.example/login")
    assert link.count() == 1 and "not a link to open" in (link.text_content() or "")
    idle(page, "the third turn to end")

    events = cli_events(cli_home, session)
    refused = notices(events, "elicitation")
    assert [f"⚠ {n['message']}" for n in refused] == [several.text_content(), link.text_content()]
    assert "mode: url" in refused[1]["message"] and "Sign in to the paint shop" in refused[1]["message"]
    assert [e["data"]["kind"] for e in events if e["type"] == "approval.requested"] == ["tool"]
    assert [e["data"]["decision"] for e in events if e["type"] == "approval.resolved"] == ["approve_for_session"]
    walls, nested_call, link_call = completed(events, "tool_call")
    assert walls["output"] == link_call["output"] == 'the form came back: {"action": "decline"}'
    assert json.loads(nested_call["output"].removeprefix("the form came back: "))["error"]["code"] == -32602
    assert not page.errors  # type: ignore[attr-defined]


@pytest.fixture
def withdrawing(tmp_path: Path) -> Iterator[ScriptedDeployment]:
    # Claude Code gives an MCP tool call MCP_TOOL_TIMEOUT ms; when they run out while the server's
    # form waits on a person, it withdraws the form (control_cancel_request) and fails the call.
    with deploy_claude([lookup("ask"), {"text": "Nobody answered."}], notes_config(tmp_path),
                       env={"MCP_TOOL_TIMEOUT": "4000"}) as d:
        yield d


def test_a_form_claude_code_withdraws_is_no_longer_needed_on_the_phone(
    page: Any, withdrawing: ScriptedDeployment, cli_home: Path,
) -> None:
    session = start_on_page(page, withdrawing, cli_home, "paint", agent="claude")
    approve_next(page, "Approval: use a tool")
    form = page.locator('form.card.question[data-resolved=""]')
    form.wait_for(timeout=TIMEOUT)
    assert sorted(form.locator("legend").all_text_contents()) == ["Coats", "Shade"]
    # Nobody answers: Claude Code stops waiting in the middle of the turn, and the card says so.
    withdrawn = page.locator('.card.question[data-resolved="cleared"]')
    withdrawn.wait_for(timeout=TIMEOUT)
    assert withdrawn.locator("p.resolved").text_content() == "No longer needed: withdrawn by the agent"
    assert withdrawn.locator("button").count() == 0
    page.locator(".card.agent", has_text="Nobody answered.").wait_for(timeout=TIMEOUT)
    call = page.locator('.card.tool[data-tool="lookup"]')
    assert call.get_attribute("data-status") == "failed" and call.locator(".badge").text_content() == "failed"
    idle(page, "the turn to end")

    events = cli_events(cli_home, session)
    asked = [e for e in events if e["type"] == "approval.requested" and e["data"]["kind"] == "question"]
    [cleared] = [e for e in events if e["type"] == "approval.cleared"]
    assert cleared["data"] == {"approval": asked[0]["data"]["approval"], "reason": "withdrawn by the agent"}
    [done] = [e for e in events if e["type"] == "turn.completed"]
    assert cleared["seq"] < done["seq"] and done["data"]["status"] == "completed"  # mid-turn
    [item] = completed(events, "tool_call")
    assert item["status"] == "failed" and "timed out" in item["output"]
    assert not page.errors  # type: ignore[attr-defined]


@pytest.fixture
def sdk_server(tmp_path: Path) -> Iterator[ScriptedDeployment]:
    # A server of type "sdk" would live in the SDK program that started Claude Code, which then
    # carries its messages (mcp_message requests); tether is none, and refuses them at once.
    config = notes_config(tmp_path, {"notes": {"type": "sdk", "name": "notes"}})
    with deploy_claude([lookup("blue"), {"text": "No notes then."}], config) as d:
        yield d


def test_a_request_tether_does_not_handle_is_refused_and_said_on_the_phone(
    page: Any, sdk_server: ScriptedDeployment, cli_home: Path,
) -> None:
    d: Deployment = sdk_server
    session = start_on_page(page, d, cli_home, "look up blue", agent="claude")
    page.locator(".card.agent", has_text="No notes then.").wait_for(timeout=TIMEOUT)
    idle(page, "the turn to end")
    refused = page.locator('.card.notice[data-level="warning"]', has_text="mcp_message")
    assert refused.count() >= 1
    for said in refused.all_text_contents():
        assert said.startswith("⚠ refused: Claude Code asked mcp_message (server_name: notes")
        assert said.endswith("tether does not know this request")
    assert page.locator("section.card.approval").count() == 0  # nobody was asked

    events = cli_events(cli_home, session)
    said = notices(events, "mcp_message")
    assert [f"⚠ {n['message']}" for n in said] == refused.all_text_contents()
    assert {n["level"] for n in said} == {"warning"}
    [started] = [e for e in events if e["type"] == "turn.started"]
    [done] = [e for e in events if e["type"] == "turn.completed"]
    assert done["data"]["status"] == "completed" and done["ts"] - started["ts"] < 20  # not held up
    assert not [e for e in events if e["type"] == "approval.requested"]
    assert not page.errors  # type: ignore[attr-defined]
