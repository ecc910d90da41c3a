"""Every event type's data is declared once (protocol/events.py, [8] item 5): the log refuses an
event that does not have its declared shape, and the web client names only event types, item kinds
and approval kinds the host declares — and has a card for every item kind — so the page cannot
drift from the host."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.host.db import Database
from tether.host.eventlog import EventLog
from tether.protocol.events import (
    EVENT_DATA,
    ApprovalCleared,
    ApprovalKind,
    BadEvent,
    CommandDone,
    CommandStarted,
    EventType,
    ItemCompleted,
    ItemKind,
    ItemStarted,
    SessionDeleted,
    check_data,
    completed,
    encoded,
)

STATIC = Path(__file__).resolve().parents[2] / "src" / "tether" / "web" / "static"
# Cards the page draws that are not items of the host: a turn's end, its reconnecting state, a notice.
PAGE_ONLY_KINDS = {"turn_end", "retrying", "notice"}
APPROVAL_KINDS = {k.value for k in ApprovalKind}

GOOD: list[tuple[EventType, dict[str, Any]]] = [
    (EventType.SESSION_OUTPUT, {"stream": "pty", "data": "hi"}),
    (EventType.ITEM_STARTED, {"turn": "t_1", "item": "i_1", "kind": "command", "command": "ls", "cwd": "/w"}),
    (EventType.ITEM_COMPLETED, {"turn": "t_1", "item": "i_1", "kind": ItemKind.COMMAND, "status": "failed",
                                "command": "ls", "cwd": "/w", "exit_code": None, "output": ""}),
    (EventType.ITEM_COMPLETED, {"turn": "t_1", "item": "i_2", "kind": "other", "status": "completed",
                                "type": "webSearch", "title": "web search", "summary": "q", "extra": 1}),
    (EventType.APPROVAL_RESOLVED, {"approval": "ap_1", "decision": "answered", "by": {"id": "d", "name": "n"},
                                   "answers": {"q": ["a"]}}),
]
BAD: list[tuple[str, dict[str, Any], str]] = [
    (EventType.SESSION_OUTPUT, {"stream": "pty"}, "missing required field `data`"),
    (EventType.SESSION_EXITED, {"exit_code": "0", "signal": None, "reason": None}, "Expected `int | null`"),
    (EventType.ITEM_STARTED, {"turn": "t", "item": "i", "kind": "hologram"}, "Invalid value 'hologram'"),
    (EventType.ITEM_COMPLETED, {"turn": "t", "item": "i", "kind": "command", "status": "done", "exit_code": 0,
                                "output": ""}, "Invalid enum value 'done'"),
    (EventType.TURN_RETRYING, {"turn": "t", "attempt": 1.5, "message": "m", "details": None}, "Expected `int`"),
    ("session.hologram", {}, "no event type 'session.hologram' is declared"),
]


def test_every_event_type_has_a_declared_shape() -> None:
    assert set(EVENT_DATA) == set(EventType)


def test_a_struct_says_its_event_type_and_encodes_as_the_log_stores_it() -> None:
    started = CommandStarted(turn="t_1", item="i_1", command="ls", cwd="/w")
    assert encoded(started) == (EventType.ITEM_STARTED,
                                {"kind": "command", "turn": "t_1", "item": "i_1", "command": "ls", "cwd": "/w"})
    done = completed(started, "failed", exit_code=None, output="")
    assert isinstance(done, CommandDone)
    type_, data = encoded(done)
    assert type_ is EventType.ITEM_COMPLETED and data["command"] == "ls" and data["status"] == "failed"
    assert encoded(SessionDeleted()) == (EventType.SESSION_DELETED, {})
    assert encoded(ApprovalCleared(approval="ap_1", reason="r"))[0] is EventType.APPROVAL_CLEARED


@pytest.mark.parametrize("started_as", get_args(ItemStarted))
def test_every_kind_of_item_completes_as_its_own_kind(started_as: Any) -> None:
    """Each started struct has a completed one of its kind: what an adapter closes on a failed
    turn (turn.fail_items) is still the item it opened, with every field the page draws."""
    fields = {"turn": "t", "item": "i", "command": "c", "cwd": "/", "path": "p", "diff": "", "message": "m",
              "steps": [], "tool": "x", "input": "", "paths": [], "type": "y", "title": "z", "summary": ""}
    wanted = {f: fields[f] for f in started_as.__struct_fields__ if f in fields}
    started = started_as(**wanted)
    results = {"text": "", "exit_code": None, "output": ""}
    done_as = next(d for d in get_args(ItemCompleted) if d.__struct_config__.tag == started_as.__struct_config__.tag)
    extra = {f: v for f, v in results.items() if f in done_as.__struct_fields__ and f not in wanted}
    type_, data = encoded(completed(started, "completed", **extra))
    assert type_ is EventType.ITEM_COMPLETED and data["kind"] == started_as.__struct_config__.tag
    check_data(type_, data)


def test_every_struct_of_the_log_has_one_event_type() -> None:
    """No two event types share a struct: the struct alone says what an adapter logs."""
    structs = [cls for shape in EVENT_DATA.values() for cls in (get_args(shape) or (shape,))]
    assert len(structs) == len(set(structs))


@pytest.mark.parametrize(("type_", "data"), GOOD)
def test_declared_shapes_take_what_the_host_logs(type_: EventType, data: dict[str, Any]) -> None:
    check_data(type_, data)


@pytest.mark.parametrize(("type_", "data", "why"), BAD)
async def test_the_log_refuses_an_event_of_the_wrong_shape_and_writes_nothing(
    tmp_path: Path, type_: str, data: dict[str, Any], why: str
) -> None:
    db = await Database.open(tmp_path / "host.db")
    log = await EventLog.open(db)
    try:
        with pytest.raises(BadEvent, match=re.escape(why)):
            await log.append("s_1", type_, data)
        assert log.head == 0 and await log.read(0, 10) == []
    finally:
        await log.close()
        await db.close()


@given(st.sampled_from(sorted(EventType)), st.dictionaries(
    st.sampled_from(["turn", "item", "kind", "status", "data", "stream", "text", "approval", "cols", "x"]),
    st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.text(max_size=3), max_size=2)),
    max_size=6))
def test_any_data_is_accepted_or_refused_with_bad_event(type_: EventType, data: dict[str, Any]) -> None:
    try:
        check_data(type_, data)
    except BadEvent:
        pass


def js(path: str) -> str:
    return (STATIC / path).read_text(encoding="utf-8")


def test_the_page_names_only_declared_event_types() -> None:
    sources = {p.name: p.read_text(encoding="utf-8") for p in STATIC.rglob("*.js") if "vendor" not in p.parts}
    named = set()
    for text in sources.values():
        # Event families only: the service worker's own messages ("tether.open") are not events.
        family = r"((?:session|turn|item|approval|agent|host|mailbox)\.[a-z_.]+)"
        named |= set(re.findall(rf'case "{family}":', text))
        named |= set(re.findall(rf'type === "{family}"', text))
    assert len(named) > 15
    assert named - {t.value for t in EventType} == set(), "the page names event types the host never logs"


def test_the_page_has_a_card_for_every_item_kind_and_knows_the_approval_kinds() -> None:
    text = js("ui/conversation.js")
    body = text[text.index("function itemCard("):text.index("const DECISION_WORDS")]
    cards = set(re.findall(r'case "([a-z_]+)":', body))
    assert cards - PAGE_ONLY_KINDS == {k.value for k in ItemKind}, "a card per item kind, and no other"
    # What an approval (ap) or an event's data (d) is: not the feed's own change kinds.
    page_kinds = set(re.findall(r'\b(?:ap|d)\.kind === "([a-z_]+)"', text + js("notify.js") + js("model.js")))
    assert page_kinds and page_kinds <= APPROVAL_KINDS | {k.value for k in ItemKind}
