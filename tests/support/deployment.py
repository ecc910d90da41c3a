"""A relay and a host as real processes, the deployment most end-to-end, security and browser
tests start from (tests/e2e, tests/security, tests/web)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.procs import Proc, login, remove, short_home, start_host, start_relay, tether_json


@dataclass
class Deployment:
    relay: Proc
    relay_port: int
    host: Proc
    host_home: Path
    workspace: Path

    @property
    def relay_url(self) -> str:
        return f"ws://127.0.0.1:{self.relay_port}"

    @property
    def origin(self) -> str:
        """Where the relay serves the web client."""
        return f"http://127.0.0.1:{self.relay_port}"

    def pairing_link(self, *extra: str) -> str:
        """A new pairing link of the host (``extra``: `tether pair` options), pointing at the relay."""
        link = str(tether_json(self.host_home, "pair", "--json", *extra)["link"])
        assert re.match(rf"^{re.escape(self.origin)}/#pair=", link), link
        return link

    def pair(self, client_home: Path, *extra: str) -> str:
        """Pair ``client_home`` as a device of this host; returns the device's host entry id."""
        offer = tether_json(self.host_home, "pair", "--json", *extra)
        result = login(client_home, offer["link"], "--name", "test-client", "--json")
        return str(json.loads(result.stdout)["host_id"])


@contextmanager
def deployed(
    config: str | None = None, *, relay: Callable[..., tuple[Proc, int]] = start_relay
) -> Iterator[Deployment]:
    """A relay (started by ``relay(port, home=...)``) and a host on it; ``config`` is the host's
    ``config.toml``."""
    host_home = short_home("th")
    workspace = short_home("tw")
    relay_home = short_home("tr")
    if config is not None:
        (host_home / "config.toml").write_text(config)
    relay_proc, port = relay(0, home=relay_home)
    deployment = Deployment(relay_proc, port, start_host(host_home, f"ws://127.0.0.1:{port}", workspace),
                            host_home, workspace)
    try:
        yield deployment
    finally:
        # A test may have replaced the relay or the host (killed and restarted it): stop the current one.
        deployment.host.stop()
        deployment.relay.stop()
        remove(host_home, workspace, relay_home)
