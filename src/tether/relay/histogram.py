"""A histogram for ``/metrics``, in Prometheus's text format: how many observations fell at or
under each bound (``_bucket{le="…"}``, cumulative), their sum and their count."""

from __future__ import annotations

import bisect
from collections.abc import Iterable


class Histogram:
    __slots__ = ("_counts", "bounds", "count", "help", "name", "sum")

    def __init__(self, name: str, help: str, bounds: Iterable[float]) -> None:
        self.name = name
        self.help = help
        self.bounds = tuple(sorted(bounds))
        self._counts = [0] * len(self.bounds)  # per bucket, not cumulative; over the last: count only
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        i = bisect.bisect_left(self.bounds, value)  # the first bound ≥ value
        if i < len(self._counts):
            self._counts[i] += 1

    def lines(self) -> list[str]:
        name = self.name
        out = [f"# HELP {name} {self.help}", f"# TYPE {name} histogram"]
        running = 0
        for bound, n in zip(self.bounds, self._counts, strict=True):
            running += n
            out.append(f'{name}_bucket{{le="{bound:g}"}} {running}')
        out += [f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {self.sum:.6f}", f"{name}_count {self.count}"]
        return out
