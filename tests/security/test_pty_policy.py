"""Who gets a pty (a shell as the host's user, which no workspace restriction holds): real relay,
host and SDK clients. By default a device or token held to a workspace is refused with a message
naming the config key; an unrestricted device is served; the host's config.toml decides
(`[agents.pty] allow_restricted`, `allow_remote`). The attack that found it: a device held to a
workspace read the host's key file through `cat` in a pty."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.procs import remove, short_home, tether_json
from tests.security.conftest import configure_host
from tests.security.test_device_scopes import login
from tests.support.deployment import Deployment
from tether.client.connection import connect_local
from tether.client.sdk import Client
from tether.errors import TetherError

pytestmark = pytest.mark.slow


async def _start_pty(client: Client) -> str:
    return await client.start_session(["cat", "/etc/hostname"])  # a file outside every workspace


async def _refused_pty(client: Client, key: str) -> None:
    with pytest.raises(TetherError) as info:
        await _start_pty(client)
    assert info.value.code == "forbidden", info.value
    assert f"agents.pty.{key} is false in its config.toml" in info.value.message
    assert f"{key} = true" in (info.value.hint or "")


async def test_the_host_config_decides_who_gets_a_pty(deployment: Deployment) -> None:
    area = Path(os.path.realpath(deployment.workspace)) / "a"
    area.mkdir()
    held_home, free_home = short_home("td"), short_home("td")
    try:
        for home, name, extra in [(held_home, "held", ["--workspace", str(area)]), (free_home, "free", [])]:
            offer = tether_json(deployment.host_home, "pair", "--scopes", "read,prompt", "--json", *extra)
            login(home, offer["link"], name)
        held_token = tether_json(deployment.host_home, "tokens", "create", "--scopes", "read,prompt",
                                 "--workspace", str(area), "--json")["token"]
        # Defaults: restricted callers refused, an unrestricted device served.
        async with Client(held_home) as held, Client.from_token(held_token) as token, Client(free_home) as free:
            await _refused_pty(held, "allow_restricted")
            await _refused_pty(token, "allow_restricted")
            assert await held.sessions() == []  # nothing was started
            assert await _start_pty(free)
        # The owner allows restricted callers: the same device and token are served.
        configure_host(deployment, "[agents.pty]\nallow_restricted = true\n")
        async with Client(held_home) as held, Client.from_token(held_token) as token:
            for client in (held, token):
                sid = await _start_pty(client)
                assert (await client.session(sid))["workspace"] == str(area)
        # The owner allows no remote pty at all: every device refused, the owner still served.
        configure_host(deployment, "[agents.pty]\nallow_remote = false\nallow_restricted = true\n")
        async with Client(free_home) as free:
            await _refused_pty(free, "allow_remote")
            assert len(await free.sessions()) == 3  # the host still serves it
        owner = await connect_local(deployment.host_home)
        try:
            assert (await owner.call("sessions.start", {"agent": "pty", "command": ["true"]}))["id"]
        finally:
            await owner.close()
    finally:
        remove(held_home, free_home)
