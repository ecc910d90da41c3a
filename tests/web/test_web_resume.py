"""[11] 1, agents: the host is killed (SIGKILL) after a turn and started again; a Codex, a Claude
Code and a builtin session each take a follow-up typed on the same page while the host was down,
and answer it from the same conversation (the scripted model is shown the earlier turn). Nothing
typed is lost, nothing is applied twice, and the session never shows failed."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.deployment import Deployment
from tether.host import resume

from .conftest import builtin_host
from .pages import listed, until
from .test_web_claude import deploy_claude
from .test_web_codex import CODEX_TIMEOUT, cli_events, deploy_codex, start_on_page, status

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FIRST = "remember the word teal"
FIRST_REPLY = "Noted: teal."
FOLLOW_UP = "which word did I ask you to remember?"
SECOND_REPLY = "You asked me to remember teal."
SCRIPT: list[dict[str, Any]] = [{"text": FIRST_REPLY}, {"text": SECOND_REPLY}]


def follow_up_after_a_crash(
    page: Any, d: Deployment, cli_home: Path, agent: str, requests: Callable[[], list[str]],
) -> None:
    session = start_on_page(page, d, cli_home, FIRST, agent=agent)
    page.locator(".card.agent", has_text=FIRST_REPLY).wait_for(timeout=CODEX_TIMEOUT)
    until(lambda: status(page) == "idle", timeout=CODEX_TIMEOUT / 1000, what="the first turn to end")

    d.host.stop(signal.SIGKILL)  # a crash: its agents die with it
    # Typed while the host is down: the page keeps it and sends it once the host is back.
    page.fill("#composer", FOLLOW_UP)
    page.click("#send")
    host = d.host.again()
    try:
        host.wait_for(r"connected to relay")
        page.locator(".card.agent", has_text=SECOND_REPLY).wait_for(timeout=CODEX_TIMEOUT)
        until(lambda: status(page) == "idle", timeout=CODEX_TIMEOUT / 1000, what="the follow-up's turn to end")
        assert page.locator(".card.notice", has_text=resume.NOTICE).count() == 1
        assert "failed" not in (page.text_content("#session") or "")

        events = cli_events(cli_home, session)
        assert [e["data"]["input"] for e in events if e["type"] == "turn.started"] == [FIRST, FOLLOW_UP]
        assert not [e for e in events if e["type"] == "session.exited"]
        started = next(e["data"] for e in events if e["type"] == "session.started")
        assert (started.get("conversation") is None) == (agent == "builtin")
        # The same conversation: the model was shown the first turn with the follow-up.
        (asked,) = [r for r in requests() if FOLLOW_UP in r]
        assert FIRST in asked and FIRST_REPLY in asked
        if agent == "builtin":
            # Between turns the session may be deleted from the page: its agent stops, it is gone.
            page.click("#delete-session")
            page.click("#confirm-delete")
            page.wait_for_selector("#session-filter", timeout=CODEX_TIMEOUT)
            assert session not in [s["id"] for s in listed(d.host_home, "sessions")]
        assert not page.errors  # type: ignore[attr-defined]
    finally:
        host.stop()


def test_a_codex_session_takes_a_follow_up_after_the_host_is_killed(page: Any, cli_home: Path) -> None:
    with deploy_codex(SCRIPT) as d:
        follow_up_after_a_crash(page, d, cli_home, "codex",
                                lambda: [json.dumps(r.get("input")) for r in d.model_requests()])


def test_a_claude_session_takes_a_follow_up_after_the_host_is_killed(page: Any, cli_home: Path) -> None:
    with deploy_claude(SCRIPT) as d:
        follow_up_after_a_crash(page, d, cli_home, "claude",
                                lambda: [json.dumps(r.get("messages")) for r in d.model_requests()])


def test_a_builtin_session_takes_a_follow_up_after_the_host_is_killed(page: Any, cli_home: Path) -> None:
    with builtin_host(SCRIPT, "builtin-host") as d:
        requests_log = d.host_home / "fake_openai-requests.jsonl"

        def requests() -> list[str]:
            lines = requests_log.read_text().splitlines() if requests_log.exists() else []
            return [str(json.loads(line)["body"]) for line in lines if line.strip()]

        follow_up_after_a_crash(page, d, cli_home, "builtin", requests)
