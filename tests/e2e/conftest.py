from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

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

    def pair(self, client_home: Path, *extra: str) -> str:
        """Pair ``client_home`` as a device of this host; returns the device's host entry id."""
        offer = tether_json(self.host_home, "pair", "--json", *extra)
        result = login(client_home, offer["link"], "--name", "test-client", "--json")
        return str(json.loads(result.stdout)["host_id"])


@contextmanager
def deployed(config: str | None = None) -> Iterator[Deployment]:
    """A relay and a host; ``config`` is the host's ``config.toml``, if any."""
    host_home = short_home("th")
    workspace = short_home("tw")
    if config is not None:
        (host_home / "config.toml").write_text(config)
    relay, port = start_relay()
    host = start_host(host_home, f"ws://127.0.0.1:{port}", workspace)
    deployment = Deployment(relay, port, host, host_home, workspace)
    try:
        yield deployment
    finally:
        # A test may have replaced the relay or the host (killed and restarted it): stop the current one.
        deployment.host.stop()
        deployment.relay.stop()
        remove(host_home, workspace)


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    with deployed() as deployment:
        yield deployment


@pytest.fixture
def client_home() -> Iterator[Path]:
    home = short_home("tc")
    yield home
    remove(home)
