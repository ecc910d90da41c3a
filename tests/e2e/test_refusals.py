"""Refusals through real processes: each ends with a clear message, and the host keeps running."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from tests.procs import Proc, login, remove, short_home, tether, tether_json
from tests.support.deployment import Deployment
from tether.client.connection import connect_remote
from tether.client.state import ClientState
from tether.errors import TetherError

pytestmark = pytest.mark.slow


def _edit_hosts(home: Path, **changes: str) -> None:
    path = home / "client" / "hosts.json"
    data = json.loads(path.read_text())
    for host in data["hosts"]:
        host.update(changes)
    path.write_text(json.dumps(data))


def _assert_host_still_serves(deployment: Deployment) -> None:
    assert deployment.host.alive
    other = short_home("tc")
    try:
        deployment.pair(other)
        assert tether_json(other, "sessions", "list", "--json") == tether_json(
            deployment.host_home, "sessions", "list", "--json"
        )
    finally:
        remove(other)


def test_wrong_host_key_is_refused(deployment: Deployment, client_home: Path) -> None:
    deployment.pair(client_home)
    from tether.crypto.encoding import b64u_encode

    _edit_hosts(client_home, host_static=b64u_encode(os.urandom(32)))
    result = tether(client_home, "sessions", "list", check=False, timeout=30)
    assert result.returncode == 1
    assert "did not prove it holds the key you paired with" in result.stderr
    assert "Traceback" not in result.stderr
    _assert_host_still_serves(deployment)


def test_unknown_device_is_refused(deployment: Deployment, client_home: Path) -> None:
    deployment.pair(client_home)
    # Same host entry, but a device key the host has never seen.
    (client_home / "client" / "keys.json").unlink()
    from tether.crypto.keys import Identity

    Identity.generate().save(client_home / "client" / "keys.json")
    result = tether(client_home, "sessions", "list", check=False, timeout=30)
    assert result.returncode == 1
    assert "not authorised on that host" in result.stderr
    _assert_host_still_serves(deployment)


def test_pairing_link_works_once(deployment: Deployment, client_home: Path) -> None:
    link = tether_json(deployment.host_home, "pair", "--json")["link"]
    login(client_home, link)
    second = short_home("tc")
    try:
        result = login(second, link, check=False, timeout=30)
        assert result.returncode == 1
        assert "no longer valid" in result.stderr
        assert "tether pair" in result.stderr
    finally:
        remove(second)
    _assert_host_still_serves(deployment)


def test_expired_pairing_link_is_refused(deployment: Deployment, client_home: Path) -> None:
    offer = tether_json(deployment.host_home, "pair", "--ttl", "1s", "--json")
    assert offer["expires_at"] - time.time() <= 1.5
    time.sleep(max(0.0, offer["expires_at"] - time.time()) + 0.5)
    result = login(client_home, offer["link"], check=False, timeout=30)
    assert result.returncode == 1
    assert "no longer valid" in result.stderr
    assert not (client_home / "client" / "hosts.json").exists()
    _assert_host_still_serves(deployment)


def test_bad_link_is_a_usage_error(client_home: Path) -> None:
    result = login(client_home, "https://example.invalid/#pair=nope", check=False)
    assert result.returncode == 2
    assert "not a tether pairing link" in result.stderr


@pytest.mark.parametrize("mode", ["flip", "replay", "reorder", "drop"])
async def test_relay_tampering_closes_the_channel(deployment: Deployment, client_home: Path, mode: str) -> None:
    deployment.pair(client_home)
    evil = Proc(
        [sys.executable, "-m", "tests.support.evil_relay", "--listen", "127.0.0.1:0",
         "--upstream", f"{deployment.relay_url}/ws", "--mode", mode, "--after", "1"],
        name="evil-relay",
        pipe_stdout=True,
    )
    try:
        port = int(evil.popen.stdout.readline().split()[1])  # type: ignore[union-attr]
        _edit_hosts(client_home, relay_url=f"ws://127.0.0.1:{port}")
        state = ClientState(client_home)
        conn = await connect_remote(state, state.find_host(None))
        try:
            # Several requests in flight: a dropped or held-back frame shows when the next arrives.
            results = await asyncio.gather(
                *(conn.call("host.info", timeout=10) for _ in range(3)), return_exceptions=True
            )
        finally:
            await conn.close()
        errors = [r for r in results if isinstance(r, BaseException)]
        assert errors, f"{mode}: the tampered channel kept working"
        assert all(isinstance(e, TetherError) for e in errors), errors
        assert any("tampered with, replayed, dropped or reordered" in str(e) for e in errors), errors
    finally:
        evil.stop()
    _assert_host_still_serves(deployment)
    assert "tampered" in deployment.host.log, "the host saw the tampering and closed the channel"
