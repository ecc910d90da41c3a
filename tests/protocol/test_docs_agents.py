"""docs/agents.md, the coverage table of issue [8], names only tests that exist: each
``tests/…py`` path and ``::test_name`` it cites is found in the tree, so the table cannot go stale
when a test is renamed or removed."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TABLE = REPO / "docs" / "agents.md"


def test_every_test_the_coverage_table_names_exists() -> None:
    cited = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", TABLE.read_text())
    assert len(cited) > 30
    missing = []
    for path, name in cited:
        source = REPO / path
        if not source.is_file():
            missing.append(path)
        elif name and not re.search(rf"^(async )?def {name}\(", source.read_text(), re.MULTILINE):
            missing.append(f"{path}::{name}")
    assert missing == [], "docs/agents.md cites tests that do not exist"


def test_the_short_form_of_a_test_in_the_table_is_still_checked() -> None:
    # "…::name" repeats the path of the cite before it on the same row.
    for row in TABLE.read_text().splitlines():
        for prefix, name in re.findall(r"`(tests/[\w/]+\.py)::\w+`.*?`…::(\w+)`", row):
            assert re.search(rf"^(async )?def {name}\(", (REPO / prefix).read_text(), re.MULTILINE), name
