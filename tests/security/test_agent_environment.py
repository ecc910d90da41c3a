"""The host's secret variables stay out of what a session runs (issue [6] item 4): real relay,
host and SDK client. The attack that found it: `env` in a pty showed the model API keys. The
agents' commands are covered with their adapters: tests/e2e/test_builtin_agent.py,
test_claude_agent.py and test_codex_agent.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import TETHER, Proc, remove, short_home, start_relay
from tests.support.agent_host import HOST_SECRETS
from tests.support.deployment import Deployment
from tether.client.sdk import Client

pytestmark = pytest.mark.slow

SECRET_ENV = {**HOST_SECRETS, "OPENAI_API_KEY": "sk-openai-host-key-0123456789",
              "ANTHROPIC_API_KEY": "sk-ant-host-key-0123456789", "MY_SERVICE_TOKEN": "tok-host-0123456789"}


@pytest.fixture
def deployment_with_secrets() -> Iterator[Deployment]:
    """A relay and a host whose environment holds model API keys and other secrets."""
    host_home, workspace = short_home("th"), short_home("tw")
    relay, port = start_relay()
    host = Proc([*TETHER, "--home", str(host_home), "host", "--relay", f"ws://127.0.0.1:{port}", "--workspace",
                 str(workspace), "--name", "test-host"], env=SECRET_ENV, name="host")
    try:
        host.wait_for(r"connected to relay")
        yield Deployment(relay, port, host, host_home, workspace)
    finally:
        host.stop()
        relay.stop()
        remove(host_home, workspace)


async def _output(client: Client, session: str, marker: str) -> str:
    text = ""
    async with asyncio.timeout(20):
        async for event in client.events(0, session=session):
            if event["type"] == "session.output":
                text += event["data"]["data"]
                if marker in text:
                    return text
    raise AssertionError(f"the session ended before {marker!r}: {text!r}")


async def test_env_in_a_pty_shows_no_secret_variable(deployment_with_secrets: Deployment, client_home: Path) -> None:
    d = deployment_with_secrets
    await asyncio.to_thread(d.pair, client_home)
    async with Client(client_home) as client:
        session = await client.start_session(["sh", "-c", "env; echo env-$((20+1))-done"])
        shown = await _output(client, session, "env-21-done")
        assert "PATH=" in shown  # the rest of the environment is there
        for name, value in SECRET_ENV.items():
            assert f"{name}=" not in shown and value not in shown, f"{name} reached the pty"
        # The host goes on serving: another session starts and runs.
        again = await client.start_session(["sh", "-c", "echo still-$((1+1))"])
        assert "still-2" in await _output(client, again, "still-2")
