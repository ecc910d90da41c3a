"""Which events of the log are worth a push, and what the push says (no I/O).

A push carries the minimum (ARCHITECTURE §8b): the host, the session and its title, and what kind
of attention it asks for — never a command line, output, an answer or a secret; the service worker
words it. Tags are the page's own (``web/static/notify.js``), so a push and an in-page notification
of the same thing replace each other instead of showing twice, and an approval answered anywhere
closes its notification by a push of kind ``close``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tether.host.event import Event
from tether.protocol.events import ApprovalKind, EventType

TITLE_CHARS = 60

# kind → (Urgency, TTL seconds) (RFC 8030 §5.3, §5.2): a person is waited for now; a turn's end
# is news for an hour; a close is worth delivering as long as the notification may still show.
DELIVERY = {
    "approval": ("high", 24 * 3600),
    "question": ("high", 24 * 3600),
    "turn_finished": ("normal", 3600),
    "turn_failed": ("normal", 3600),
    "session_finished": ("normal", 3600),
    "session_failed": ("normal", 3600),
    "close": ("normal", 24 * 3600),
}


@dataclass(frozen=True)
class Notice:
    kind: str
    session: str
    tag: str
    approval: str | None = None

    @property
    def urgency(self) -> str:
        return DELIVERY[self.kind][0]

    @property
    def ttl(self) -> int:
        return DELIVERY[self.kind][1]

    def payload(self, *, host_id: str, host_name: str, title: str) -> bytes:
        """The push's plaintext (sealed to the browser's keys before it leaves the host)."""
        body: dict[str, Any] = {"v": 1, "kind": self.kind, "host": host_id, "host_name": host_name[:TITLE_CHARS],
                                "session": self.session, "title": title[:TITLE_CHARS], "tag": self.tag}
        if self.approval:
            body["approval"] = self.approval
        return json.dumps(body, separators=(",", ":")).encode()


def approval_tag(host_id: str, approval: str) -> str:
    return f"tether:{host_id}:approval:{approval}"


def session_tag(host_id: str, session: str) -> str:
    return f"tether:{host_id}:session:{session}"


def notice_for(event: Event, host_id: str) -> Notice | None:
    """The push an event asks for, if any."""
    sid, d = event.session, event.data
    if sid is None:
        return None
    if event.type == EventType.APPROVAL_REQUESTED:
        kind = "question" if d.get("kind") == ApprovalKind.QUESTION else "approval"
        approval = str(d.get("approval"))
        return Notice(kind, sid, approval_tag(host_id, approval), approval)
    if event.type in (EventType.APPROVAL_RESOLVED, EventType.APPROVAL_CLEARED):
        approval = str(d.get("approval"))
        return Notice("close", sid, approval_tag(host_id, approval), approval)
    if event.type == EventType.TURN_COMPLETED:
        status = d.get("status")
        if status not in ("completed", "failed"):
            return None  # interrupted: someone did that on purpose
        return Notice("turn_finished" if status == "completed" else "turn_failed", sid, session_tag(host_id, sid))
    if event.type == EventType.SESSION_EXITED:
        kind = "session_finished" if d.get("exit_code") == 0 else "session_failed"
        return Notice(kind, sid, session_tag(host_id, sid))
    return None
