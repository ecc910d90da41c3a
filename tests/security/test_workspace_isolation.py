"""A device or token held to workspace A sees nothing of workspace B (real relay, host and SDK
clients): the owner runs a session in each; every method that names or lists a session or its
events answers for B's session exactly as for one that does not exist, the event streams (read,
subscribe from 0, the snapshot) carry nothing of B, and the caller still works on A."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.procs import remove, short_home, tether_json
from tests.security.test_device_scopes import login
from tests.support.deployment import Deployment
from tether.client.connection import Connection, connect, connect_local, connect_token
from tether.crypto.tokens import parse_token
from tether.errors import TetherError
from tether.protocol.methods import METHODS

pytestmark = pytest.mark.slow

SECRET = "only-for-workspace-b"  # in B's command line and output: must never reach the A caller
ABSENT = "s_doesnotexist"


async def _owner_sessions(deployment: Deployment) -> tuple[Path, str, str]:
    """Workspaces A and B under the host's workspace, a session in each; returns (A, a, b)."""
    ws = Path(os.path.realpath(deployment.workspace))
    a, b = ws / "a", ws / "b"
    a.mkdir()
    b.mkdir()
    owner = await connect_local(deployment.host_home)
    try:
        sa = (await owner.call("sessions.start", {"agent": "pty", "command": ["cat"], "workspace": str(a)}))["id"]
        sb = (await owner.call("sessions.start", {
            "agent": "pty", "command": ["sh", "-c", f"echo {SECRET}; exec cat"], "workspace": str(b),
        }))["id"]
        await _output(owner, sb, SECRET)
    finally:
        await owner.close()
    return a, sa, sb


async def _output(owner: Connection, session: str, text: str) -> None:
    """Wait (at most 10 s) until ``text`` is in the session's events, as the owner reads them."""
    deadline = time.monotonic() + 10
    while text not in json.dumps(await owner.call("events.read", {"since": 0, "session": session})):
        assert time.monotonic() < deadline, f"{session} printed no {text!r} in 10 s"
        await asyncio.sleep(0.05)


async def _refusal(client: Connection, method: str, params: dict[str, Any]) -> tuple[str, str, str | None]:
    with pytest.raises(TetherError) as info:
        await client.call(method, params)
    return info.value.code, info.value.message, info.value.hint


async def _stream(
    client: Connection, since: int, until: Any, then: Any = None, seconds: float = 10
) -> list[dict[str, Any]]:
    """What events.subscribe(since) sends until ``until(item)`` holds (bounded in time); ``then()``
    runs once the subscription is made (live events)."""
    items: list[dict[str, Any]] = []
    sub = await client.subscribe(since)
    if then is not None:
        await then()
    async with asyncio.timeout(seconds), contextlib.aclosing(sub.items()) as stream:
        async for item in stream:
            items.append(item)
            if until(item):
                break
    await client.call("events.unsubscribe", {"sub": sub.sub_id})
    return items


