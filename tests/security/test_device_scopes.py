"""Paired devices through real processes (relay, host, `tether pair --scopes`, `tether login`, SDK):
a device is refused every method beyond its grant, cannot widen itself by pairing a device or
minting a token, cannot revoke or rename another device, never reaches the owner's local-only
methods, and the host keeps serving it after every refusal. The same checks for tokens are in
test_tokens.py."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.procs import remove, short_home, tether_json
from tests.security.conftest import audit_entries
from tests.support.deployment import Deployment
from tether.client.connection import connect_local
from tether.client.sdk import Client
from tether.crypto.encoding import b64u_encode
from tether.errors import TetherError
from tether.protocol.methods import METHOD_SCOPES
from tether.protocol.scopes import Scope, parse_scopes, scope_list

pytestmark = pytest.mark.slow

# Every grant short of admin that `tether pair --scopes` can give, from the narrowest up to the default.
GRANTS = ["read", "prompt", "read,prompt", "read,prompt,approve"]


@dataclass(frozen=True)
class Device:
    home: Path
    id: str
    name: str
    scopes: frozenset[Scope]


PairDevice = Callable[[str, str], Device]


@pytest.fixture
def pair_device(deployment: Deployment) -> Iterator[PairDevice]:
    """Pair a new CLI home as a device: `tether pair --scopes GRANT` on the host, `tether login` on the client."""
    homes: list[Path] = []

    def pair(grant: str, name: str) -> Device:
        home = short_home("td")
        homes.append(home)
        offer = tether_json(deployment.host_home, "pair", "--scopes", grant, "--json")
        assert login(home, offer["link"], name) == scope_list(parse_scopes(grant))
        [record] = [d for d in tether_json(deployment.host_home, "devices", "list", "--json") if d["name"] == name]
        assert record["scopes"] == scope_list(parse_scopes(grant)) and not record["revoked"]
        return Device(home, record["id"], name, parse_scopes(grant))

    yield pair
    remove(*homes)


def login(home: Path, link: str, name: str) -> list[str]:
    """`tether login -` (the link on stdin) in a client home; returns the scopes the host granted."""
    result = tether_json(home, "login", "-", "--name", name, "--json", input=link)
    assert result["host_id"]
    return list(result["scopes"])


def _requests(entries: list[dict[str, Any]], device: Device) -> list[tuple[str, str]]:
    """(method, result) of every request this device made, in order."""
    mine = [e for e in entries if e["actor"]["id"] == device.id and e["method"] != "channel.open"]
    return [(e["method"], e["result"]) for e in mine]


@pytest.mark.parametrize("grant", GRANTS)
async def test_each_device_grant_is_refused_every_method_beyond_it(
    deployment: Deployment, pair_device: PairDevice, grant: str
) -> None:
    device = pair_device(grant, "only-" + grant.replace(",", "-"))
    beyond = {method for method, needed in METHOD_SCOPES.items() if needed not in device.scopes}
    # The loop below must have something to refuse, and the owner's methods are always among it.
    assert beyond and {"hosts.link", "pairing.create", "tokens.create", "devices.revoke"} <= beyond
    tried = []
    async with Client(device.home) as client:
        for method in METHOD_SCOPES:
            needed = METHOD_SCOPES[method]
            if needed in device.scopes:
                continue
            with pytest.raises(TetherError) as info:
                await client.call(method, {})
            assert info.value.code == "forbidden", (method, info.value)
            assert f"device {device.name!r} ({device.id}) lacks the {needed.value!r} scope" in info.value.message
            assert "tether pair --scopes" in (info.value.hint or "")
            tried.append(method)
        assert set(tried) == beyond and len(tried) == len(beyond)
        # The host keeps serving this device, on the same channel, after every refusal.
        if Scope.READ in device.scopes:
            info_ = await client.info()
            assert info_["scopes"] == scope_list(device.scopes)
            assert await client.sessions() == []
        else:
            sid = await client.start_session(["bash"])
            [session] = tether_json(deployment.host_home, "sessions", "list", "--json")
            assert session["id"] == sid
    assert deployment.host.alive
    entries = audit_entries(deployment)
    refused = _requests(entries, device)
    assert {m for m, r in refused if r == "forbidden"} == beyond
    assert all(r == "ok" for m, r in refused if m not in beyond), refused


async def test_a_read_only_device_cannot_escalate_or_touch_other_devices(
    deployment: Deployment, pair_device: PairDevice
) -> None:
    other = pair_device("read,prompt,approve", "other")
    reader = pair_device("read", "reader")
    token = tether_json(deployment.host_home, "tokens", "create", "--scopes", "read", "--name", "owners", "--json")
    attempts = [
        # scope escalation: a new device or a token with its own scope or more
        ("pairing.create", {"scopes": ["read"], "ttl": 60}),
        ("pairing.create", {"scopes": ["read", "prompt", "approve", "admin"], "ttl": 600}),
        ("tokens.create", {"scopes": ["read"], "ttl": 60}),
        ("tokens.create", {"scopes": ["read", "admin"], "ttl": 86400, "name": "escalated"}),
        # other devices and tokens
        ("devices.revoke", {"id": other.id}),
        ("devices.rename", {"id": other.id, "name": "pwned"}),
        ("devices.list", {}),
        ("tokens.revoke", {"id": token["id"]}),
        ("host.rotate_keys", {"grace": 0}),
    ]
    async with Client(reader.home) as client:
        for method, params in attempts:
            with pytest.raises(TetherError) as info:
                await client.call(method, params)
            assert info.value.code == "forbidden", (method, info.value)
            assert "lacks the 'admin' scope" in info.value.message
        # pair.complete only exists as the first message of a pairing channel.
        with pytest.raises(TetherError) as info:
            await client.call("pair.complete", {"name": "sneaky"})
        assert info.value.code == "unknown_method"
        assert (await client.info())["scopes"] == ["read"]
    # Nothing changed: no device revoked, renamed or added, no token minted or revoked.
    devices = {d["name"]: d for d in tether_json(deployment.host_home, "devices", "list", "--json")}
    assert set(devices) == {"other", "reader"}
    assert not devices["other"]["revoked"] and devices["reader"]["scopes"] == ["read"]
    [listed] = tether_json(deployment.host_home, "tokens", "list", "--json")
    assert listed["id"] == token["id"] and listed["status"] == "active"
    async with Client(other.home) as client:
        assert (await client.info())["scopes"] == ["read", "prompt", "approve"]
    refused = _requests(audit_entries(deployment), reader)
    for method, _ in attempts:
        assert (method, "forbidden") in refused
    assert ("pair.complete", "unknown_method") in refused
    assert not [m for m, r in refused if r == "ok" and METHOD_SCOPES.get(m) == Scope.ADMIN]


async def test_an_admin_device_grants_no_more_than_its_own_and_is_not_the_owner(
    deployment: Deployment, pair_device: PairDevice
) -> None:
    admin = pair_device("read,admin", "admin-device")
    fake_host = {
        "host_id": "a" * 20, "name": "evil", "static_public": b64u_encode(os.urandom(32)),
        "relay_url": "ws://127.0.0.1:9",
    }
    # The owner's methods (unix socket only), with valid params so that only the caller is wrong.
    local_only = {
        method: params
        for method, params in [("hosts.link", fake_host), ("hosts.unlink", {"host_id": fake_host["host_id"]}),
                               ("remotes.tunnel", {"name": "anywhere"}), ("remotes.tunnels", {})]
        if method in METHOD_SCOPES
    }
    assert "hosts.link" in local_only
    async with Client(admin.home) as client:
        for method, params, needle in [
            ("pairing.create", {"scopes": ["read", "prompt"], "ttl": 60},
             "cannot grant scopes this caller does not have: prompt"),
            ("tokens.create", {"scopes": ["approve"], "ttl": 60},
             "cannot create a token with scopes this caller does not have: approve"),
            # even a device holding admin is not the owner on the unix socket
            *[(method, params, "only the host's owner") for method, params in local_only.items()],
        ]:
            with pytest.raises(TetherError) as info:
                await client.call(method, params)
            assert info.value.code == "forbidden" and needle in info.value.message, (method, info.value)
        assert all(h.get("host_id") != fake_host["host_id"] for h in await client.call("hosts.linked"))
        offer = await client.call("pairing.create", {"scopes": ["read"], "ttl": 60})
        minted = await client.call("tokens.create", {"scopes": ["read"], "ttl": 60, "name": "from-device"})
    assert offer["scopes"] == ["read"] and minted["scopes"] == ["read"]
    child_home = short_home("td")
    try:
        assert login(child_home, offer["link"], "child") == ["read"]
        async with Client(child_home) as child:
            assert (await child.info())["scopes"] == ["read"]
            with pytest.raises(TetherError) as info:
                await child.call("sessions.start", {"agent": "pty", "command": ["bash"]})
            assert info.value.code == "forbidden"
    finally:
        remove(child_home)
    devices = {d["name"]: d["scopes"] for d in tether_json(deployment.host_home, "devices", "list", "--json")}
    assert devices == {"admin-device": ["read", "admin"], "child": ["read"]}
    # The owner on the unix socket can link a host: the refusal above is the device's, not the params'.
    owner = await connect_local(deployment.host_home)
    try:
        await owner.call("hosts.link", fake_host)
        # A linked host cannot be hidden by the device either; the owner can unlink it.
        async with Client(admin.home) as client:
            assert any(h["host_id"] == fake_host["host_id"] for h in await client.call("hosts.linked"))
            with pytest.raises(TetherError) as info:
                await client.call("hosts.unlink", {"host_id": fake_host["host_id"]})
            assert info.value.code == "forbidden"
            await owner.call("hosts.unlink", {"host_id": fake_host["host_id"]})
            assert all(h["host_id"] != fake_host["host_id"] for h in await client.call("hosts.linked"))
    finally:
        await owner.close()
    refused = _requests(audit_entries(deployment), admin)
    for method in ("pairing.create", "tokens.create", *local_only):
        assert (method, "forbidden") in refused
    assert not [m for m, r in refused if m in local_only and r != "forbidden"], refused
