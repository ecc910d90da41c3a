"""Codex thread adoption keeps to the caller's workspace (real relay, host, Codex CLI and SDK
clients): a device held to workspace A is not shown a thread that ran in B, and adopting it by
id is refused exactly like an unknown thread (its history is B's); A's thread it adopts; an
unrestricted device still sees both."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.agents.codex.conftest import FAKE_KEY_ENV, Events
from tests.e2e.test_codex_agent import CodexDeployment, codex_deployment, codex_wrapper
from tests.procs import remove, short_home, tether_json
from tests.security.test_device_scopes import login
from tests.support.agent_host import Watch
from tether import Client
from tether.agents.codex import find_codex
from tether.agents.codex.appserver import AppServer
from tether.errors import TetherError

pytestmark = pytest.mark.slow

__all__ = ["codex_deployment"]

UNKNOWN = "0199a213-81c0-7800-8aa1-bbab2a035a53"


async def _desktop_threads(d: CodexDeployment, *cwds: Path) -> list[str]:
    """A thread in each directory, started outside tether as the desktop app would."""
    desktop = await AppServer.start(
        find_codex(codex_wrapper()), codex_home=d.host_home / "codex-home", cwd=d.workspace,
        env={FAKE_KEY_ENV: "dummy-key"},
    )
    ids = []
    try:
        events = Events(desktop)
        for cwd in cwds:
            thread = (await desktop.thread_start(cwd, "on-request", "workspace-write"))["thread"]["id"]
            await desktop.turn_start(thread, f"hello from {cwd.name}")
            await events.wait("turn/completed", lambda p, t=thread: p.get("threadId") == t)
            ids.append(thread)
    finally:
        await desktop.close()
    return ids


async def test_a_thread_of_another_workspace_is_neither_listed_nor_adopted(codex_deployment: CodexDeployment) -> None:
    d = codex_deployment
    ws = Path(os.path.realpath(d.workspace))
    a, b = ws / "a", ws / "b"
    a.mkdir()
    b.mkdir()
    d.model.add({"text": "Hi from a."}, {"text": "Hi from b."})
    thread_a, thread_b = await _desktop_threads(d, a, b)
    home = short_home("td")
    try:
        offer = tether_json(d.host_home, "pair", "--scopes", "read,prompt", "--workspace", str(a), "--json")
        login(home, offer["link"], "held-to-a")
        async with Client(home) as client:
            listed = [t["id"] for t in await client.threads()]
            assert thread_a in listed and thread_b not in listed
            refusals = []
            for thread in (thread_b, UNKNOWN):
                with pytest.raises(TetherError) as info:
                    await client.start_session(agent="codex", thread=thread, prompt="what did b say?")
                refusals.append((info.value.code, info.value.message.replace(thread, "ID"), info.value.hint))
            assert refusals[0] == refusals[1] and refusals[0][0] == "not_found", refusals
            assert "this caller may adopt" in refusals[0][1]
            assert await client.sessions() == []  # nothing started
            # Its own workspace's thread it adopts and continues.
            d.model.add({"text": "I remember a."})
            session = await client.start_session(agent="codex", thread=thread_a, prompt="what did a say?")
            assert (await Watch(client, session).until("turn.completed"))["data"]["status"] == "completed"
        async with Client(d.client_home) as owner_device:
            assert {thread_a, thread_b} <= {t["id"] for t in await owner_device.threads()}
    finally:
        remove(home)
    assert not any("what did b say" in str(r["input"]) for r in d.model.requests)
