"""The /metrics histogram (src/tether/relay/histogram.py): each bucket counts the observations at
or under its bound, cumulatively, as Prometheus reads them."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from tether.relay.histogram import Histogram

BOUNDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def buckets(h: Histogram) -> dict[str, int]:
    return {le: int(n) for le, n in (re.fullmatch(r'x_bucket\{le="(.+)"\} (\d+)', line).groups()  # type: ignore[union-attr]
                                     for line in h.lines() if line.startswith("x_bucket"))}


def test_a_value_on_a_bound_is_in_that_bound_s_bucket_and_the_lines_are_prometheus_s() -> None:
    h = Histogram("x", "What x is.", BOUNDS)
    for value in (0.1, 0.1000001, 7, 11):
        h.observe(value)
    assert h.lines() == [
        "# HELP x What x is.",
        "# TYPE x histogram",
        'x_bucket{le="0.05"} 0', 'x_bucket{le="0.1"} 1', 'x_bucket{le="0.25"} 2', 'x_bucket{le="0.5"} 2',
        'x_bucket{le="1"} 2', 'x_bucket{le="2.5"} 2', 'x_bucket{le="5"} 2', 'x_bucket{le="10"} 3',
        'x_bucket{le="+Inf"} 4', "x_sum 18.200000", "x_count 4",
    ]


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=50))
def test_every_bucket_counts_what_is_at_or_under_its_bound(values: list[float]) -> None:
    h = Histogram("x", "x", reversed(BOUNDS))  # bounds given in any order
    for value in values:
        h.observe(value)
    got = buckets(h)
    assert got == {**{f"{b:g}": sum(v <= b for v in values) for b in BOUNDS}, "+Inf": len(values)}
    assert h.count == len(values) and abs(h.sum - sum(values)) < 1e-6
