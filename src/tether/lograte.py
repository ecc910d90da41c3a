"""Log lines that an attacker can repeat at will, at most once per interval each.

A flood turns a line per connection into a disk-filling stream (188 MB in a minute of accept
errors, issue [6] item 9). :class:`LogLimiter` lets one line of each kind through per ``every``
seconds; the next one that gets through says how many were held back meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class LogLimiter:
    """``log(level, kind, msg, *args)``: like ``Logger.log``, at most once per ``every`` s per kind.

    ``kind`` is chosen by the caller from a fixed set (never from peer input), so the table stays
    small; it is cleared anyway should it ever pass ``max_kinds``.
    """

    def __init__(
        self,
        logger: logging.Logger,
        every: float = 10.0,
        *,
        max_kinds: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.every = every
        self.max_kinds = max_kinds
        self._clock = clock
        # kind -> [when the next line may go out, lines held back since the last one]
        self._kinds: dict[str, list[float]] = {}

    def log(self, level: int, kind: str, msg: str, *args: object) -> None:
        if not self.logger.isEnabledFor(level):
            return
        now = self._clock()
        state = self._kinds.get(kind)
        if state is not None and now < state[0]:
            state[1] += 1
            return
        if state is None and len(self._kinds) >= self.max_kinds:
            self._kinds.clear()
        held = int(state[1]) if state is not None else 0
        self._kinds[kind] = [now + self.every, 0]
        if held:
            msg += f" (and {held} more like it since the last one)"
        self.logger.log(level, msg, *args)
