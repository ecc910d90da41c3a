"""The relay's mailbox end to end ([9] part 2): real relay and host processes, devices paired
through the relay, the builtin agent against the scripted model server in the test.

The host reaches the relay through a proxy the test can cut (a laptop losing its network while
the daemon runs on); devices reach the relay directly, as a phone would.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.procs import TETHER, Proc, login, remove, short_home, start_relay, tether, tether_json
from tests.support.fake_openai import FakeOpenAI
from tests.support.follow import until
from tests.support.stall_proxy import StallProxy
from tether import Client
from tether.agents.sandbox import available

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not available(), reason="bubblewrap unusable here")]

Event = dict[str, Any]


@dataclass
class Away:
    """A relay (its mailbox in ``relay_home``), a proxy to it, and a builtin host behind the proxy."""

    server: FakeOpenAI
    relay: Proc
    relay_port: int
    relay_home: Path
    proxy: StallProxy
    host: Proc
    host_home: Path
    workspace: Path

    async def start_host(self) -> None:
        def start() -> Proc:
            proc = Proc([*TETHER, "--home", str(self.host_home), "host", "--relay",
                         f"ws://127.0.0.1:{self.proxy.port}", "--workspace", str(self.workspace),
                         "--name", "mailbox-host"], env={"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}, name="host")
            proc.wait_for(r"connected to relay")
            return proc
        self.host = await asyncio.to_thread(start)

    async def pair(self, name: str, scopes: str = "read,prompt,approve") -> Path:
        """A new device home paired with the host, reaching the relay directly."""
        home = short_home("tc")
        offer = await asyncio.to_thread(tether_json, self.host_home, "pair", "--json", "--scopes", scopes)
        link = str(offer["link"]).replace(f":{self.proxy.port}/", f":{self.relay_port}/")
        await asyncio.to_thread(login, home, link, "--name", name, "--json")
        return home

    async def device_id(self, name: str) -> str:
        listed = await asyncio.to_thread(tether_json, self.host_home, "devices", "list", "--json")
        return str(next(d["id"] for d in listed if d["name"] == name))


@pytest.fixture
async def away() -> AsyncIterator[Away]:
    async with FakeOpenAI() as server:
        base = short_home("tm")
        host_home, workspace, relay_home = base / "home", base / "ws", base / "relay"
        host_home.mkdir(mode=0o700)
        workspace.mkdir()
        relay_home.mkdir(mode=0o700)
        (host_home / "config.toml").write_text(
            f'[agents.builtin]\nbase_url = "{server.base_url}"\nmodel = "fake-model"\napi_key = "sk-test"\n'
            'approval = "on-request"\nsandbox = "workspace-write"\n'
        )
        relay, port = await asyncio.to_thread(start_relay, 0, home=relay_home)
        with StallProxy(port) as proxy:
            setup = Away(server, relay, port, relay_home, proxy, None, host_home, workspace)  # type: ignore[arg-type]
            try:
                await setup.start_host()
                yield setup
            finally:
                if setup.host is not None:
                    await asyncio.to_thread(setup.host.stop)
                await asyncio.to_thread(setup.relay.stop)
                remove(base)


async def online(home: Path, now: bool = True) -> None:
    """Until the relay says the host is back (or, ``now=False``, away)."""
    async with asyncio.timeout(30):
        while any(h.online for h in await Client(home).hosts()) != now:
            await asyncio.sleep(0.2)


def turns_with(events: list[Event], text: str) -> list[Event]:
    return [e for e in events if e["type"] == "turn.started" and e["data"]["input"] == text]


async def test_a_stopped_host_leaves_a_snapshot_and_a_prompt_queued_meanwhile_runs_once_after_a_relay_restart(
    away: Away,
) -> None:
    phone = await away.pair("phone")
    away.server.add({"text": "The first answer."})
    async with await Client.open(phone) as client:
        sid = await client.start_session(agent="builtin", prompt="first question")
        await until(client, sid, lambda e: e["type"] == "turn.completed")
    stopped_at = time.time()
    await asyncio.to_thread(away.host.stop)

    # What the phone shows while the host is away: the host's sessions and their latest events.
    device = Client(phone)
    held = await device.offline_snapshot()
    assert held is not None
    deposited_at, snapshot = held
    assert snapshot.host_name == "mailbox-host"
    assert stopped_at - 30 < snapshot.taken_at <= time.time() and stopped_at - 30 < deposited_at <= time.time()
    [session] = [s for s in snapshot.sessions if s["id"] == sid]
    assert session["status"] == "idle" and session["agent"] == "builtin"
    texts = [e["data"].get("text") for e in snapshot.events[sid] if e["type"] == "item.completed"]
    assert "The first answer." in texts and "first question" in texts
    relay_log = away.relay.log
    assert "The first answer." not in relay_log and "first question" not in relay_log
    said = (await asyncio.to_thread(tether, phone, "sessions", "list", "--offline")).stdout
    assert said.startswith("mailbox-host, as it reported ") and f"{sid}  idle" in said
    listed = json.loads((await asyncio.to_thread(tether, phone, "sessions", "list", "--offline", "--json")).stdout)
    assert [s["id"] for s in listed["sessions"]] == [sid] and listed["host_name"] == "mailbox-host"

    cid = await device.queue("sessions.send", {"id": sid, "text": "second question"})

    # The relay restarts while the host is away: the queued prompt is in its mailbox on disk.
    await asyncio.to_thread(away.relay.stop, signal.SIGKILL)
    away.relay, _ = await asyncio.to_thread(start_relay, away.relay_port, home=away.relay_home)
    stored = (away.relay_home / "relay" / "mailbox.db").read_bytes()
    assert b"second question" not in stored and b"first question" not in stored  # ciphertext only

    away.server.add({"text": "The second answer."})
    await away.start_host()
    async with await Client.open(phone) as client:
        events = await until(client, sid, lambda e: e["type"] == "item.completed"
                             and e["data"].get("text") == "The second answer.", timeout=60)
        [started] = turns_with(events, "second question")
        assert started["cid"] == cid
        # Applied once: restarting the host again does not apply it again.
        await asyncio.to_thread(away.host.stop)
        await away.start_host()
        await asyncio.sleep(3)
        again = await until(client, sid, lambda e: e["seq"] >= events[-1]["seq"])
        assert len(turns_with(again, "second question")) == 1
    asked = [r.json["messages"][-1]["content"] for r in away.server.requests]
    assert asked.count("second question") == 1


async def test_two_devices_queue_answers_to_one_approval_one_applies_the_other_hears_why(away: Away) -> None:
    one, two = await away.pair("phone-one"), await away.pair("phone-two")
    away.server.add({"tool_calls": [{"id": "c1", "name": "write_file",
                                     "arguments": json.dumps({"path": "out.txt", "content": "yes\n"})}]},
                    {"text": "Written."})
    async with await Client.open(one) as client:
        sid = await client.start_session(agent="builtin", prompt="write out.txt")
        asked = await until(client, sid, lambda e: e["type"] == "approval.requested")
    approval = asked[-1]["data"]["approval"]

    away.proxy.cut()  # the laptop loses its network; the daemon and its pending approval live on
    await online(one, False)
    first = await Client(one).queue("sessions.approve", {"id": sid, "approval": approval, "decision": "approve"})
    second = await Client(two).queue("sessions.approve", {"id": sid, "approval": approval, "decision": "deny"})
    away.proxy.mend()
    await online(two)

    async with await Client.open(two) as client:
        events = await until(client, sid, lambda e: e["type"] == "turn.completed")
        [resolved] = [e for e in events if e["type"] == "approval.resolved"]
        assert resolved["data"]["decision"] == "approve" and resolved["data"]["by"]["name"] == "phone-one"
        assert resolved["cid"] == first
        refusals = await until(client, sid, lambda e: e["type"] == "mailbox.refused")
    [refused] = [e for e in refusals if e["type"] == "mailbox.refused"]
    assert refused["cid"] == second and refused["data"]["by"]["name"] == "phone-two"
    assert "phone-one answered it first" in refused["data"]["message"]
    assert (away.workspace / "out.txt").read_text() == "yes\n"


async def test_a_device_revoked_while_its_prompt_waits_at_the_relay_is_never_applied(away: Away) -> None:
    kept, revoked = await away.pair("kept"), await away.pair("revoked")
    away.server.add({"text": "Hello."})
    async with await Client.open(kept) as client:
        sid = await client.start_session(agent="builtin", prompt="hello")
        await until(client, sid, lambda e: e["type"] == "turn.completed")

    away.proxy.cut()
    await online(kept, False)
    await Client(revoked).queue("sessions.send", {"id": sid, "text": "from the revoked device"})
    await asyncio.to_thread(tether, away.host_home, "devices", "revoke", await away.device_id("revoked"))
    queued = await asyncio.to_thread(tether, kept, "sessions", "send", sid, "from the kept device", "--queue", "--json")
    later = json.loads(queued.stdout)["queued"]
    away.server.add({"text": "Kept."})
    away.proxy.mend()
    await online(kept)

    async with await Client.open(kept) as client:
        # Items are applied in the order they were queued: once the later one ran, the earlier was judged.
        events = await until(client, sid, lambda e: e["type"] == "turn.started" and e.get("cid") == later)
        events = await until(client, sid, lambda e: e["seq"] >= events[-1]["seq"])
    assert turns_with(events, "from the revoked device") == []
    assert turns_with(events, "from the kept device\n")  # the CLI sends a line, as `sessions send` does
    assert all("from the revoked device" != r.json["messages"][-1]["content"] for r in away.server.requests)


async def test_a_queued_request_beyond_the_devices_scopes_is_refused_and_said(away: Away) -> None:
    """What waits at the relay is applied as the device's own request: a read-only device's
    queued prompt is refused as it would be live (forbidden), and the session says so."""
    owner, reader = await away.pair("owner"), await away.pair("reader", "read")
    away.server.add({"text": "Hello."})
    async with await Client.open(owner) as client:
        sid = await client.start_session(agent="builtin", prompt="hello")
        await until(client, sid, lambda e: e["type"] == "turn.completed")

    away.proxy.cut()
    await online(owner, False)
    refused_cid = await Client(reader).queue("sessions.send", {"id": sid, "text": "from the reader"})
    away.proxy.mend()
    await online(owner)

    async with await Client.open(owner) as client:
        events = await until(client, sid, lambda e: e["type"] == "mailbox.refused")
    [refused] = [e for e in events if e["type"] == "mailbox.refused"]
    assert refused["cid"] == refused_cid and refused["data"]["code"] == "forbidden"
    assert refused["data"]["by"]["name"] == "reader" and "'prompt' scope" in refused["data"]["message"]
    assert turns_with(events, "from the reader") == []
