"""LogLimiter: one line per kind per interval, and the count of what it held back."""

from __future__ import annotations

import logging

import pytest

from tether.lograte import LogLimiter


def test_one_line_per_kind_per_interval_with_the_count_held_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limiter = LogLimiter(logging.getLogger("tether.test.lograte"), every=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="tether.test.lograte"):
        for i in range(1000):
            limiter.log(logging.WARNING, "503", "refused %s", f"peer {i}")
        limiter.log(logging.WARNING, "accept", "cannot accept: %s", "Too many open files")
        now[0] = 10.0
        limiter.log(logging.WARNING, "503", "refused %s", "peer 1000")
    assert [r.getMessage() for r in caplog.records] == [
        "refused peer 0",
        "cannot accept: Too many open files",
        "refused peer 1000 (and 999 more like it since the last one)",
    ]


def test_kinds_table_stays_small() -> None:
    limiter = LogLimiter(logging.getLogger("tether.test.lograte"), max_kinds=4)
    for i in range(100):
        limiter.log(logging.ERROR, f"kind {i}", "x")
    assert len(limiter._kinds) <= 4
