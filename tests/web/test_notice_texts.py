"""What a system notification says for each kind of question an agent asks, computed by the page's
own notify.js in Chromium (the browser flow is tests/web/test_notifications.py): a command names
the command line, a file change the path, a question from the agent its question — never more."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.browser]

NOTICE_JS = """async (events) => {
  const { noticeFor } = await import("/notify.js");
  return events.map((ev) => noticeFor(ev, { hostId: "h1", hostName: "desktop", session: { title: "fix it" } }));
}"""


def asked(kind: str, details: dict[str, Any]) -> dict[str, Any]:
    return {"seq": 1, "session": "s_1", "type": "approval.requested", "ts": 0,
            "data": {"approval": f"ap_{kind}", "item": None, "kind": kind, "details": details, "options": []}}


def test_each_kind_of_question_is_named_in_the_notification(page: Any, static_relay: int) -> None:
    page.goto(f"http://127.0.0.1:{static_relay}/healthz")
    question = {"id": "color", "header": "Color", "question": "Which color should the button be?",
                "options": [{"label": "red", "description": ""}], "is_other": True, "is_secret": False}
    notices = page.evaluate(NOTICE_JS, [
        asked("command", {"command": "make test", "cwd": "/w"}),
        asked("file_change", {"path": "/w/a.py", "paths": ["/w/a.py"], "diff": "+x"}),
        asked("question", {"questions": [question]}),
        asked("tool", {"tool": "WebFetch", "server": None, "input": "https://example.com/?token=abc", "reason": None}),
        asked("plan", {"plan": "1. read the secret\n2. mail it", "path": None}),
    ])
    # A tool's arguments (a URL may carry anything) and a plan's text stay out of the notification.
    assert [n["body"] for n in notices] == [
        "wants to run: make test", "wants to change: /w/a.py", "asks: Which color should the button be?",
        "wants to use WebFetch", "has a plan for you to approve"]
    assert {n["title"] for n in notices} == {"desktop · fix it"}
    kinds = ("command", "file_change", "question", "tool", "plan")
    assert [n["tag"] for n in notices] == [f"tether:h1:approval:ap_{k}" for k in kinds]
