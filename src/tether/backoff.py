"""Jittered exponential backoff for reconnect loops (hosts and clients alike)."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, first: float = 0.1, maximum: float = 5.0, factor: float = 2.0) -> None:
        self.first = first
        self.maximum = maximum
        self.factor = factor
        self._next = first

    def next_delay(self) -> float:
        """The next wait: full jitter, so many clients that lost one relay don't return in step."""
        delay = random.uniform(self._next / 2, self._next)
        self._next = min(self._next * self.factor, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.first
