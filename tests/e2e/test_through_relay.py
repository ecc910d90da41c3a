"""The acceptance path of issue [1]: separate relay, host and client processes and homes."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import pytest

from tests.procs import tether, tether_json
from tests.support.deployment import Deployment
from tether import Client

pytestmark = pytest.mark.slow


def _wait_for_output(home: Path, session_id: str, marker: str, timeout: float = 20) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = tether(home, "sessions", "events", session_id, "--json").stdout
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        text = "".join(e["data"].get("data", "") for e in events if e["type"] == "session.output")
        if marker in text:
            return events
        time.sleep(0.3)
    raise AssertionError(f"{marker!r} never showed up in the events of {session_id}")


def test_cli_client_drives_a_pty_session_through_the_relay(deployment: Deployment, client_home: Path) -> None:
    host_id = deployment.pair(client_home)
    hosts = tether_json(client_home, "hosts", "--json")
    assert [(h["id"], h["online"]) for h in hosts] == [(host_id, True)]

    session_id = tether_json(client_home, "sessions", "start", "--agent", "pty", "--json", "--", "bash")["id"]
    # The shell computes the marker, so the echoed input line alone can never match it.
    n = random.randrange(10**9)
    marker = f"hello-{n + 1}"
    tether(client_home, "sessions", "send", session_id, f"echo hello-$(({n}+1))")
    events = _wait_for_output(client_home, session_id, marker)
    assert all({"seq", "session", "type"} <= e.keys() for e in events)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert events[0]["type"] == "session.started"

    # The same session, seen on the host machine through the local socket, has the same events.
    local = tether(deployment.host_home, "sessions", "events", session_id, "--json").stdout
    remote = tether(client_home, "sessions", "events", session_id, "--json").stdout
    assert local.splitlines()[: len(events)] == remote.splitlines()[: len(events)]
    listed = tether_json(client_home, "sessions", "list", "--json")
    assert [s["id"] for s in listed] == [session_id]
    assert deployment.host.alive


async def test_sdk_drives_a_pty_session_through_the_relay(deployment: Deployment, client_home: Path) -> None:
    deployment.pair(client_home)
    n = random.randrange(10**9)
    marker = f"sdk-{n + 1}"
    async with await Client.open(client_home) as client:
        [host] = await client.hosts()
        assert host.online
        session_id = await client.start_session(["bash"])
        await client.send(session_id, f"echo sdk-$(({n}+1))\n")
        seen = ""
        async with asyncio.timeout(20):
            async for event in client.events(0, session=session_id):
                if event["type"] == "session.output":
                    seen += event["data"]["data"]
                    if marker in seen:
                        break
        assert [s["id"] for s in await client.sessions()] == [session_id]
