"""A host daemon in this test's own event loop, with a throwaway home and workspace and no relay:
for tests that talk to it through its unix socket (the same API a device's channel gets)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from tests.procs import remove, short_home
from tether.host.daemon import HostDaemon
from tether.sshremote.hooks import DesktopRemotes


@contextlib.asynccontextmanager
async def running_host(**options: Any) -> AsyncIterator[HostDaemon]:
    """``options`` go to :class:`HostDaemon` (e.g. ``public_url``)."""
    home, workspace = short_home("ih"), short_home("iw")
    daemon = HostDaemon(home, relay_url=None, workspaces=[workspace], remotes=DesktopRemotes(home), **options)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()
        remove(home, workspace)
