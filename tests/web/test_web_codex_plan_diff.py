"""[8]: the real Codex 0.169's to-do list (`turn/plan/updated`, from its `update_plan` tool) and the
turn's whole diff (`turn/diff/updated`) reach the phone: plan cards whose latest replaces the last,
and a "Changes" card of the turn — in `sessions events --json` and on the page.

Codex offers `update_plan` only with `[tools.update_plan] enabled = true` in its config (the host
user's choice, written here into the test's CODEX_HOME). It sends the turn diff only when its
sandboxed apply_patch knows what it changed, which needs its helper binaries, which it refuses to
create when CODEX_HOME lies under the temp dir: the host here gets a TMPDIR beside CODEX_HOME.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import remove, short_home

from .pages import until
from .test_web_codex import CODEX_TIMEOUT, CodexWebDeployment, cli_events, deploy_codex, start_on_page, status

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def plan_call(*steps: tuple[str, str], explanation: str) -> dict[str, Any]:
    plan = [{"step": text, "status": state} for text, state in steps]
    return {"call": {"name": "update_plan", "arguments": {"explanation": explanation, "plan": plan}}}


PATCH = "*** Begin Patch\n*** Add File: notes.txt\n+bring an umbrella\n*** End Patch\n"
SCRIPT = [
    plan_call(("Write the note", "in_progress"), ("Check it", "pending"), explanation="Two steps"),
    {"exec": {"cmd": f"apply_patch <<'EOF'\n{PATCH}EOF\n", "escalated": False}},
    plan_call(("Write the note", "completed"), ("Check it", "completed"), explanation="All done"),
    {"text": "The note is written."},
]


@pytest.fixture
def plan_deployment() -> Iterator[CodexWebDeployment]:
    tmp = short_home("tt")  # a temp dir that does not hold CODEX_HOME
    try:
        with deploy_codex(SCRIPT, "\n[tools.update_plan]\nenabled = true\n", env={"TMPDIR": str(tmp)}) as d:
            yield d
    finally:
        remove(tmp)


def test_codex_plan_updates_and_the_turn_diff_reach_the_phone(
    page: Any, plan_deployment: CodexWebDeployment, cli_home: Path,
) -> None:
    d = plan_deployment
    session = start_on_page(page, d, cli_home, "write me a note")
    page.locator(".card.agent", has_text="The note is written.").wait_for(timeout=CODEX_TIMEOUT)
    until(lambda: status(page) == "idle", timeout=CODEX_TIMEOUT / 1000, what="the turn to end")
    assert (d.workspace / "notes.txt").read_text() == "bring an umbrella\n"

    events = cli_events(cli_home, session)
    done = [e["data"] for e in events if e["type"] == "item.completed"]
    plans = [p for p in done if p["kind"] == "plan"]
    assert [(p["explanation"], [(s["text"], s["status"]) for s in p["steps"]]) for p in plans] == [
        ("Two steps", [("Write the note", "in_progress"), ("Check it", "pending")]),
        ("All done", [("Write the note", "completed"), ("Check it", "completed")]),
    ]
    changes = [c for c in done if c["kind"] == "changes"]
    assert changes, f"no changes item; items: {[x['kind'] for x in done]}"
    assert len({c["diff"] for c in changes}) == len(changes)  # Codex's repeats are not shown again
    assert changes[-1]["paths"] == ["notes.txt"] and "+bring an umbrella" in changes[-1]["diff"]

    # On the page: only the latest plan, and the turn's changes as one card with its diff.
    shown = page.locator(".card.plan:visible")
    assert shown.count() == 1 and "All done" in (shown.text_content() or "")
    assert [s.strip() for s in shown.locator("li.step").all_text_contents()] == ["✓ Write the note", "✓ Check it"]
    card = page.locator(".card.changes:visible")
    assert card.count() == 1 and "1 file" in (card.locator("summary").text_content() or "")
    card.locator("summary").click()
    assert "+bring an umbrella" in (card.locator("pre.diff").text_content() or "")
    assert not page.errors  # type: ignore[attr-defined]