async def _sees_only_a(client: Connection, owner: Connection, workspace: Path, sa: str, sb: str) -> None:
    assert [s["id"] for s in await client.call("sessions.list")] == [sa]
    # Every method naming a session: B's is refused word for word like one that does not exist.
    naming = [
        ("sessions.get", {"id": sb}), ("sessions.get", {"id": sb, "scrollback": True}),
        ("sessions.diff", {"id": sb}), ("sessions.send", {"id": sb, "text": "echo pwned\n"}),
        ("sessions.send", {"id": sb, "text": "hi", "model": "m", "effort": "high", "mode": "plan"}),
        ("sessions.interrupt", {"id": sb}), ("sessions.resize", {"id": sb, "cols": 10, "rows": 5}),
        ("sessions.approve", {"id": sb, "approval": "a_1", "decision": "approve"}),
        ("sessions.answer", {"id": sb, "approval": "a_1", "answers": {"q": ["x"]}}),
        ("sessions.models", {"id": sb}),
        ("sessions.review", {"id": sb, "base": "main"}), ("sessions.compact", {"id": sb}),
        ("sessions.unqueue", {"id": sb, "queued": "q_1"}),
        ("sessions.archive", {"id": sb}), ("sessions.delete", {"id": sb}),
        ("sessions.send", {"id": sb, "text": "look",
                           "images": [{"name": "a.png", "mime": "image/png", "data": "iVBORw0KGgo="}]}),
    ]
    declared = {name for name, m in METHODS.items()
                if name.startswith("sessions.") and "id" in m.params.__struct_fields__}
    assert {method for method, _ in naming} == declared, "a method naming a session is missing here"
    for method, params in naming:
        refused = await _refusal(client, method, params)
        absent = await _refusal(client, method, {**params, "id": ABSENT})
        assert refused[0] == "not_found", (method, refused)
        assert (refused[0], refused[1].replace(sb, ABSENT), refused[2]) == absent, method
    # events.read: everything from 0, and B's session by name.
    page = await client.call("events.read", {"since": 0})
    assert {e["session"] for e in page["events"]} == {sa}
    assert SECRET not in json.dumps(page) and sb not in json.dumps(page)
    assert (await client.call("events.read", {"since": 0, "session": sb}))["events"] == []
    # It still works on A. A subscription from 0 shows A's echo and nothing of B, neither the
    # history nor B's live output (the owner types into B first, so it would come before A's).
    async def live() -> None:
        await owner.call("sessions.send", {"id": sb, "text": f"{SECRET}-live\n"})
        await _output(owner, sb, f"{SECRET}-live")
        await client.call("sessions.send", {"id": sa, "text": "marker-a\n"})

    items = await _stream(client, 0, lambda e: e["type"] == "session.output" and "marker-a" in e["data"]["data"],
                          live)
    assert "marker-a" in json.dumps(items[-1])
    assert {e["session"] for e in items} == {sa}
    assert SECRET not in json.dumps(items) and sb not in json.dumps(items)
    # A cursor ahead of the head gets the snapshot: A's session only.
    parts = await _stream(client, 10**9, lambda e: e["type"] == "snapshot" and e["last"])
    assert [s["id"] for p in parts for s in p["sessions"]] == [sa]
    assert SECRET not in json.dumps(parts)
    session = await client.call("sessions.get", {"id": sa, "scrollback": True})
    assert session["workspace"] == str(workspace) and "marker-a" in json.dumps(session)
    await client.call("sessions.resize", {"id": sa, "cols": 100, "rows": 30})
    assert (await client.call("sessions.diff", {"id": sa}))["changes"] == []


async def _audit_shows_nothing_of_b(client: Connection, sa: str, sb: str) -> None:
    """The audit log (an admin's) leaves out what was done to B's session, even the refusals."""
    sessions = {e["session"] for e in (await client.call("audit.list", {}))["entries"]}
    assert sa in sessions and sb not in sessions


async def test_a_device_held_to_a_workspace_sees_nothing_of_another(deployment: Deployment) -> None:
    a, sa, sb = await _owner_sessions(deployment)
    home = short_home("td")
    try:
        offer = tether_json(deployment.host_home, "pair", "--scopes", "read,prompt,approve,admin",
                            "--workspace", str(a), "--json")
        login(home, offer["link"], "held-to-a")
        client, owner = await connect(home), await connect_local(deployment.host_home)
        try:
            await _sees_only_a(client, owner, a, sa, sb)
            await _audit_shows_nothing_of_b(client, sa, sb)
        finally:
            await client.close()
            await owner.close()
    finally:
        remove(home)
    await _b_untouched(deployment, sb)


async def test_a_token_held_to_a_workspace_sees_nothing_of_another(deployment: Deployment) -> None:
    a, sa, sb = await _owner_sessions(deployment)
    created = tether_json(deployment.host_home, "tokens", "create", "--scopes", "read,prompt,approve",
                          "--workspace", str(a), "--name", "held-to-a", "--json")
    client, owner = await connect_token(parse_token(created["token"])), await connect_local(deployment.host_home)
    try:
        await _sees_only_a(client, owner, a, sa, sb)
    finally:
        await client.close()
        await owner.close()
    await _b_untouched(deployment, sb)


async def _b_untouched(deployment: Deployment, sb: str) -> None:
    """The owner still sees B's session running, with only its own input, no resize or interrupt."""
    owner = await connect_local(deployment.host_home)
    try:
        assert (await owner.call("sessions.get", {"id": sb}))["status"] == "running"
        events = (await owner.call("events.read", {"since": 0, "session": sb}))["events"]
        assert {e["type"] for e in events} == {"session.started", "session.output", "session.input"}
        assert [e["data"]["text"] for e in events if e["type"] == "session.input"] == [f"{SECRET}-live\n"]
    finally:
        await owner.close()
