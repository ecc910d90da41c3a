"""Issue [6] items 1 and 7: an agent never reaches the home its host really runs with.

The attack: a host started with ``--home X`` (not ``~/.tether``), a builtin agent whose model
chooses the commands. The sandbox hid only the default home, so a command connected to
``X/host/daemon.sock`` as the owner and read the key files. Here the model tries exactly that,
through real relay, host and client processes, and the file tools try the same paths. The home
lies under /var/tmp: under /tmp the sandbox's private /tmp would hide it anyway and prove nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.agents.codex.conftest import FAKE_KEY_ENV, write_codex_config
from tests.e2e.test_codex_agent import codex_wrapper
from tests.procs import TETHER, Proc, login, short_home, start_relay, tether_json
from tests.support.agent_host import Watch
from tests.support.fake_openai import FakeOpenAI
from tests.support.fake_responses import FakeResponses
from tether import Client
from tether.agents.sandbox import available
from tether.protocol.rpc import RemoteError

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not available(), reason="bubblewrap unusable here")]

# Connects to the owner's socket and reads a key file; prints what it got.
PROBE = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1] + "/host/daemon.sock")
    print("CONNECTED-TO-OWNER-SOCKET")
except OSError as e:
    print("no socket:", type(e).__name__)
try:
    print(open(sys.argv[1] + "/host/keys.json").read())
except OSError as e:
    print("no keys:", type(e).__name__)
"""


def call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"id": call_id, "name": name, "arguments": json.dumps(args)}


@dataclass
class Setup:
    base: Path  # the host's only configured workspace: it holds the home and the project
    home: Path
    project: Path
    server: FakeOpenAI
    client_home: Path


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="th", dir="/var/tmp"))  # short: the socket path must fit
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def host_in(home: Path, base: Path, env: dict[str, str] | None = None) -> AsyncIterator[Path]:
    """A relay and ``tether host --home HOME`` on it with ``base`` its workspace, paired with a
    new client home (yielded)."""
    client_home = short_home("tc")
    relay, port = await asyncio.to_thread(start_relay)
    # `host --home X`, the subcommand's option: the daemon's $TETHER_HOME stays unset, so the
    # default home (what the sandbox used to hide) is ~/.tether, not this one.
    host = Proc([*TETHER, "host", "--home", str(home), "--relay", f"ws://127.0.0.1:{port}",
                 "--workspace", str(base), "--name", "home-host"], env={"TETHER_HOME": "", **(env or {})}, name="host")
    try:
        await asyncio.to_thread(host.wait_for, r"connected to relay")
        offer = await asyncio.to_thread(tether_json, home, "pair", "--json")
        await asyncio.to_thread(login, client_home, offer["link"], "--name", "phone", "--json")
        yield client_home
    finally:
        await asyncio.to_thread(host.stop)
        await asyncio.to_thread(relay.stop)
        shutil.rmtree(client_home, ignore_errors=True)


@pytest.fixture
async def setup(base: Path) -> AsyncIterator[Setup]:
    home, project = base / "h", base / "p"
    home.mkdir(mode=0o700)
    project.mkdir()
    async with FakeOpenAI() as server:
        (home / "config.toml").write_text(
            f'[agents.builtin]\nbase_url = "{server.base_url}"\nmodel = "m"\napi_key = "sk-test-key-0123456789"\n'
            'approval = "never"\nsandbox = "workspace-write"\n'
        )
        async with host_in(home, base) as client_home:
            yield Setup(base, home, project, server, client_home)


def _key_strings(home: Path) -> list[str]:
    """The private values in the host's key file (what must never leave the host)."""
    keys = json.loads((home / "host" / "keys.json").read_text())
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and len(value) >= 32:
            found.append(value)

    walk(keys)
    assert found, "the key file holds no key?"
    return found


