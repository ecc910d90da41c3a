"""An admin device or token manages only grants within its own (real relay, host and SDK clients):
one held to a workspace, or with fewer scopes, cannot see, rename or revoke a wider device or
token, nor rotate the host's key; the wider device keeps working. The attack that found it: a
workspace-restricted admin revoked an unrestricted device, then rotated the key with grace 0."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.procs import remove, short_home, tether_json
from tests.security.test_device_scopes import login
from tests.support.deployment import Deployment
from tether.client.sdk import Client
from tether.errors import TetherError

pytestmark = pytest.mark.slow

ALL = "read,prompt,approve,admin"


def _pair(deployment: Deployment, home: Path, name: str, scopes: str, *extra: str) -> str:
    offer = tether_json(deployment.host_home, "pair", "--scopes", scopes, "--json", *extra)
    login(home, offer["link"], name)
    [device] = [d for d in tether_json(deployment.host_home, "devices", "list", "--json") if d["name"] == name]
    return str(device["id"])


async def _refused(client: Client, method: str, params: dict[str, Any]) -> TetherError:
    with pytest.raises(TetherError) as info:
        await client.call(method, params)
    return info.value


async def test_a_narrower_admin_cannot_touch_a_wider_device_or_token_nor_rotate_keys(
    deployment: Deployment,
) -> None:
    area = Path(os.path.realpath(deployment.workspace)) / "a"
    area.mkdir()
    wide_home, held_home, narrow_home = short_home("td"), short_home("td"), short_home("td")
    try:
        wide = _pair(deployment, wide_home, "wide", ALL)
        held = _pair(deployment, held_home, "held", ALL, "--workspace", str(area))
        narrow = _pair(deployment, narrow_home, "narrow", "read,admin")  # unrestricted, fewer scopes
        wide_token = tether_json(deployment.host_home, "tokens", "create", "--scopes", ALL, "--name", "wide",
                                 "--json")
        for home, me in [(held_home, held), (narrow_home, narrow)]:
            async with Client(home) as client:
                # It sees only itself: the wider device and token are not listed.
                assert [d["id"] for d in await client.call("devices.list")] == [me]
                assert await client.call("tokens.list") == []
                for method, params, absent in [
                    ("devices.revoke", {"id": wide}, {"id": "d_doesnotexist"}),
                    ("devices.rename", {"id": wide, "name": "pwned"}, {"id": "d_doesnotexist", "name": "pwned"}),
                    ("tokens.revoke", {"id": wide_token["id"]}, {"id": "t_doesnotexist"}),
                ]:
                    refused, unknown = await _refused(client, method, params), await _refused(client, method, absent)
                    assert refused.code == "not_found" and "this caller may manage" in refused.message, refused
                    # answered like an id that does not exist: no probing either
                    assert refused.message.replace(params["id"], absent["id"]) == unknown.message, method
                refused = await _refused(client, "host.rotate_keys", {"grace": 0})
                assert refused.code == "forbidden" and "only the host's owner" in refused.message
                # What is within its grant it still manages: itself.
                await client.call("devices.rename", {"id": me, "name": f"{me}-renamed"})
        # The wider device and token are untouched and still served; the key did not change.
        devices = {d["id"]: d for d in tether_json(deployment.host_home, "devices", "list", "--json")}
        assert devices[wide]["name"] == "wide" and not devices[wide]["revoked"]
        assert devices[held]["name"] == f"{held}-renamed"
        [token] = tether_json(deployment.host_home, "tokens", "list", "--json")
        assert token["status"] == "active"
        async with Client(wide_home) as client:
            assert (await client.info())["scopes"] == ALL.split(",")
            assert [d["id"] for d in await client.call("devices.list")] == [wide, held, narrow]
        async with Client.from_token(wide_token["token"]) as client:
            assert (await client.info())["scopes"] == ALL.split(",")
        # The owner still rotates the key (locally only).
        rotated = tether_json(deployment.host_home, "host", "rotate-keys", "--grace", "1h", "--json")
        assert rotated["grace"] == 3600
    finally:
        remove(wide_home, held_home, narrow_home)
