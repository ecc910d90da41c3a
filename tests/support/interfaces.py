"""Keeping the browser tests apart from the tests that change this machine's network interfaces.

Chromium watches the interfaces (netlink). When one is added, given an address or removed — as the
SSH tests' network namespace does with its veth pair — it fails the requests it has in flight with
``net::ERR_NETWORK_CHANGED``: a page that was loading stays blank (seen in CI, and reproduced by
flapping a veth pair under a browser test). So a browser page holds a shared lock while it lives,
and a change to the interfaces takes it exclusively: it waits for the pages open on other workers
to close, and none opens until Chromium has seen the change and settled.
"""

from __future__ import annotations

import contextlib
import fcntl
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

# One lock for the machine, not per run: two suites at once (a local run beside a clean-clone CI)
# disturb each other just the same.
LOCK = Path(tempfile.gettempdir()) / "tether-tests-interfaces.lock"
# Chromium hears of a change asynchronously and then flushes its sockets; give it that long after
# the last change before a page may load again.
SETTLE_S = 1.0


@contextlib.contextmanager
def _locked(kind: int) -> Iterator[None]:
    with open(LOCK, "a") as f:
        fcntl.flock(f, kind)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def pages_may_load() -> Iterator[None]:
    """Held by a browser page for its whole life."""
    with _locked(fcntl.LOCK_SH):
        yield


@contextlib.contextmanager
def changing_interfaces() -> Iterator[None]:
    """Held around commands that add, address or remove network interfaces here."""
    with _locked(fcntl.LOCK_EX):
        try:
            yield
        finally:
            time.sleep(SETTLE_S)
