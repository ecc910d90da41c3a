"""Acceptance of the claude agent: real relay and host processes, an SDK client through the relay,
the real Claude Code CLI on the host, and the scripted Messages-API server in the test. The host's
environment points Claude Code at that server (ANTHROPIC_BASE_URL, a fake key, a proxy that
catches anything else); its config.toml names the binary, an empty Claude config dir and the
policy (``untrusted``: every command and file change is asked about), and is written before the
host starts.

The model server runs on the test's loop, so blocking CLI calls go through ``asyncio.to_thread``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.agents.claude.conftest import claude_command, shell_home
from tests.procs import remove, short_home
from tests.support.agent_host import (
    HOST_SECRETS,
    LEAKY_COMMAND,
    AgentDeployment,
    Watch,
    interrupt_while_an_approval_is_pending,
    relay_and_paired_host,
    secrets_never_reach_the_client,
)
from tests.support.fake_anthropic import FakeAnthropic
from tether import Client
from tether.agents.claude import ClaudeError, find_claude

pytestmark = pytest.mark.slow

GREETING = "echo from-claude-$((40+2))"


ClaudeDeployment = AgentDeployment[FakeAnthropic]


@pytest.fixture
async def claude_deployment() -> AsyncIterator[ClaudeDeployment]:
    command = claude_command()
    try:
        find_claude(command)
    except ClaudeError as exc:
        pytest.fail(f"Claude Code is installed but unusable: {exc}")
    async with FakeAnthropic() as model:
        host_home, client_home, workspace = short_home("th"), short_home("tc"), short_home("tw")
        config_dir = host_home / "claude-config"
        config_dir.mkdir()
        (host_home / "config.toml").write_text(
            "[agents.claude]\n"
            f'binary = "{command}"\n'
            f'config_dir = "{config_dir}"\n'
            'approval = "untrusted"\n'
            'sandbox = "workspace-write"\n'
        )
        try:
            env = {**model.env(), **shell_home(host_home), **HOST_SECRETS}
            async with relay_and_paired_host(host_home, client_home, workspace, name="claude-host",
                                             env=env) as (host, relay):
                yield ClaudeDeployment(model, host_home, workspace.resolve(), client_home, host, relay)
        finally:
            remove(host_home, client_home, workspace)
        # Nothing left loopback: anything Claude Code tried to reach elsewhere came here as a proxy request.
        assert model.escaped == [], f"Claude Code tried to reach the outside: {model.escaped}"


async def start(client: Client, prompt: str) -> Watch:
    session = await client.start_session(agent="claude", prompt=prompt)
    return Watch(client, session)


async def test_approve_then_deny_across_two_turns(claude_deployment: ClaudeDeployment) -> None:
    d = claude_deployment
    marker = d.workspace / "denied.txt"
    d.model.add({"bash": {"command": GREETING, "description": "to greet"}},
                {"text": ["It printed ", "from-claude-42", "."]})
    async with await Client.open(d.client_home) as client:
        watch = await start(client, "run the greeting")
        requested = await watch.until("approval.requested")
        assert requested["data"]["kind"] == "command"
        details = requested["data"]["details"]
        assert details["command"] == GREETING
        assert details["cwd"] == str(d.workspace) and details["reason"] == "to greet"
        # A client that (re)connects sees the question with the session.
        info = await client.session(watch.session)
        assert info["status"] == "waiting-for-approval"
        assert [a["approval"] for a in info["approvals"]] == [requested["data"]["approval"]]

        await client.approve(watch.session, requested["data"]["approval"], "approve")
        done = await watch.until("turn.completed")
        assert done["data"]["status"] == "completed", done["data"]
        resolved = await watch.until("approval.resolved")
        assert resolved["data"]["decision"] == "approve" and resolved["data"]["by"]["name"] == "phone"
        [command] = watch.items("item.completed", "command")
        assert command["status"] == "completed" and command["exit_code"] == 0
        assert command["output"] == "from-claude-42" and watch.deltas(command["item"]) == "from-claude-42"
        [answer] = watch.items("item.completed", "agent_message")
        assert answer["text"] == "It printed from-claude-42."
        assert watch.deltas(answer["item"]) == "It printed from-claude-42."
        assert (await client.session(watch.session))["status"] == "idle"
        assert "from-claude-42" in str(d.model.requests[1]["messages"][-1])

        # The second turn's command is denied: it never runs, and the model is told.
        d.model.add({"bash": {"command": f"echo ran > {marker}"}}, {"text": "Fine, I will not."})
        await client.send(watch.session, "now write the marker")
        second = await watch.until("approval.requested",
                                   lambda data: data["approval"] != requested["data"]["approval"])
        assert second["data"]["details"]["command"] == f"echo ran > {marker}"
        await client.approve(watch.session, second["data"]["approval"], "deny")
        done2 = await watch.until("turn.completed", lambda data: data["turn"] != done["data"]["turn"])
        assert done2["data"]["status"] == "completed"
        denied = [c for c in watch.items("item.completed", "command") if c["status"] == "declined"]
        assert len(denied) == 1 and denied[0]["exit_code"] is None
        assert "denied this command" in str(d.model.requests[3]["messages"][-1])
    assert not marker.exists()


async def test_interrupt_while_an_approval_is_pending(claude_deployment: ClaudeDeployment) -> None:
    d = claude_deployment
    await interrupt_while_an_approval_is_pending(
        d.client_home, d.workspace, "claude", d.model, {"bash": {"command": f"{GREETING} > ran.txt"}},
    )


async def test_a_file_write_is_a_file_change_with_a_diff_that_needs_approval(
    claude_deployment: ClaudeDeployment,
) -> None:
    d = claude_deployment
    notes = d.workspace / "notes.txt"
    d.model.add({"write": {"file_path": str(notes), "content": "one\ntwo\n"}},
                {"edit": {"file_path": str(notes), "old_string": "two", "new_string": "three"}},
                {"text": "Noted."})
    async with await Client.open(d.client_home) as client:
        watch = await start(client, "take notes")
        write = await watch.until("approval.requested")
        assert write["data"]["kind"] == "file_change"
        assert write["data"]["details"]["path"] == str(notes)
        assert write["data"]["details"]["diff"] == f"--- /dev/null\n+++ {notes}\n@@ -0,0 +1,2 @@\n+one\n+two\n"
        assert not notes.exists()
        await client.approve(watch.session, write["data"]["approval"], "approve")
        edit = await watch.until("approval.requested", lambda data: data["approval"] != write["data"]["approval"])
        assert "-two\n+three\n" in edit["data"]["details"]["diff"]
        await client.approve(watch.session, edit["data"]["approval"], "approve")
        done = await watch.until("turn.completed")
        assert done["data"]["status"] == "completed"
        changes = watch.items("item.completed", "file_change")
        assert [c["status"] for c in changes] == ["completed", "completed"]
        assert [c["path"] for c in changes] == [str(notes), str(notes)]
        # The session's changes, as the phone's diff view asks for them.
        assert "+three" in str(await client.diff(watch.session))
    assert notes.read_text() == "one\nthree\n"


async def test_a_host_secret_echoed_in_pieces_reaches_the_client_only_redacted(
    claude_deployment: ClaudeDeployment,
) -> None:
    """Issue [6] items 4 and 15, through the real Claude Code."""
    d = claude_deployment
    await secrets_never_reach_the_client(d.client_home, "claude", d.model, {"bash": {"command": LEAKY_COMMAND}},
                                         own_key="ANTHROPIC_API_KEY")
