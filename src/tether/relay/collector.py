"""How often a relay process lets Python look for garbage cycles among all its objects.

A relay's objects are mostly its connections, and they live long. CPython (3.11) considers a full
collection every 10 collections of its second generation and runs it once the objects that
outlived the young generations have grown by a quarter: a node taking 5,000 hosts in a failover
walked every live object nine times, and spent a quarter of its CPU doing it (docs/benchmarks.md,
"the garbage collector"). The young generations keep CPython's thresholds (short pauses); a full
collection is considered only every :data:`FULL_EVERY` second-generation ones, and still only once
the old objects have grown by a quarter.
"""

from __future__ import annotations

import gc

__all__ = ["FULL_EVERY", "collect_less_often"]

#: Second-generation collections between two chances of a full one (CPython's default: 10). About
#: 700,000 objects allocated and not freed: a cyclic garbage of closed connections waits at most
#: that long.
FULL_EVERY = 100


def collect_less_often() -> None:
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_EVERY)
