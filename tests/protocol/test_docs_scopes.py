"""docs/security.md shows which scope every application method needs; it must equal the code's table.
docs/protocol.md documents every method and every event type."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tether.protocol.methods import METHOD_SCOPES

SECURITY_MD = Path(__file__).resolve().parents[2] / "docs" / "security.md"
_HEADER = re.compile(r"^\|\s*method\s*\|\s*scope\s*\|\s*$")
_SEPARATOR = re.compile(r"^\|\s*:?-+:?\s*\|\s*:?-+:?\s*\|\s*$")


def parse_scope_table(markdown: str) -> dict[str, str]:
    """The ``| method | scope |`` table of ``markdown`` as {method: scope}; AssertionError if it is
    missing, appears twice, or has a malformed or duplicated row."""
    lines = markdown.splitlines()
    starts = [i for i, line in enumerate(lines) if _HEADER.match(line.strip())]
    assert len(starts) == 1, f"expected exactly one '| method | scope |' table, found {len(starts)}"
    i = starts[0] + 1
    assert i < len(lines) and _SEPARATOR.match(lines[i].strip()), "the table needs a |---|---| line"
    table: dict[str, str] = {}
    for line in lines[i + 1 :]:
        line = line.strip()
        if not line.startswith("|"):
            break
        cells = [c.strip().strip("`").strip() for c in line.strip("|").split("|")]
        assert len(cells) == 2 and all(cells), f"malformed row: {line!r}"
        method, scope = cells
        assert method not in table, f"{method} is listed twice"
        table[method] = scope
    return table


def test_security_md_scope_table_equals_method_scopes() -> None:
    documented = parse_scope_table(SECURITY_MD.read_text(encoding="utf-8"))
    expected = {method: scope.value for method, scope in METHOD_SCOPES.items()}
    missing = sorted(expected.keys() - documented.keys())
    extra = sorted(documented.keys() - expected.keys())
    wrong = sorted(m for m in expected.keys() & documented.keys() if expected[m] != documented[m])
    assert not (missing or extra or wrong), (
        f"docs/security.md disagrees with METHOD_SCOPES: missing {missing}, not methods {extra}, "
        f"wrong scope {[(m, documented[m], expected[m]) for m in wrong]}"
    )


def test_the_check_notices_drift() -> None:
    rows = "\n".join(f"| `{m}` | `{s.value}` |" for m, s in METHOD_SCOPES.items())
    good = f"text\n\n| method | scope |\n|---|---|\n{rows}\n\nmore text\n"
    assert parse_scope_table(good) == {m: s.value for m, s in METHOD_SCOPES.items()}
    method = next(iter(METHOD_SCOPES))
    widened = good.replace(f"| `{method}` | `{METHOD_SCOPES[method].value}` |", f"| `{method}` | `admin` |")
    assert parse_scope_table(widened) != parse_scope_table(good)
    dropped = good.replace(f"| `{method}` | `{METHOD_SCOPES[method].value}` |\n", "")
    assert method not in parse_scope_table(dropped)
    with pytest.raises(AssertionError):
        parse_scope_table(good + "\n| method | scope |\n|---|---|\n")
    with pytest.raises(AssertionError):
        parse_scope_table(good.replace(rows, rows + f"\n| `{method}` | `read` |"))


def _first_cells(markdown: str, heading: str) -> set[str]:
    """The first-column names (in backquotes) of the table rows under ``heading``, up to the next
    heading."""
    section = markdown.split(heading, 1)[1].split("\n### ", 1)[0]
    return {m.group(1) for m in re.finditer(r"^\|\s*`([a-z_.]+)`\s*\|", section, re.MULTILINE)}


def test_protocol_md_documents_every_method_and_event_type() -> None:
    from tether.protocol.events import EventType

    text = (SECURITY_MD.parent / "protocol.md").read_text(encoding="utf-8")
    methods = _first_cells(text, "### 5.2 Methods")
    events = _first_cells(text, "### 5.3 Events")
    assert methods == set(METHOD_SCOPES), (
        f"docs/protocol.md §5.2: missing {sorted(set(METHOD_SCOPES) - methods)}, "
        f"not methods {sorted(methods - set(METHOD_SCOPES))}"
    )
    types = {t.value for t in EventType}
    assert events == types, (
        f"docs/protocol.md §5.3: missing {sorted(types - events)}, not events {sorted(events - types)}"
    )
