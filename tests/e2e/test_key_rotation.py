"""Host key pinning and rotation: clients pin the host's static key from pairing; a rotation
reaches connected clients over their authenticated channel, and absent ones on their next
connection during the grace period; after it, the old key is refused."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.procs import remove, short_home, tether
from tests.support.deployment import Deployment
from tether import Client

pytestmark = pytest.mark.slow


def pinned(home: Path) -> str:
    return str(json.loads((home / "client" / "hosts.json").read_text())["hosts"][0]["host_static"])


async def rotate(deployment: Deployment, grace: float) -> str:
    async with await Client.open(deployment.host_home) as local:
        result = await local.call("host.rotate_keys", {"grace": grace})
    return str(result["static_key"])


async def until_pinned(home: Path, key: str) -> None:
    async with asyncio.timeout(10):
        while pinned(home) != key:
            await asyncio.sleep(0.05)


async def test_rotation_reaches_connected_and_absent_clients(deployment: Deployment, client_home: Path) -> None:
    absent = short_home("tc")
    try:
        deployment.pair(client_home)
        deployment.pair(absent)
        old = pinned(client_home)
        async with await Client.open(client_home) as connected:
            await connected.sessions()
            new = await rotate(deployment, grace=3600)
            assert new != old
            await until_pinned(client_home, new)  # told over its live channel
        # The absent client still holds the old key: it gets in once, and learns the new one.
        assert pinned(absent) == old
        async with await Client.open(absent) as late:
            assert await late.sessions() == []
            await until_pinned(absent, new)
        # Both now connect with the new key; new pairing links carry it too.
        for home in (client_home, absent):
            assert tether(home, "sessions", "list").returncode == 0
        link = json.loads(tether(deployment.host_home, "pair", "--json").stdout)["link"]
        assert new in link
    finally:
        remove(absent)


async def test_old_key_is_refused_after_the_grace_period(deployment: Deployment, client_home: Path) -> None:
    deployment.pair(client_home)
    old = pinned(client_home)
    rotated = json.loads(tether(deployment.host_home, "host", "rotate-keys", "--grace", "0s", "--json").stdout)
    assert rotated["static_key"] != old and rotated["grace"] == 0
    result = tether(client_home, "sessions", "list", check=False, timeout=30)
    assert result.returncode == 1
    assert "did not prove it holds the key you paired with" in result.stderr
    assert deployment.host.alive
