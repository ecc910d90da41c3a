"""A question from Codex answered on the phone ([8] acceptance): real relay and host processes, the
real Codex CLI, the scripted Responses-API model recording each request.

The person switches Codex to plan mode from the composer; the model then asks a question with its
request_user_input tool; Codex puts it to tether (``item/tool/requestUserInput``) and the page
shows a question card with the options. Answered there, Codex continues (its proposed plan shown as
a plan card) and the model's next request carries the answer. A second answer, from the CLI, comes
too late: the first answer won.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import tether

from .pages import until
from .test_web_codex import CODEX_TIMEOUT, CodexWebDeployment, cli_events, deploy_codex, start_on_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUESTION = {"id": "color", "header": "Color", "question": "Which color should the button be?",
            "options": [{"label": "red", "description": "warm"}, {"label": "blue", "description": "cool"}]}
SCRIPT = [
    {"text": "Hello."},
    {"call": {"name": "request_user_input", "arguments": {"questions": [QUESTION]}}},
    # The plan mode's answer: a proposed plan, which Codex sends as a plan item.
    {"text": "Blue it is.\n<proposed_plan>\n1. Make the button blue\n</proposed_plan>"},
]


@pytest.fixture
def question_deployment() -> Iterator[CodexWebDeployment]:
    with deploy_codex(SCRIPT) as d:
        yield d


def test_a_question_from_codex_is_answered_on_the_phone_once(
    page: Any, question_deployment: CodexWebDeployment, cli_home: Path
) -> None:
    d = question_deployment
    page.context.grant_permissions(["notifications"], origin=d.origin)
    session = start_on_page(page, d, cli_home, "hello")
    page.locator(".card.agent", has_text="Hello.").wait_for(timeout=CODEX_TIMEOUT)

    # Plan mode, from the composer: Codex may now ask before it acts.
    page.click("#turn-settings-toggle")
    page.select_option("#mode-select", "plan")
    page.fill("#composer", "make me a button")
    page.click("#send")

    card = page.locator('form.card.question[data-resolved=""]')
    card.wait_for(timeout=CODEX_TIMEOUT)
    assert card.locator("legend").text_content() == "Color"
    assert QUESTION["question"] in card.text_content()
    assert [o.strip() for o in card.locator("label.option > span").all_text_contents()] == ["red", "blue"]
    until(lambda: page.get_attribute("#session-status", "data-status") == "waiting-for-approval", what="waiting")
    (asked,) = [e for e in cli_events(cli_home, session) if e["type"] == "approval.requested"]
    assert asked["data"]["kind"] == "question" and asked["data"]["options"] == []
    assert asked["data"]["details"]["questions"][0]["id"] == "color"
    started = [e["data"] for e in cli_events(cli_home, session) if e["type"] == "turn.started"]
    assert started[-1]["mode"] == "plan"

    card.locator('input[type=radio][value="blue"]').check()
    card.locator("button.answer").click()
    page.locator(".card.agent", has_text="Blue it is.").wait_for(timeout=CODEX_TIMEOUT)
    # Codex may finish its plan item after the reply: wait for the card, not for the order.
    page.locator(".card.plan .plan-text li").first.wait_for(timeout=CODEX_TIMEOUT)
    assert page.locator(".card.plan .plan-text li").all_text_contents() == ["Make the button blue"]
    answered = page.locator('.card.question[data-resolved="answered"]')
    assert "Answered by phone-under-test" in answered.text_content() and "blue" in answered.text_content()

    # The model was told the answer; Codex went on with it.
    told = json.dumps(d.model_requests()[2]["input"])
    assert "blue" in told and "color" in told
    (plan,) = [e["data"] for e in cli_events(cli_home, session)
               if e["type"] == "item.completed" and e["data"]["kind"] == "plan"]
    assert plan["text"] == "1. Make the button blue\n" and plan["steps"] == []
    (resolved,) = [e["data"] for e in cli_events(cli_home, session) if e["type"] == "approval.resolved"]
    assert resolved["decision"] == "answered" and resolved["answers"] == {"color": ["blue"]}
    assert resolved["by"]["name"] == "phone-under-test"

    # Another device answers the same question afterwards: refused, the first answer stands.
    late = tether(cli_home, "sessions", "answer", session, asked["data"]["approval"], "color=red", check=False)
    assert late.returncode != 0 and "not pending" in late.stderr
    assert len([e for e in cli_events(cli_home, session) if e["type"] == "approval.resolved"]) == 1
    assert not page.errors  # type: ignore[attr-defined]
