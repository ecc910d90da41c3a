"""Acceptance of the codex agent: real relay and host processes, an SDK client through the relay,
the real Codex CLI on the host, and the scripted Responses-API model server in the test (its URL
is in the test CODEX_HOME's config.toml; the host's own config.toml names the binary and that
CODEX_HOME, and is written before the host starts).

The model server runs on the test's loop, so blocking CLI calls go through ``asyncio.to_thread``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.agents.codex.conftest import FAKE_KEY_ENV, codex_cache_dir, write_codex_config
from tests.procs import remove, short_home, tether_json
from tests.support.agent_host import (
    HOST_SECRETS,
    LEAKY_COMMAND,
    AgentDeployment,
    Watch,
    interrupt_while_an_approval_is_pending,
    relay_and_paired_host,
    secrets_never_reach_the_client,
)
from tests.support.fake_responses import FakeResponses
from tests.support.installed_cli import installed_cli
from tether import Client
from tether.agents.codex import PINNED_VERSION, CodexError, find_codex

pytestmark = pytest.mark.slow

APPROVED_CMD = "echo approved-$((1+1))"


def codex_wrapper() -> Path:
    wrapper = installed_cli("Codex CLI", PINNED_VERSION, codex_cache_dir(), "codex", "TETHER_CODEX_BIN")
    try:
        find_codex(wrapper)
    except CodexError as exc:
        pytest.fail(f"Codex is installed but unusable: {exc}")
    return wrapper


CodexDeployment = AgentDeployment[FakeResponses]
# Codex's own key when it talks to OpenAI: the host has it, its commands must not.
OWN_KEY = {"OPENAI_API_KEY": "sk-openai-host-key-0123456789"}


@pytest.fixture
async def codex_deployment() -> AsyncIterator[CodexDeployment]:
    wrapper = codex_wrapper()
    async with FakeResponses() as model:
        host_home, client_home = short_home("th"), short_home("tc")
        workspace = short_home("tw")  # beside the home: a workspace inside it is refused
        codex_home = host_home / "codex-home"
        write_codex_config(codex_home, model.base_url)
        (host_home / "config.toml").write_text(
            "[agents.codex]\n"
            f'binary = "{wrapper}"\n'
            f'codex_home = "{codex_home}"\n'
            'approval = "on-request"\n'
            'sandbox = "workspace-write"\n'
        )
        try:
            # HOME: Codex runs commands in login shells, which must not read this machine's profile
            # (its pyenv init printed "cannot rehash" into a command's output under load)
            env = {FAKE_KEY_ENV: "dummy-key", "HOME": str(codex_home), **OWN_KEY, **HOST_SECRETS}
            async with relay_and_paired_host(host_home, client_home, workspace, name="codex-host",
                                             env=env) as (host, relay):
                yield CodexDeployment(model, host_home, workspace, client_home, host, relay)
        finally:
            remove(host_home, client_home, workspace)


async def start(d: CodexDeployment, client: Client, prompt: str) -> Watch:
    session = await client.start_session(agent="codex", prompt=prompt)
    return Watch(client, session)


async def test_approved_command_output_answer_and_completion_reach_the_client(
    codex_deployment: CodexDeployment,
) -> None:
    d = codex_deployment
    d.model.add({"exec": {"cmd": APPROVED_CMD, "justification": "to greet"}},
                {"text": ["It printed ", "approved-2", "."]})
    async with await Client.open(d.client_home) as client:
        watch = await start(d, client, "run the greeting")
        requested = await watch.until("approval.requested")
        assert requested["data"]["kind"] == "command"
        details = requested["data"]["details"]
        assert APPROVED_CMD in details["command"]
        assert details["cwd"] == str(d.workspace.resolve())
        assert details["reason"] == "to greet"
        # A client that (re)connects sees the question with the session.
        info = await client.session(watch.session)
        assert info["status"] == "waiting-for-approval"
        assert [a["approval"] for a in info["approvals"]] == [requested["data"]["approval"]]

        await client.approve(watch.session, requested["data"]["approval"], "approve")
        done = await watch.until("turn.completed")
        assert done["data"]["status"] == "completed"

        resolved = await watch.until("approval.resolved")
        assert resolved["data"]["decision"] == "approve" and resolved["data"]["by"]["name"] == "phone"
        [command] = watch.items("item.completed", "command")
        assert command["status"] == "completed" and command["exit_code"] == 0
        assert command["output"] == "approved-2\n"
        assert watch.deltas(command["item"]) == "approved-2\n"
        [answer] = watch.items("item.completed", "agent_message")
        assert answer["text"] == "It printed approved-2."
        assert watch.deltas(answer["item"]) == "It printed approved-2."
        assert (await client.session(watch.session))["status"] == "idle"
    assert "approved-2" in str(d.model.requests[1]["input"])


async def test_declined_command_never_runs(codex_deployment: CodexDeployment) -> None:
    d = codex_deployment
    d.model.add({"exec": {"cmd": f"{APPROVED_CMD} > ran.txt"}}, {"text": "Fine, I will not."})
    async with await Client.open(d.client_home) as client:
        watch = await start(d, client, "run it")
        requested = await watch.until("approval.requested")
        await client.approve(watch.session, requested["data"]["approval"], "deny")
        done = await watch.until("turn.completed")
        assert done["data"]["status"] == "completed"
        [command] = watch.items("item.completed", "command")
        assert command["status"] == "declined" and command["exit_code"] is None
        [answer] = watch.items("item.completed", "agent_message")
        assert answer["text"] == "Fine, I will not."
    assert not (d.workspace / "ran.txt").exists()
    assert "rejected by user" in str(d.model.requests[1]["input"])


async def test_interrupt_while_an_approval_is_pending(codex_deployment: CodexDeployment) -> None:
    d = codex_deployment
    await interrupt_while_an_approval_is_pending(
        d.client_home, d.workspace, "codex", d.model, {"exec": {"cmd": f"{APPROVED_CMD} > ran.txt"}},
    )


async def test_a_desktop_thread_is_listed_and_adopted_through_the_relay(codex_deployment: CodexDeployment) -> None:
    """A thread started outside tether (another app-server on the host's CODEX_HOME, as the
    desktop app would) shows up for a remote client, which adopts it and continues it."""
    from tests.agents.codex.conftest import Events
    from tether.agents.codex.appserver import AppServer

    d = codex_deployment
    d.model.add({"text": "Hi from the desktop."}, {"text": "I remember the desktop."})
    desktop = await AppServer.start(
        find_codex(codex_wrapper()), codex_home=d.host_home / "codex-home", cwd=d.workspace,
        env={FAKE_KEY_ENV: "dummy-key", "HOME": str(d.host_home / "codex-home"), **OWN_KEY, **HOST_SECRETS},
    )
    try:
        events = Events(desktop)
        thread_id = (await desktop.thread_start(d.workspace, "on-request", "workspace-write"))["thread"]["id"]
        await desktop.turn_start(thread_id, "hello from the desktop")
        await events.wait("turn/completed")
    finally:
        await desktop.close()

    async with await Client.open(d.client_home) as client:
        listed = {t["id"]: t for t in await client.threads()}
        assert listed[thread_id]["preview"] == "hello from the desktop"
        session = await client.start_session(agent="codex", thread=thread_id, prompt="do you remember?")
        watch = Watch(client, session)
        done = await watch.until("turn.completed")
        assert done["data"]["status"] == "completed"
    assert "hello from the desktop" in str(d.model.requests[-1]["input"])
    cli = tether_json(d.client_home, "sessions", "threads", "--json")
    assert thread_id in [t["id"] for t in cli]


async def test_a_host_secret_echoed_in_pieces_reaches_the_client_only_redacted(
    codex_deployment: CodexDeployment,
) -> None:
    """Issue [6] items 4 and 15, through the real Codex."""
    d = codex_deployment
    await secrets_never_reach_the_client(d.client_home, "codex", d.model, {"exec": {"cmd": LEAKY_COMMAND}},
                                         own_key="OPENAI_API_KEY")
