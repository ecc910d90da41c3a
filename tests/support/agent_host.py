"""What the end-to-end tests of the agent adapters (tests/e2e/test_codex_agent.py,
tests/e2e/test_claude_agent.py) share: a relay and a host paired with a client, as processes, and
one session's events as the client receives them.

The model servers run on the test's loop, so the blocking process calls go through
``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest

from tests.procs import TETHER, Proc, login, start_relay, tether_json
from tests.support.scripted_model import ScriptedModel, Turn
from tether import Client
from tether.protocol.rpc import RemoteError

TIMEOUT = 40.0
Event = dict[str, Any]
M = TypeVar("M", bound=ScriptedModel)


@dataclass
class AgentDeployment(Generic[M]):
    """A relay, a host running the agent against ``model``, and a client paired with it."""

    model: M
    host_home: Path
    workspace: Path
    client_home: Path
    host: Proc
    relay: Proc


@contextlib.asynccontextmanager
async def relay_and_paired_host(
    host_home: Path, client_home: Path, workspace: Path, *, name: str, env: Mapping[str, str],
) -> AsyncIterator[tuple[Proc, Proc]]:
    """A relay, and a host on it (``env`` added to its environment) paired with ``client_home``:
    (host, relay), both stopped at the end."""
    relay, port = await asyncio.to_thread(start_relay)
    relay_url = f"ws://127.0.0.1:{port}"

    def start_and_pair() -> Proc:
        host = Proc([*TETHER, "--home", str(host_home), "host", "--relay", relay_url, "--workspace",
                     str(workspace), "--name", name], env=dict(env), name="host")
        host.wait_for(r"connected to relay")
        offer = tether_json(host_home, "pair", "--json")
        login(client_home, offer["link"], "--name", "phone", "--json")
        return host

    host: Proc | None = None
    try:
        host = await asyncio.to_thread(start_and_pair)
        yield host, relay
    finally:
        if host is not None:
            await asyncio.to_thread(host.stop)
        await asyncio.to_thread(relay.stop)


@dataclass
class Watch:
    """One session's events as the client receives them."""

    client: Client
    session: str
    seen: list[Event] = field(default_factory=list)
    _it: AsyncIterator[Event] | None = None

    async def until(self, type: str, where: Callable[[dict[str, Any]], bool] = lambda _: True) -> Event:
        for event in self.seen:
            if event["type"] == type and where(event["data"]):
                return event
        if self._it is None:
            self._it = self.client.events(0, session=self.session)
        try:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    event = await anext(self._it)
                    self.seen.append(event)
                    if event["type"] == type and where(event["data"]):
                        return event
        except TimeoutError:
            raise AssertionError(f"no {type} within {TIMEOUT:.0f} s; seen: {[e['type'] for e in self.seen]}") from None

    def items(self, type: str, kind: str) -> list[dict[str, Any]]:
        return [e["data"] for e in self.seen if e["type"] == type and e["data"].get("kind") == kind]

    def deltas(self, item: str) -> str:
        return "".join(e["data"]["data"] for e in self.seen if e["type"] == "item.delta" and e["data"]["item"] == item)


async def interrupt_while_an_approval_is_pending(
    client_home: Path, workspace: Path, agent: str, model: ScriptedModel, command: Turn,
) -> None:
    """What every agent does when a turn waiting for an approval is interrupted: the question is
    cleared, a late answer conflicts, the session takes the next prompt, and ``command`` (a turn
    whose command would write ``ran.txt``) never ran."""
    model.add(command)
    async with await Client.open(client_home) as client:
        watch = Watch(client, await client.start_session(agent=agent, prompt="run it"))
        requested = await watch.until("approval.requested")
        await client.interrupt(watch.session)
        done = await watch.until("turn.completed")
        assert done["data"]["status"] == "interrupted"
        cleared = await watch.until("approval.cleared")
        assert cleared["data"]["approval"] == requested["data"]["approval"]
        with pytest.raises(RemoteError) as raised:
            await client.approve(watch.session, requested["data"]["approval"], "approve")
        assert raised.value.code == "approval_conflict"
        info = await client.session(watch.session)
        assert info["status"] == "idle" and info["approvals"] == []

        # The session goes on with the next prompt.
        model.add({"text": "still here"})
        await client.send(watch.session, "are you there?")
        second = await watch.until("turn.completed", lambda data: data["turn"] != done["data"]["turn"])
        assert second["data"]["status"] == "completed"
    await asyncio.sleep(0.3)
    assert not (workspace / "ran.txt").exists()


# Secrets in the host's environment (the agent fixtures add them): what the attack of issue [6]
# items 4 and 15 tries to get out of a session.
HOST_SECRETS = {"GH_TOKEN": "ghp-host-secret-0123456789abcdef", "DEPLOY_PASSWORD": "pw-host-secret-fedcba9876543210"}
SECRET = HOST_SECRETS["GH_TOKEN"]
# A command that shows its environment, then prints the secret in two writes (two output chunks);
# and a model answer that echoes the secret split over two text deltas.
LEAKY_COMMAND = f"env; printf %s '{SECRET[:12]}'; sleep 0.5; printf '%s\\n' '{SECRET[12:]}'"
LEAKY_TEXT = [f"the key is {SECRET[:12]}", f"{SECRET[12:]}, done"]


async def secrets_never_reach_the_client(
    client_home: Path, agent: str, model: ScriptedModel, command: Turn, own_key: str,
) -> None:
    """A model that runs ``command`` (:data:`LEAKY_COMMAND`) and echoes a host secret split over
    deltas: the client sees ``[redacted]`` in the streamed and the completed items, the command's
    environment has none of the host's secret variables nor the agent's own key ``own_key``, and
    the session takes the next prompt."""
    model.add(command, {"text": LEAKY_TEXT})
    async with await Client.open(client_home) as client:
        watch = Watch(client, await client.start_session(agent=agent, prompt="show me the key"))
        requested = await watch.until("approval.requested")
        await client.approve(watch.session, requested["data"]["approval"], "approve")
        done = await watch.until("turn.completed")
        assert done["data"]["status"] == "completed", done["data"]
        [command_item] = watch.items("item.completed", "command")
        output = command_item["output"]
        assert output.rstrip().endswith("[redacted]") and SECRET not in watch.deltas(command_item["item"])
        for name in [*HOST_SECRETS, own_key]:
            assert f"{name}=" not in output, f"{name} reached the command's environment"
        [answer] = watch.items("item.completed", "agent_message")
        assert answer["text"] == "the key is [redacted], done"
        assert watch.deltas(answer["item"]) == answer["text"]
        seen = json.dumps(watch.seen)
        for secret in HOST_SECRETS.values():
            assert secret not in seen

        model.add({"text": "still here"})
        await client.send(watch.session, "are you there?")
        second = await watch.until("turn.completed", lambda data: data["turn"] != done["data"]["turn"])
        assert second["data"]["status"] == "completed"