async def test_a_model_chosen_command_cannot_reach_the_owners_socket_or_keys(setup: Setup) -> None:
    (setup.project / "probe.py").write_text(PROBE)
    setup.server.add(
        {"tool_calls": [call("run_command", {"command": f"python3 probe.py {setup.home}; ls -a {setup.home}"}, "c1"),
                        call("read_file", {"path": str(setup.home / "host" / "keys.json")}, "c2"),
                        call("list_dir", {"path": str(setup.home)}, "c3")]},
        {"text": "nothing there"},
    )
    async with await Client.open(setup.client_home) as client:
        watch = Watch(client, await client.start_session(agent="builtin", prompt="own the host",
                                                         workspace=str(setup.project)))
        await watch.until("turn.completed")
        [command] = watch.items("item.completed", "command")
        assert "CONNECTED-TO-OWNER-SOCKET" not in command["output"]
        assert "no socket: FileNotFoundError" in command["output"]
        assert "no keys: FileNotFoundError" in command["output"]
        assert "config.toml" not in command["output"]  # the home shows as an empty directory
        # The file tools refused both paths, and the model was told so.
        tool_results = [m["content"] for m in setup.server.requests[-1].json["messages"] if m["role"] == "tool"]
        assert len(tool_results) == 3
        assert all("outside the workspace" in r for r in tool_results[1:]), tool_results
        # Nothing of the keys reached the model or any event.
        sent = "".join(r.body.decode() for r in setup.server.requests)
        seen = json.dumps(watch.seen)
        for secret in _key_strings(setup.home):
            assert secret not in sent and secret not in seen
        # The host still serves this client.
        assert (await client.session(watch.session))["status"] == "idle"


async def test_a_session_whose_workspace_holds_the_home_is_refused(setup: Setup) -> None:
    async with await Client.open(setup.client_home) as client:
        with pytest.raises(RemoteError) as raised:
            await client.start_session(agent="builtin", prompt="hi", workspace=str(setup.base))
        assert raised.value.code == "workspace_has_home"
        assert f"contains the tether home {setup.home}" in raised.value.message
        assert "project directory" in (raised.value.hint or "")
        # A workspace inside the home (its host/ directory) is refused the same way.
        with pytest.raises(RemoteError) as inside:
            await client.start_session(agent="builtin", prompt="hi", workspace=str(setup.home / "host"))
        assert inside.value.code in ("workspace_has_home", "workspace")
        # The project beside it still works.
        setup.server.add({"text": "hello"})
        sid = await client.start_session(agent="builtin", prompt="hi", workspace=str(setup.project))
        await Watch(client, sid).until("turn.completed")
    await asyncio.sleep(0)


async def test_codex_commands_cannot_reach_the_owners_socket_or_keys(base: Path) -> None:
    """Codex's own sandbox lets commands read the whole disk: the app-server runs with the home
    covered. Its CODEX_HOME inside the tether home stays usable (bound back)."""
    home, project = base / "h", base / "p"
    home.mkdir(mode=0o700)
    project.mkdir()
    (project / "probe.py").write_text(PROBE)
    codex_home = home / "codex-home"
    async with FakeResponses() as model:
        write_codex_config(codex_home, model.base_url)
        (home / "config.toml").write_text(
            f'[agents.codex]\nbinary = "{codex_wrapper()}"\ncodex_home = "{codex_home}"\n'
            'approval = "never"\nsandbox = "workspace-write"\n'
        )
        model.add({"exec": {"cmd": f"python3 probe.py {home}; ls -a {home}", "escalated": False}},
                  {"text": "nothing there"})
        async with host_in(home, base, {FAKE_KEY_ENV: "dummy-key"}) as client_home:
            async with await Client.open(client_home) as client:
                watch = Watch(client, await client.start_session(agent="codex", prompt="own the host",
                                                                 workspace=str(project)))
                done = await watch.until("turn.completed")
                assert done["data"]["status"] == "completed", done["data"]
                commands = watch.items("item.completed", "command")
                assert len(commands) == 1, json.dumps([e["data"] for e in watch.seen])
                [command] = commands
                assert "CONNECTED-TO-OWNER-SOCKET" not in command["output"]
                assert "no socket:" in command["output"] and "no keys: FileNotFoundError" in command["output"]
                listed = command["output"].split("no keys: FileNotFoundError\n", 1)[1].split()
                assert sorted(listed) == [".", "..", "codex-home"]  # the home is empty but for what Codex needs
                seen = json.dumps(watch.seen) + json.dumps(model.requests)
                for secret in _key_strings(home):
                    assert secret not in seen
                assert (await client.session(watch.session))["status"] == "idle"
