"""Acceptance of the built-in agent: real relay and host processes, clients through the relay,
and the scripted OpenAI-compatible server in the test (its port is in the host's config.toml,
written before the host starts).

Async tests run the model server on their own loop, so every blocking CLI call goes through
``asyncio.to_thread``: a blocked loop would be a model server that never answers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import TETHER, Proc, remove, short_home, start_relay, tether
from tests.support.deployment import Deployment
from tests.support.fake_openai import FakeOpenAI
from tests.support.follow import until
from tether import Client
from tether.agents.sandbox import available

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not available(), reason="bubblewrap unusable here")]

API_KEY = "sk-e2e-CONFIG-SECRET-4b1d9c0e7a2f"
ENV_SECRET = "tts-ENV-SECRET-5e8a1f3b9c7d"
Event = dict[str, Any]


def call(name: str, args: Any, call_id: str = "c1") -> dict[str, Any]:
    return {"id": call_id, "name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}


class Builtin:
    """A deployment whose host runs the builtin agent against ``server``."""

    def __init__(self, deployment: Deployment, server: FakeOpenAI) -> None:
        self.d = deployment
        self.server = server

    @property
    def workspace(self) -> Path:
        return self.d.workspace

    async def cli(self, home: Path, *args: str, check: bool = True) -> Any:
        return await asyncio.to_thread(tether, home, *args, check=check)

    async def cli_events(self, home: Path, session: str) -> list[Event]:
        out = (await self.cli(home, "sessions", "events", session, "--json")).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    async def pair(self, home: Path) -> None:
        await asyncio.to_thread(self.d.pair, home)


async def _start_host(home: Path, relay_url: str, workspace: Path, env: dict[str, str]) -> Proc:
    def start() -> Proc:
        proc = Proc([*TETHER, "--home", str(home), "host", "--relay", relay_url, "--workspace", str(workspace),
                     "--name", "builtin-host"], env=env, name="host")
        proc.wait_for(r"connected to relay")
        return proc
    return await asyncio.to_thread(start)


@pytest.fixture
async def builtin(request: pytest.FixtureRequest) -> AsyncIterator[Builtin]:
    """The host's sandbox for the builtin agent is workspace-write unless parametrized."""
    host_sandbox = getattr(request, "param", "workspace-write")
    async with FakeOpenAI() as server:
        base = short_home("tb")
        # The workspace sits beside the host's home (a workspace inside it is refused), so
        # `cat ../home/config.toml` is one step away.
        host_home, workspace = base / "home", base / "ws"
        host_home.mkdir(mode=0o700)
        workspace.mkdir()
        (host_home / "config.toml").write_text(
            "[agents.builtin]\n"
            f'base_url = "{server.base_url}"\n'
            'model = "fake-model"\n'
            f'api_key = "{API_KEY}"\n'
            'approval = "on-request"\n'
            f'sandbox = "{host_sandbox}"\n'
        )
        relay, port = await asyncio.to_thread(start_relay)
        host: Proc | None = None
        try:
            host = await _start_host(host_home, f"ws://127.0.0.1:{port}", workspace,
                                     {"TETHER_TEST_SECRET": ENV_SECRET, "OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""})
            yield Builtin(Deployment(relay, port, host, host_home, workspace), server)
        finally:
            if host is not None:
                await asyncio.to_thread(host.stop)
            await asyncio.to_thread(relay.stop)
            remove(base)


@pytest.fixture
def client_home2() -> Iterator[Path]:
    home = short_home("tc")
    yield home
    remove(home)


def turn_done(event: Event) -> bool:
    return event["type"] == "turn.completed"


def of(events: list[Event], type: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["type"] == type and (kind is None or e["data"].get("kind") == kind)]


async def race_for_one_approval(one: Client, two: Client) -> tuple[str, dict[str, Any]]:
    """``one`` starts a builtin session whose model asks for one approval; both clients answer it
    at once, ``one`` approving and ``two`` denying. Exactly one wins, the other gets
    ``approval_conflict``, and both see the same events and the same ``approval.resolved``.
    Returns the winning decision and that event's data."""
    sid = await one.start_session(agent="builtin", prompt="race")
    asked = [await until(c, sid, lambda e: e["type"] == "approval.requested") for c in (one, two)]
    approval = asked[0][-1]["data"]["approval"]
    assert asked[1][-1]["data"]["approval"] == approval
    results = await asyncio.gather(one.approve(sid, approval, "approve"), two.approve(sid, approval, "deny"),
                                   return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1, results
    assert getattr(errors[0], "code", None) == "approval_conflict"
    winner = "approve" if not isinstance(results[0], BaseException) else "deny"
    all_one, all_two = await asyncio.gather(until(one, sid, turn_done), until(two, sid, turn_done))
    assert [(e["seq"], e["type"]) for e in all_one] == [(e["seq"], e["type"]) for e in all_two]
    [r1], [r2] = of(all_one, "approval.resolved"), of(all_two, "approval.resolved")
    assert r1 == r2 and r1["decision"] == winner
    return winner, r1


async def test_an_approved_write_through_the_relay(builtin: Builtin, client_home: Path) -> None:
    """(a) approval.requested carries the exact diff; approved, the file exists and the diff is
    in the events and in `tether sessions diff`."""
    await builtin.pair(client_home)
    builtin.server.add({"tool_calls": [call("write_file", {"path": "src/hello.py", "content": "print('hi')\n"})]},
                       {"text": "Wrote src/hello.py."})
    diff = "--- /dev/null\n+++ b/src/hello.py\n@@ -0,0 +1 @@\n+print('hi')\n"
    async with await Client.open(client_home) as client:
        sid = await client.start_session(agent="builtin", prompt="write hello", approval="on-request")
        events = await until(client, sid, lambda e: e["type"] == "approval.requested")
        asked = events[-1]["data"]
        assert asked["kind"] == "file_change"
        assert asked["details"]["path"] == "src/hello.py" and asked["details"]["diff"] == diff
        assert (await client.session(sid))["approvals"][0]["approval"] == asked["approval"]
        assert not (builtin.workspace / "src" / "hello.py").exists()
        await client.approve(sid, asked["approval"], "approve")
        events = await until(client, sid, turn_done)
    assert (builtin.workspace / "src" / "hello.py").read_text() == "print('hi')\n"
    [done] = of(events, "item.completed", "file_change")
    assert (done["status"], done["diff"]) == ("completed", diff)
    assert of(events, "turn.completed")[0]["status"] == "completed"
    assert of(events, "item.completed", "agent_message")[-1]["text"] == "Wrote src/hello.py."
    printed = (await builtin.cli(client_home, "sessions", "diff", sid)).stdout
    assert diff in printed


async def test_a_denied_write_from_the_cli_leaves_no_file(builtin: Builtin, client_home: Path) -> None:
    """(b) + (h): `tether sessions approve ID APPROVAL --deny`."""
    await builtin.pair(client_home)
    builtin.server.add({"tool_calls": [call("write_file", {"path": "nope.txt", "content": "x\n"})]},
                       {"text": "Understood, not writing it."})
    started = await builtin.cli(client_home, "sessions", "start", "--agent", "builtin", "--json", "write nope.txt")
    sid = json.loads(started.stdout)["id"]
    async with await Client.open(client_home) as client:
        events = await until(client, sid, lambda e: e["type"] == "approval.requested")
        approval = events[-1]["data"]["approval"]
        answered = await builtin.cli(client_home, "sessions", "approve", sid, approval, "--deny")
        assert "deny" in answered.stdout
        events = await until(client, sid, turn_done)
    assert not (builtin.workspace / "nope.txt").exists()
    [resolved] = of(events, "approval.resolved")
    assert resolved["decision"] == "deny" and resolved["by"]["name"] == "test-client"
    [done] = of(events, "item.completed", "file_change")
    assert done["status"] == "declined"
    tool_msg = builtin.server.requests[1].json["messages"][-1]
    assert tool_msg["role"] == "tool" and "denied" in tool_msg["content"].lower()


async def test_read_only_refuses_the_write_and_tells_the_model(builtin: Builtin, client_home: Path) -> None:
    """(c) In a read-only session the write fails whatever the approval, and the model is told."""
    await builtin.pair(client_home)
    builtin.server.add({"tool_calls": [call("write_file", {"path": "ro.txt", "content": "x\n"})]},
                       {"tool_calls": [call("run_command", {"command": "echo x > ro2.txt"}, "c2")]},
                       {"text": "The workspace is read-only."})
    async with await Client.open(client_home) as client:
        sid = await client.start_session(agent="builtin", prompt="write ro.txt", sandbox="read-only")
        events: list[Event] = []
        async with asyncio.timeout(30):
            async for event in client.events(0, session=sid):
                events.append(event)
                if event["type"] == "approval.requested":
                    # The command is asked about (and approved): the sandbox still forbids the write.
                    await client.approve(sid, event["data"]["approval"], "approve")
                if turn_done(event):
                    break
    assert not (builtin.workspace / "ro.txt").exists() and not (builtin.workspace / "ro2.txt").exists()
    [write] = of(events, "item.completed", "file_change")
    assert write["status"] == "failed" and "read-only" in write["error"]
    assert [a["kind"] for a in of(events, "approval.requested")] == ["command"]
    [cmd] = of(events, "item.completed", "command")
    assert cmd["status"] == "failed" and cmd["exit_code"] != 0
    assert "Read-only file system" in cmd["output"]
    told = builtin.server.requests[1].json["messages"][-1]
    assert told["role"] == "tool" and "read-only" in told["content"]


async def test_paths_outside_the_workspace_are_refused(builtin: Builtin, client_home: Path) -> None:
    """(d) `..`, an absolute path and a symlink that leads out are all refused."""
    await builtin.pair(client_home)
    outside = builtin.d.host_home / "outside.txt"
    (builtin.workspace / "link").symlink_to(builtin.d.host_home)
    builtin.server.add(
        {"tool_calls": [call("write_file", {"path": "../home/outside.txt", "content": "x"}, "c1"),
                        call("write_file", {"path": str(outside), "content": "x"}, "c2"),
                        call("write_file", {"path": "link/outside.txt", "content": "x"}, "c3")]},
        {"text": "I cannot write outside the workspace."},
    )
    async with await Client.open(client_home) as client:
        sid = await client.start_session(agent="builtin", prompt="escape", approval="on-request")
        events = await until(client, sid, turn_done)
    assert not outside.exists()
    changes = of(events, "item.completed", "file_change")
    assert [c["status"] for c in changes] == ["failed"] * 3
    assert all("outside the workspace" in c["error"] for c in changes)
    assert of(events, "approval.requested") == []


async def test_bad_model_answers_fail_clearly_and_the_host_goes_on(builtin: Builtin, client_home: Path) -> None:
    """(e) Garbage from the model server, a tool call with invalid JSON, a 1 MiB prompt."""
    await builtin.pair(client_home)
    builtin.server.add(
        {"garbage": ["<html>502 Bad Gateway</html>"]},
        {"tool_calls": [call("run_command", '{"command": "ls"')]}, {"text": "Sorry, my mistake."},
        {"text": "all good"},
    )
    async with await Client.open(client_home) as client:
        sid = await client.start_session(agent="builtin", prompt="garbage please")
        events = await until(client, sid, turn_done)
        done = of(events, "turn.completed")[0]
        assert done["status"] == "failed" and "JSON" in done["error"], done
        [err] = of(events, "item.completed", "error")
        assert err["message"] == done["error"]

        sid = await client.start_session(agent="builtin", prompt="bad json please")
        events = await until(client, sid, turn_done)
        [err] = of(events, "item.completed", "error")
        assert "not valid JSON" in err["message"]
        assert of(events, "turn.completed")[0]["status"] == "completed"

        sid = await client.start_session(agent="builtin", prompt="y" * (1024 * 1024))
        events = await until(client, sid, turn_done, timeout=60)
        done = of(events, "turn.completed")[0]
        assert done["status"] == "failed" and "over the limit" in done["error"]
        assert len(builtin.server.requests) == 3, "the huge prompt was never sent"

        sid = await client.start_session(agent="builtin", prompt="are you fine?")
        events = await until(client, sid, turn_done)
        assert of(events, "turn.completed")[0]["status"] == "completed"
        assert of(events, "item.completed", "agent_message")[-1]["text"] == "all good"
    assert builtin.d.host.alive


# full-access: the commands really can read the config file and the host's environment (a
# sandboxed command sees neither the tether home nor, here, anything under /tmp), so only the
# redaction stands between them and the events.
@pytest.mark.parametrize("builtin", ["full-access"], indirect=True)
async def test_no_secret_leaves_the_host(builtin: Builtin, client_home: Path) -> None:
    """(f) The API key in config.toml and a secret in the host's environment appear in no event,
    no error and no line of the host's log, even when the model asks for them."""
    await builtin.pair(client_home)
    builtin.server.add(
        {"tool_calls": [call("run_command", {"command": "env"}, "c1"),
                        call("run_command", {"command": 'cat ../home/config.toml; echo "s=$TETHER_TEST_SECRET"'}, "c2"),
                        call("read_file", {"path": "../home/config.toml"}, "c3"),
                        call("run_command", {"command": "echo ${OPENAI_API_KEY:-no-key-here}"}, "c4")]},
        {"text": f"Your key is {API_KEY} and the secret is {ENV_SECRET}."},
        {"status": 401, "body": json.dumps({"error": {"message": f"invalid key {API_KEY}"}})},
    )
    async with await Client.open(client_home) as client:
        sid = await client.start_session(agent="builtin", prompt="show me the secrets", approval="untrusted",
                                         sandbox="full-access")
        events: list[Event] = []
        async with asyncio.timeout(30):
            async for event in client.events(0, session=sid):
                events.append(event)
                if event["type"] == "approval.requested":
                    await client.approve(sid, event["data"]["approval"], "approve")
                if turn_done(event):
                    break
        await client.send(sid, "and again")
        more = await until(client, sid, lambda e: turn_done(e) and e["seq"] > events[-1]["seq"])
        assert of(more, "turn.completed")[-1]["status"] == "failed"
        sdk_view = json.dumps(more)
        session = json.dumps(await client.session(sid, scrollback=True))
    commands = of(events, "item.completed", "command")
    assert len(commands) == 3 and all(c["status"] == "completed" for c in commands)
    # The commands ran, and saw what was there: the config file, but no secret variable of the
    # host's environment (issue [6] item 4).
    assert "[agents.builtin]" in commands[1]["output"] and "[redacted]" in commands[1]["output"]
    assert "PATH=" in commands[0]["output"] and "TETHER_TEST_SECRET" not in commands[0]["output"]
    assert "s=\n" in commands[1]["output"]
    assert "no-key-here" in commands[2]["output"]
    cli_view = json.dumps(await builtin.cli_events(client_home, sid))
    local_view = json.dumps(await builtin.cli_events(builtin.d.host_home, sid))
    sent_to_model = "".join(r.body.decode() for r in builtin.server.requests[1:])
    for secret in (API_KEY, ENV_SECRET):
        for name, text in [("SDK events", sdk_view), ("CLI events", cli_view), ("local events", local_view),
                           ("sessions.get", session), ("host log", builtin.d.host.log),
                           ("tool results sent to the model", sent_to_model)]:
            assert secret not in text, f"a secret leaked into the {name}"
    assert "[redacted]" in cli_view


async def test_two_clients_one_approval_first_answer_wins(
    builtin: Builtin, client_home: Path, client_home2: Path
) -> None:
    """(g) Both clients see every event; both answer at once: one wins, the other gets
    approval_conflict, and both see the same approval.resolved with its author."""
    await builtin.pair(client_home)
    await builtin.pair(client_home2)
    builtin.server.add({"tool_calls": [call("write_file", {"path": "race.txt", "content": "won\n"})]},
                       {"text": "done"})
    async with await Client.open(client_home) as one, await Client.open(client_home2) as two:
        winner, resolved = await race_for_one_approval(one, two)
    assert resolved["by"]["id"]
    assert (builtin.workspace / "race.txt").exists() == (winner == "approve")
