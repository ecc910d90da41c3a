"""[8]: a turn stopped from the phone while the agent waits for an approval — the real Codex
(``turn/completed`` interrupted) and the real Claude Code (which withdraws the waiting question as
it stops, ``control_cancel_request``), each on the scripted model: the page's Stop ends the turn
("Interrupted."), the approval card says it is no longer needed ("the turn was interrupted": the
host clears it as the turn ends), the command never runs, and the next prompt is a turn of its own.
``tether sessions events --json`` shows the same (tests/support/agent_host.py's
``interrupt_while_an_approval_is_pending`` does it through the SDK).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from tests.support.scripted_model import Turn

from .conftest import ScriptedDeployment
from .pages import until
from .test_web_claude import deploy_claude
from .test_web_codex import CODEX_TIMEOUT, cli_events, deploy_codex, start_on_page, status

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RAN = "ran.txt"
CODEX: list[Turn] = [{"exec": {"cmd": f"echo ran > {RAN}", "justification": "to leave a file"}},
                     {"text": "still here"}]
CLAUDE: list[Turn] = [{"bash": {"command": f"echo ran > {RAN}", "description": "to leave a file"}},
                      {"text": "still here"}]
AGENTS: dict[str, tuple[Callable[[list[Turn]], AbstractContextManager[ScriptedDeployment]], list[Turn]]] = {
    "codex": (deploy_codex, CODEX), "claude": (deploy_claude, CLAUDE)}


@pytest.fixture(params=sorted(AGENTS))
def waiting(request: pytest.FixtureRequest) -> Iterator[tuple[str, ScriptedDeployment]]:
    deploy, script = AGENTS[request.param]
    with deploy(script) as d:
        yield request.param, d


def test_stop_while_an_approval_waits_ends_the_turn_and_clears_the_card(
    page: Any, waiting: tuple[str, ScriptedDeployment], cli_home: Path,
) -> None:
    agent, d = waiting
    session = start_on_page(page, d, cli_home, "leave a file", agent=agent)
    card = page.locator('section.card.approval[data-resolved=""]')
    card.wait_for(timeout=CODEX_TIMEOUT)
    assert RAN in (card.locator("pre.cmd").text_content() or "")

    page.click("#interrupt")
    page.locator("p.turn-end", has_text="Interrupted.").wait_for(timeout=CODEX_TIMEOUT)
    cleared = page.locator('section.card.approval[data-resolved="cleared"]')
    cleared.wait_for(timeout=CODEX_TIMEOUT)
    assert (cleared.locator("p.resolved").text_content() or "").startswith("No longer needed")
    assert cleared.locator("button").count() == 0
    until(lambda: status(page) == "idle", timeout=CODEX_TIMEOUT / 1000, what="the session to be idle")

    # The session goes on: the next prompt is a turn of its own.
    page.fill("#composer", "are you there?")
    page.click("#send")
    page.locator(".card.agent", has_text="still here").wait_for(timeout=CODEX_TIMEOUT)
    until(lambda: status(page) == "idle", timeout=CODEX_TIMEOUT / 1000, what="the next turn to end")
    assert not (d.workspace / RAN).exists()
    assert page.locator(".card.command", has_text=RAN).locator(".badge").text_content() == "not run"

    events = cli_events(cli_home, session)
    assert [e["data"]["status"] for e in events if e["type"] == "turn.completed"] == ["interrupted", "completed"]
    [asked] = [e["data"] for e in events if e["type"] == "approval.requested"]
    [gone] = [e["data"] for e in events if e["type"] == "approval.cleared"]
    assert (gone["approval"], gone["reason"]) == (asked["approval"], "the turn was interrupted")
    assert cleared.locator("p.resolved").text_content() == f"No longer needed: {gone['reason']}"
    assert not [e for e in events if e["type"] == "approval.resolved"]  # nobody answered it
    assert not page.errors  # type: ignore[attr-defined]
