"""More of what the real Codex does, on the phone and in the CLI ([8] acceptance): the model's
reasoning summary, an image it looks at in the workspace (view_image), a file it changes
(apply_patch through exec_command, approved from its card where Codex asks) and its answer — each as
its own card on a phone viewport, and the same items in ``tether sessions events --json``. Real relay
and host processes, the real Codex CLI, the scripted Responses-API model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.images import png

from .pages import until
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
    with deploy_codex(SCRIPT) as d:
        (d.workspace / "shot.png").write_bytes(png())
        yield d


def test_reasoning_an_image_looked_at_and_a_file_change_on_the_phone(
    page: Any, items_deployment: CodexWebDeployment, cli_home: Path,
) -> None:
    d = items_deployment
    session = start_on_page(page, d, cli_home, "look at shot.png and note its colour")
    # Where Codex's own sandbox (codex-linux-sandbox) cannot start, as on these test machines, the
    # write is asked about: approved from its card.
    ask = page.locator('section.card.approval[data-resolved=""]')
    answer = page.locator(".card.agent", has_text="A blue square; noted.")
    until(lambda: ask.count() or answer.count(), timeout=CODEX_TIMEOUT / 1000, what="the write, or the answer")
    if ask.count():
        assert ask.get_attribute("aria-label") == "Approval: change a file"
        assert "+blue it is" in ask.locator(".diff").text_content()
        ask.locator("button.approve").click()
    answer.wait_for(timeout=CODEX_TIMEOUT)

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

    done = {e["data"]["kind"]: e["data"] for e in cli_events(cli_home, session)
            if e["type"] == "item.completed" and e["data"]["kind"] != "user_message"}
    assert done["reasoning"]["text"] == "the image will tell"
    assert done["other"]["type"] == "imageView" and done["file_change"]["status"] == "completed"
    assert not page.errors  # type: ignore[attr-defined]
