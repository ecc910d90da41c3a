"""What tether shows of what an agent reports that it has no view of (yet): a newer Codex or Claude
Code may send item and message types this version does not know. They are shown as their type and
a readable summary of their payload, never dropped silently and never a crash, and logged once per
type so the owner learns what to upgrade (issue [8] item 4)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

SUMMARY_CHARS = 300
# Fields that identify rather than say anything to a person.
_ID_FIELDS = frozenset({"id", "type", "threadId", "turnId", "itemId", "requestId", "sessionId", "startedAtMs",
                        "completedAtMs", "uuid", "session_id", "parent_tool_use_id"})
_logged: set[tuple[str, str]] = set()


def summarize(payload: Any, limit: int = SUMMARY_CHARS) -> str:
    """``key: value; …`` of a payload's fields (ids left out, nested values flattened), at most
    ``limit`` characters."""
    parts: list[str] = []
    _flatten(payload, "", parts)
    text = "; ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _flatten(value: Any, key: str, parts: list[str], depth: int = 0) -> None:
    if sum(len(p) for p in parts) > SUMMARY_CHARS or depth > 4:
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in _ID_FIELDS and v not in (None, "", [], {}):
                _flatten(v, f"{key}.{k}" if key else str(k), parts, depth + 1)
    elif isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            parts.append(f"{key}: {', '.join(str(v) for v in value)}" if key else ", ".join(str(v) for v in value))
        else:
            for i, v in enumerate(value[:5]):
                _flatten(v, f"{key}[{i}]", parts, depth + 1)
    else:
        text = " ".join(str(value).split())
        parts.append(f"{key}: {text}" if key else text)


def log_unknown(agent: str, what: str, name: str) -> None:
    """Log, once per process, that ``agent`` sent a ``what`` (item, notification, request) of a
    type tether does not know."""
    if (agent, f"{what}:{name}") in _logged:
        return
    _logged.add((agent, f"{what}:{name}"))
    log.warning("%s sent a %s of a type this tether does not know (%r): shown generically; a newer "
                "tether may show it fully", agent, what, name)
