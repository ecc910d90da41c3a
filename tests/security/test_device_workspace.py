"""A device paired with `tether pair --workspace DIR` is held to that directory (real relay, host
and CLI/SDK clients): its sessions start there by default and nowhere else, `..` and symlinks
out are refused, and a device it pairs is held at least as tightly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.procs import remove, short_home, tether, tether_json
from tests.security.conftest import configure_host
from tests.security.test_device_scopes import login
from tests.support.deployment import Deployment
from tether.client.sdk import Client
from tether.errors import TetherError

pytestmark = pytest.mark.slow


async def test_a_device_paired_for_a_workspace_stays_in_it(deployment: Deployment) -> None:
    ws = Path(os.path.realpath(deployment.workspace))
    mine, other = ws / "mine", ws / "other"
    mine.mkdir()
    other.mkdir()
    (mine / "escape").symlink_to(other)
    # Its pty sessions are what is checked here: a restricted caller gets one only when allowed.
    configure_host(deployment, "[agents.pty]\nallow_restricted = true\n")
    home, child_home = short_home("td"), short_home("td")
    try:
        offer = tether_json(deployment.host_home, "pair", "--scopes", "read,prompt,admin", "--workspace",
                            str(mine), "--json")
        assert offer["workspace"] == str(mine)
        login(home, offer["link"], "contractor")
        [record] = tether_json(deployment.host_home, "devices", "list", "--json")
        assert record["workspace"] == str(mine)
        async with Client(home) as client:
            assert (await client.info())["workspace"] == str(mine)
            sid = await client.start_session(["pwd"])
            assert (await client.session(sid))["workspace"] == str(mine)
            assert (await client.call("sessions.start", {"agent": "pty", "command": ["pwd"],
                                                         "workspace": str(mine)}))["id"]
            for outside in (str(other), f"{mine}/../other", str(mine / "escape"), str(ws), "/"):
                with pytest.raises(TetherError) as info:
                    await client.call("sessions.start", {"agent": "pty", "command": ["pwd"], "workspace": outside})
                assert "outside the allowed workspaces" in info.value.message, outside
            # It can pair others only inside its own directory: by default there, wider refused.
            with pytest.raises(TetherError) as info:
                await client.call("pairing.create", {"scopes": ["read"], "ttl": 60, "workspace": str(other)})
            assert "outside the allowed workspaces" in info.value.message
            narrower = await client.call("pairing.create", {"scopes": ["read"], "ttl": 60})
            assert narrower["workspace"] == str(mine)
        login(child_home, narrower["link"], "child")
        devices = {d["name"]: d["workspace"] for d in tether_json(deployment.host_home, "devices", "list", "--json")}
        assert devices == {"contractor": str(mine), "child": str(mine)}
        # The owner cannot restrict a device to a directory outside the host's workspaces either.
        refused = tether(deployment.host_home, "pair", "--workspace", "/tmp", check=False)
        assert refused.returncode == 1 and "outside the allowed workspaces" in refused.stderr
    finally:
        remove(home, child_home)
