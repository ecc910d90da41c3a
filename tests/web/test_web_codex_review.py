"""A review and a compaction of a Codex session, asked for from the phone and the CLI ([8] item 2):
real relay and host processes, the real Codex CLI, the scripted Responses-API model.

The workspace is a git repository with an uncommitted file. From the composer's panel the person
asks for a review: Codex enters review mode, the model's findings come back as the agent's message,
and the model was asked to review the current changes. Then ``tether sessions compact`` from the
CLI: a turn of its own, shown as "context compacted", in which the model was asked for a summary.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import tether

from .pages import until
from .test_web_codex import CODEX_TIMEOUT, CodexWebDeployment, cli_events, deploy_codex, start_on_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FINDINGS = {"findings": [{"title": "Typo in notes.txt", "body": "'teh' should be 'the'", "confidence_score": 0.8,
                          "priority": 1, "code_location": {"absolute_file_path": "notes.txt",
                                                           "line_range": {"start": 1, "end": 1}}}],
            "overall_correctness": "patch is incorrect", "overall_explanation": "one typo",
            "overall_confidence_score": 0.7}
SCRIPT = [{"text": "Hello."}, {"text": json.dumps(FINDINGS)}, {"text": "SUMMARY: hello, then a review"}]


@pytest.fixture
def review_deployment() -> Iterator[CodexWebDeployment]:
    with deploy_codex(SCRIPT) as d:
        git = ["git", "-C", str(d.workspace), "-c", "user.email=t@t", "-c", "user.name=t"]
        subprocess.run([*git, "init", "-q"], check=True)
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "start"], check=True)
        (d.workspace / "notes.txt").write_text("teh end\n")
        yield d


def test_a_review_from_the_phone_and_a_compaction_from_the_cli(
    page: Any, review_deployment: CodexWebDeployment, cli_home: Path,
) -> None:
    d = review_deployment
    session = start_on_page(page, d, cli_home, "hello")
    page.locator(".card.agent", has_text="Hello.").wait_for(timeout=CODEX_TIMEOUT)

    page.click("#turn-settings-toggle")
    page.click("#review")
    page.locator(".card.user", has_text="Review the uncommitted changes").wait_for(timeout=CODEX_TIMEOUT)
    started = page.locator('.card.other[data-type="enteredReviewMode"]')
    started.wait_for(timeout=CODEX_TIMEOUT)
    assert started.locator("strong").text_content() == "review started"
    assert started.locator(".summary").text_content() == "current changes"
    page.locator(".card.agent", has_text="Typo in notes.txt").wait_for(timeout=CODEX_TIMEOUT)
    until(lambda: page.get_attribute("#session-status", "data-status") == "idle", what="the review's end")
    assert page.locator('.card.other[data-type="exitedReviewMode"] strong').text_content() == "review ended"
    assert "Review the current code changes" in json.dumps(d.model_requests()[1]["input"])
    # Codex's message it opened and never filled shows nothing.
    assert page.locator('.card.agent[data-status="failed"]').count() == 0

    tether(cli_home, "sessions", "compact", session)
    # Its card shows when the compaction starts, before Codex asks the model for the summary.
    compacted = page.locator('.card.other[data-type="contextCompaction"]')
    compacted.wait_for(timeout=CODEX_TIMEOUT)
    assert compacted.locator("strong").text_content() == "context compacted"
    until(lambda: len(d.model_requests()) > 2, timeout=CODEX_TIMEOUT / 1000, what="the compaction's request")
    assert "CONTEXT CHECKPOINT COMPACTION" in json.dumps(d.model_requests()[2]["input"])
    until(lambda: page.get_attribute("#session-status", "data-status") == "idle", timeout=CODEX_TIMEOUT / 1000,
          what="the compaction's end")

    events = cli_events(cli_home, session)
    actions = [e["data"].get("action") for e in events if e["type"] == "turn.started"]
    assert actions == [None, "review", "compact"]
    others = {e["data"]["type"]: e["data"] for e in events
              if e["type"] == "item.completed" and e["data"]["kind"] == "other"}
    assert {t: (o["title"], o["status"]) for t, o in others.items()} == {
        "enteredReviewMode": ("review started", "completed"), "exitedReviewMode": ("review ended", "completed"),
        "contextCompaction": ("context compacted", "completed")}
    assert others["enteredReviewMode"]["summary"] == "current changes"
    assert not page.errors  # type: ignore[attr-defined]
