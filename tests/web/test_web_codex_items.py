"""More of what the real Codex does, on the phone and in the CLI ([8] acceptance): the model's
reasoning summary, an image it looks at in the workspace (view_image), a file it changes
(apply_patch through exec_command, approved from its card: the session's sandbox is read-only, so
Codex always asks) and its answer — each as
its own card on a phone viewport, and the same items in ``tether sessions events --json``. Real relay
and host processes, the real Codex CLI, the scripted Responses-API model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.images import png

from .test_web_codex import CODEX_TIMEOUT, CodexWebDeployment, card_kinds, cli_events, deploy_codex, start_on_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PATCH = "apply_patch <<'EOF'\n*** Begin Patch\n*** Add File: notes.txt\n+blue it is\n*** End Patch\nEOF\n"
SCRIPT = [
    {"reasoning": "the image will tell", "call": {"name": "view_image", "arguments": {"path": "shot.png"}}},
    {"exec": {"cmd": PATCH, "escalated": False}},
    {"text": "A blue square; noted."},
]


@pytest.fixture
def items_deployment() -> Iterator[CodexWebDeployment]:
    with deploy_codex(SCRIPT, sandbox="read-only") as d:
        (d.workspace / "shot.png").write_bytes(png())
        yield d


def test_reasoning_an_image_looked_at_and_a_file_change_on_the_phone(
    page: Any, items_deployment: CodexWebDeployment, cli_home: Path,
) -> None:
    d = items_deployment
    session = start_on_page(page, d, cli_home, "look at shot.png and note its colour")
    # The write is asked about (item/fileChange/requestApproval): the path and the diff, approved
    # from its card.
    ask = page.locator('section.card.approval[data-resolved=""]')
    ask.wait_for(timeout=CODEX_TIMEOUT)
    assert ask.get_attribute("aria-label") == "Approval: change a file"
    assert ask.locator("strong.path").text_content() == str(d.workspace / "notes.txt")
    assert "+blue it is" in ask.locator(".diff").text_content()
    ask.locator("button.approve").click()
    page.locator(".card.agent", has_text="A blue square; noted.").wait_for(timeout=CODEX_TIMEOUT)
    assert "Approved by phone-under-test" in page.text_content('section.card.approval[data-resolved="approve"]')

    assert page.locator(".card.reasoning p").text_content() == "the image will tell"
    image = page.locator('.card.other[data-type="imageView"]')
    assert image.locator("strong").text_content() == "image viewed"
    assert image.locator(".summary").text_content() == str(d.workspace / "shot.png")
    change = page.locator(".card.file")
    assert change.locator(".path").text_content() == str(d.workspace / "notes.txt")
    assert "+blue it is" in change.locator(".diff").text_content()
    assert (d.workspace / "notes.txt").read_text() == "blue it is\n"
    kinds = card_kinds(page)
    assert kinds.index("reasoning") < kinds.index("other") < kinds.index("file") < len(kinds) - 1

    events = cli_events(cli_home, session)
    done = {e["data"]["kind"]: e["data"] for e in events
            if e["type"] == "item.completed" and e["data"]["kind"] != "user_message"}
    assert done["reasoning"]["text"] == "the image will tell"
    assert done["other"]["type"] == "imageView" and done["other"]["summary"] == str(d.workspace / "shot.png")
    assert done["file_change"]["status"] == "completed" and "+blue it is" in done["file_change"]["diff"]
    (asked,) = [e["data"] for e in events if e["type"] == "approval.requested"]
    assert asked["kind"] == "file_change" and asked["item"] == done["file_change"]["item"]
    assert asked["details"]["diff"] == done["file_change"]["diff"]
    assert [e["data"]["decision"] for e in events if e["type"] == "approval.resolved"] == ["approve"]
    assert not page.errors  # type: ignore[attr-defined]
