"""A Claude Code session on the phone beyond commands ([8] item 3): real relay and host processes,
the real Claude Code CLI on the host, the scripted Messages-API model as a process.

Turn 1: Claude Code asks a question (AskUserQuestion), answered on the page; keeps a task list
(TaskCreate / TaskUpdate), shown as one plan card that follows the list; wants to fetch a web page
(WebFetch), shown as a tool approval card with the URL, denied on the page. Turn 2: from the
composer the person picks another model, a lower effort and plan mode; Claude Code writes its plan
and asks to leave plan mode (ExitPlanMode): a plan card, approved on the page. Turns 3 and 4 carry an
image attached on the page, then from the CLI. The model's requests
carry the answer, the denial, the model and the effort; ``tether sessions events --json`` shows the
same events the page drew.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agents.claude.conftest import claude_command, shell_home
from tests.procs import remove, short_home, tether
from tests.support.fake_anthropic import claude_env_for
from tests.support.images import png

from .conftest import ScriptedDeployment, relay_and_host, start_scripted_model
from .pages import until
from .test_web_codex import CODEX_TIMEOUT, cli_events, start_on_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMEOUT = CODEX_TIMEOUT
COLOUR = {"question": "Which colour?", "header": "Colour", "multiSelect": False,
          "options": [{"label": "Red", "description": "warm"}, {"label": "Blue", "description": "cool"}]}
URL = "https://paint.example/blue"
PLAN = "# Plan\n1. Mix the paint\n2. Paint the wall\n"


def tool(name: str, **tool_input: object) -> dict[str, object]:
    return {"tool": {"name": name, "input": tool_input}}


SCRIPT = [
    tool("AskUserQuestion", questions=[COLOUR]),
    tool("TaskCreate", subject="Mix the paint", description="blue"),
    tool("TaskCreate", subject="Paint the wall", description="two coats"),
    tool("TaskUpdate", taskId="1", status="completed"),
    tool("WebFetch", url=URL, prompt="which blue?"),
    {"text": "Blue it is."},
    # Turn 2, in plan mode.
    {"plan_file": PLAN},
    tool("ExitPlanMode"),
    {"text": "Planned; starting."},
    # Turn 3, with an image from the page; turn 4, with one from the CLI.
    {"text": "A blue square."},
    {"text": "Another one."},
]


@contextlib.contextmanager
def deploy_claude(
    script: list[dict[str, Any]], claude_config: str = "", env: dict[str, str] | None = None,
    script_for: Callable[[list[dict[str, Any]], Path], list[dict[str, Any]]] | None = None,
) -> Iterator[ScriptedDeployment]:
    """The host's Claude Code on the scripted model; ``claude_config`` is added to its
    ``[agents.claude]`` table, ``env`` to the host's environment; ``script_for`` fits the script to
    the workspace."""
    command = claude_command()
    # Claude Code's config dir (its plans among it) is outside tether's home, as ~/.claude is: no
    # agent may write into tether's home.
    host_home, workspace, config_dir = short_home("th"), short_home("tw"), short_home("tcc")
    if script_for is not None:
        script = script_for(script, workspace)
    model, port, requests_log = start_scripted_model("fake_anthropic", script, host_home)
    (host_home / "config.toml").write_text(
        "[agents.claude]\n"
        f'binary = "{command}"\n'
        f'config_dir = "{config_dir}"\n'
        'approval = "on-request"\n'
        'sandbox = "workspace-write"\n'
        + claude_config
    )
    try:
        host_env = {**claude_env_for(port), **shell_home(host_home), **(env or {})}
        with relay_and_host(host_home, workspace, "claude-host", host_env) as (relay, relay_port, host):
            yield ScriptedDeployment(relay, relay_port, host, host_home, workspace, model, requests_log)
        # Nothing left loopback: anything Claude Code tried to reach elsewhere came as a proxy request.
        assert "refused traffic leaving loopback" not in model.log
    finally:
        model.stop()
        remove(host_home, workspace, config_dir)


@pytest.fixture
def claude_deployment() -> Iterator[ScriptedDeployment]:
    with deploy_claude(SCRIPT) as d:
        yield d


def test_claude_codes_question_tasks_web_fetch_and_plan_on_the_phone(
    page: Any, claude_deployment: ScriptedDeployment, cli_home: Path, tmp_path: Path,
) -> None:
    d = claude_deployment
    session = start_on_page(page, d, cli_home, "paint the wall", agent="claude")

    # The question: its options, answered on the page.
    card = page.locator('form.card.question[data-resolved=""]')
    card.wait_for(timeout=TIMEOUT)
    assert card.locator("legend").text_content() == "Colour" and "Which colour?" in card.text_content()
    card.locator('input[type=radio][value="Blue"]').check()
    card.locator("button.answer").click()

    # The web fetch waits for a person: its card names the tool and shows the URL. Denied.
    fetch = page.locator('section.card.approval[data-resolved=""]')
    fetch.wait_for(timeout=TIMEOUT)
    assert fetch.get_attribute("aria-label") == "Approval: use a tool"
    assert "WebFetch" in fetch.locator(".ask").text_content()
    assert fetch.locator("pre.tool-input").text_content() == f"{URL}\nwhich blue?"
    fetch.locator("button.deny").click()
    page.locator(".card.agent", has_text="Blue it is.").wait_for(timeout=TIMEOUT)
    # What the turn used and cost, from Claude Code's result, in the session header.
    until(lambda: "$0.00" in (page.text_content("#session-usage") or ""), what="the cost in the header")
    assert "tokens" in page.text_content("#session-usage")

    # The task list: one plan card, as the list last stood.
    plans = page.locator(".card.plan")
    assert plans.count() == 1
    assert plans.locator("li.step").all_text_contents() == ["✓ Mix the paint", "○ Paint the wall"]
    assert plans.locator('li.step[data-status="completed"]').count() == 1
    denied = page.locator('.card.tool[data-tool="WebFetch"]')
    assert denied.locator(".badge").text_content() == "not run"

    requests = d.model_requests()
    assert '\\"Which colour?\\"=\\"Blue\\"' in json.dumps(requests[1]["messages"][-2:])
    assert "denied this use of a tool" in json.dumps(requests[5]["messages"][-2:])

    # The same, as the CLI reads the log.
    events = cli_events(cli_home, session)
    kinds = [e["data"]["kind"] for e in events if e["type"] == "approval.requested"]
    assert kinds == ["question", "tool"]
    plan_items = [e["data"]["steps"] for e in events if e["type"] == "item.completed" and e["data"]["kind"] == "plan"]
    assert len(plan_items) == 3 and plan_items[-1] == [{"text": "Mix the paint", "status": "completed"},
                                                         {"text": "Paint the wall", "status": "pending"}]
    (fetched,) = [e["data"] for e in events if e["type"] == "item.completed" and e["data"]["kind"] == "tool_call"]
    assert fetched["tool"] == "WebFetch" and fetched["status"] == "declined"

    # Turn 2: another model, a lower effort, plan mode, from the composer.
    page.click("#turn-settings-toggle")
    page.locator('#model-select option[value="sonnet"]').wait_for(state="attached", timeout=TIMEOUT)
    page.select_option("#model-select", "sonnet")
    page.select_option("#effort-select", "low")
    page.select_option("#mode-select", "plan")
    page.fill("#composer", "plan the rest")
    page.click("#send")

    plan = page.locator('section.card.approval[data-resolved=""]')
    plan.wait_for(timeout=TIMEOUT)
    assert plan.get_attribute("aria-label") == "Approval: the agent's plan"
    # The plan, as formatted text.
    assert plan.locator(".plan-text h1").text_content() == "Plan"
    assert plan.locator(".plan-text li").all_text_contents() == ["Mix the paint", "Paint the wall"]
    assert plan.locator("button.approve-session").count() == 0  # a plan is approved once
    plan.locator("button.approve").click()
    page.locator(".card.agent", has_text="Planned; starting.").wait_for(timeout=TIMEOUT)
    resolved = page.locator('section.card.approval[data-resolved="approve"]', has_text="Approved by")
    until(lambda: resolved.count() == 1, what="the plan approved")

    requests = d.model_requests()
    assert "sonnet" in requests[-1]["model"] and "sonnet" not in requests[0]["model"]
    assert requests[-1]["output_config"]["effort"] == "low"
    assert "User has approved your plan" in json.dumps(requests[-1]["messages"][-3:])
    started = [e["data"] for e in cli_events(cli_home, session) if e["type"] == "turn.started"]
    assert started[-1]["mode"] == "plan" and started[-1]["model"] == "sonnet" and started[-1]["effort"] == "low"

    # Turn 3: images attached on the phone go to the model with the prompt; a photo too big to send
    # as it is (1.5 MB of pixels) is shrunk to a JPEG first.
    shot, photo = tmp_path / "shot.png", tmp_path / "photo.png"
    shot.write_bytes(png())
    photo.write_bytes(png(720, 720, noise=True))
    assert photo.stat().st_size > 1024 * 1024
    page.set_input_files("#attach-input", [str(shot), str(photo)])
    page.locator('#attachments .chip[data-name="photo.jpg"]').wait_for()
    page.fill("#composer", "what is this?")
    page.click("#send")
    page.locator(".card.agent", has_text="A blue square.").wait_for(timeout=TIMEOUT)
    chips = page.locator(".card.user", has_text="what is this?").locator(".chip").all_text_contents()
    assert chips == ["📎 shot.png", "📎 photo.jpg"]
    assert page.locator("#attachments .chip").count() == 0  # sent, so no longer attached
    [prompt] = [m for m in d.model_requests()[-1]["messages"] if "what is this?" in json.dumps(m)]
    sources = [b["source"] for b in prompt["content"] if b["type"] == "image"]
    assert sources[0] == {"type": "base64", "media_type": "image/png", "data": base64.b64encode(png()).decode()}
    assert sources[1]["media_type"] == "image/jpeg" and len(base64.b64decode(sources[1]["data"])) < 1024 * 1024

    # Turn 4: the same from the CLI; a file that is no image is refused before anything is sent.
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    refused = tether(cli_home, "sessions", "send", session, "and this?", "--image", str(not_image), check=False)
    assert refused.returncode != 0 and "not a PNG, JPEG, GIF or WebP image" in refused.stderr
    tether(cli_home, "sessions", "send", session, "and this?", "--image", str(shot))
    page.locator(".card.agent", has_text="Another one.").wait_for(timeout=TIMEOUT)
    started = [e["data"] for e in cli_events(cli_home, session) if e["type"] == "turn.started"]
    assert [[i["name"] for i in s["images"]] for s in started[-2:]] == [["shot.png", "photo.jpg"], ["shot.png"]]
    assert started[-1]["images"] == [{"name": "shot.png", "mime": "image/png", "bytes": len(png())}]

    # The rest of what the page drew, as the CLI reads it: the answers (streamed), the plan asked
    # about, and what the turns used and cost (the header's figure).
    events = cli_events(cli_home, session)
    answers = [e["data"] for e in events if e["type"] == "item.completed" and e["data"]["kind"] == "agent_message"]
    assert [a["text"] for a in answers] == ["Blue it is.", "Planned; starting.", "A blue square.", "Another one."]
    assert "".join(e["data"]["data"] for e in events if e["type"] == "item.delta"
                   and e["data"]["item"] == answers[0]["item"]) == "Blue it is."
    asked = [e["data"] for e in events if e["type"] == "approval.requested"]
    assert [a["kind"] for a in asked] == ["question", "tool", "plan"] and asked[-1]["details"]["plan"] == PLAN
    *_, usage = [e["data"] for e in events if e["type"] == "agent.usage"]
    assert usage["cost_usd"] > 0 and usage["total_tokens"] > 0
    until(lambda: f"${usage['cost_usd']:.4f}" in (page.text_content("#session-usage") or ""), what="the cost")
    assert not page.errors  # type: ignore[attr-defined]
