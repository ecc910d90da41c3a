"""Sessions on a remote host started by `tether ssh` behave as local ones, for every adapter
there is (pty, builtin, codex): events, approvals and resume, through the relay, by a client
paired with the desktop only (it learns the remote host "box" from the desktop's linked hosts).

The remote is this machine reached over SSH as a throwaway user, so its daemon reaches the
scripted model servers this test runs on 127.0.0.1. The remote host has its own config.toml
(written before `tether ssh` starts its daemon) and its own workspace, both owned by that user.
The model servers run on the test's loop: every blocking call goes through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.agents.codex.conftest import FAKE_KEY_ENV, write_codex_config
from tests.e2e.test_builtin_agent import call, of, race_for_one_approval, turn_done
from tests.e2e.test_codex_agent import codex_wrapper
from tests.procs import login, remove, short_home, tether, tether_json
from tests.ssh.conftest import Desktop, SshServer
from tests.ssh.helpers import (
    give_to_remote_user,
    learn_host,
    link_tree,
    remote_dir,
    remote_ids,
    remove_remote_config,
    start_box,
    write_remote_config,
)
from tests.ssh.test_ssh import remote  # noqa: F401 (a fixture)
from tests.support.fake_openai import FakeOpenAI
from tests.support.fake_responses import FakeResponses
from tests.support.numbered import NumberedStream, producer
from tether import Client
from tether.agents.codex import find_codex
from tether.agents.sandbox import available

pytestmark = [pytest.mark.ssh, pytest.mark.slow, pytest.mark.timeout(600)]

needs_bwrap = pytest.mark.skipif(not available(), reason="bubblewrap unusable here")
API_KEY = "sk-remote-CONFIG-SECRET-9d2e7c1a"
TIMEOUT = 60.0
Event = dict[str, Any]


@dataclass
class Box:
    """The remote host "box", started by `tether ssh` from the desktop."""

    desktop: Desktop
    sshd: SshServer
    host_id: str
    workspace: Path  # on the remote, the remote user's
    clients: list[Path]  # client homes paired with the desktop only

    async def cli(self, home: Path, *args: str, check: bool = True) -> Any:
        return await asyncio.to_thread(tether, home, *args, "--host", "box", check=check)


async def _start(desktop: Desktop, sshd: SshServer, wheels: Path, workspace: Path, clients: list[Path]) -> Box:
    started = await asyncio.to_thread(start_box, desktop, sshd, wheels, "--workspace", str(workspace))
    for home in clients:
        await asyncio.to_thread(learn_host, home, started["host_id"])
    return Box(desktop, sshd, started["host_id"], workspace, clients)


def _pair(desktop: Desktop, home: Path, name: str) -> None:
    offer = tether_json(desktop.home, "pair", "--json")
    login(home, offer["link"], "--name", name, "--json")


async def watch(client: Client, session: str, stop: Callable[[Event], bool], *, since: int = 0,
                on_event: Callable[[Event], Any] | None = None) -> list[Event]:
    """The session's events after ``since`` up to the first matching ``stop``; ``on_event``
    (awaited if it is a coroutine function) sees each one first."""
    events: list[Event] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            async for event in client.events(since, session=session):
                events.append(event)
                if on_event is not None:
                    result = on_event(event)
                    if asyncio.iscoroutine(result):
                        await result
                if stop(event):
                    return events
    except TimeoutError:
        raise AssertionError(f"timed out; seen: {[e['type'] for e in events]}") from None
    raise AssertionError("the event stream ended")


def asked(event: Event) -> bool:
    """An approval request."""
    return bool(event["type"] == "approval.requested")


# -- builtin ---------------------------------------------------------------------------------


@pytest.fixture
async def builtin_box(
    request: pytest.FixtureRequest, desktop: Desktop, remote: SshServer, wheels: Path  # noqa: F811
) -> AsyncIterator[tuple[Box, FakeOpenAI]]:
    """box runs the builtin agent against the scripted server (parametrize: how many clients)."""
    n_clients = getattr(request, "param", 1)
    async with FakeOpenAI() as model:
        workspace = remote_dir(remote, "ws-builtin")
        extra = [short_home("tdc") for _ in range(n_clients - 1)]
        try:
            write_remote_config(
                remote,
                "[agents.builtin]\n"
                f'base_url = "{model.base_url}"\n'
                'model = "fake-model"\n'
                f'api_key = "{API_KEY}"\n'
                'approval = "on-request"\n'
                'sandbox = "workspace-write"\n',
            )
            for i, home in enumerate(extra, 2):
                await asyncio.to_thread(_pair, desktop, home, f"phone{i}")
            yield await _start(desktop, remote, wheels, workspace, [desktop.client_home, *extra]), model
        finally:
            remove_remote_config(remote)
            shutil.rmtree(workspace, ignore_errors=True)
            remove(*extra)


@needs_bwrap
async def test_builtin_agent_on_the_remote_asks_before_writing_and_obeys_a_denial(
    builtin_box: tuple[Box, FakeOpenAI],
) -> None:
    box, model = builtin_box
    model.add(
        {"tool_calls": [call("write_file", {"path": "src/hello.py", "content": "print('hi')\n"}, "c1"),
                        call("run_command", {"command": "id -un; echo sum=$((20+22))"}, "c2")]},
        {"text": "Wrote src/hello.py."},
        {"tool_calls": [call("write_file", {"path": "nope.txt", "content": "x\n"}, "c3")]},
        {"text": "Understood, not writing it."},
    )
    diff = "--- /dev/null\n+++ b/src/hello.py\n@@ -0,0 +1 @@\n+print('hi')\n"
    hello = box.workspace / "src" / "hello.py"
    async with await Client.open(box.clients[0], host="box") as client:
        info = await client.info()
        assert (info["id"], info["name"]) == (box.host_id, "box")
        sid = await client.start_session(agent="builtin", prompt="write hello", approval="on-request")
        questions: list[dict[str, Any]] = []

        async def approve_each(event: Event) -> None:
            if event["type"] == "approval.requested":
                questions.append(event["data"])
                if event["data"]["kind"] == "file_change":
                    assert not hello.exists()  # nothing is written on the remote before the answer
                assert (await client.session(sid))["status"] == "waiting-for-approval"
                await client.approve(sid, event["data"]["approval"], "approve")

        first = await watch(client, sid, turn_done, on_event=approve_each)
        assert [q["kind"] for q in questions] == ["file_change", "command"]
        assert questions[0]["details"]["path"] == "src/hello.py" and questions[0]["details"]["diff"] == diff
        assert questions[1]["details"]["cwd"] == str(box.workspace)

        # The file is in the remote workspace, written by the remote user's daemon.
        assert hello.read_text() == "print('hi')\n"
        assert hello.stat().st_uid == remote_ids(box.sshd)[0]
        assert not (box.desktop.workspace / "src").exists()
        [change] = of(first, "item.completed", "file_change")
        assert (change["status"], change["diff"]) == ("completed", diff)
        # The command ran there, as that user (the sum is the shell's, not an echo of the command).
        [command] = of(first, "item.completed", "command")
        assert command["status"] == "completed" and command["exit_code"] == 0
        assert command["output"] == f"{box.sshd.user}\nsum=42\n"
        assert [r["decision"] for r in of(first, "approval.resolved")] == ["approve", "approve"]
        assert all(r["by"]["name"] == "phone" for r in of(first, "approval.resolved"))
        assert of(first, "turn.completed")[0]["status"] == "completed"
        assert of(first, "item.completed", "agent_message")[-1]["text"] == "Wrote src/hello.py."
        assert diff in (await box.cli(box.clients[0], "sessions", "diff", sid)).stdout

        # A second turn of the same session; denied from the CLI: no file.
        await client.send(sid, "now write nope.txt")
        last = first[-1]["seq"]
        events = await watch(client, sid, asked, since=last)
        approval = events[-1]["data"]["approval"]
        answered = await box.cli(box.clients[0], "sessions", "approve", sid, approval, "--deny")
        assert "deny" in answered.stdout
        second = await watch(client, sid, turn_done, since=last)
        assert (await client.session(sid))["status"] == "idle"
    assert not (box.workspace / "nope.txt").exists()
    [resolved] = of(second, "approval.resolved")
    assert resolved["decision"] == "deny" and resolved["by"]["name"] == "phone"
    [declined] = of(second, "item.completed", "file_change")
    assert declined["status"] == "declined"
    assert of(second, "turn.completed")[0]["status"] == "completed"
    told = model.requests[-1].json["messages"][-1]
    assert told["role"] == "tool" and "denied" in told["content"].lower()
    # The API key of the remote's config went to the model server only.
    assert model.requests[0].headers.get("authorization") == f"Bearer {API_KEY}"
    assert API_KEY not in json.dumps(first + second)
    assert API_KEY not in (box.sshd.user_home / ".tether" / "host" / "ssh-daemon.log").read_text()


@needs_bwrap
@pytest.mark.parametrize("builtin_box", [2], indirect=True)
async def test_two_clients_of_the_remote_answer_one_approval_and_one_wins(
    builtin_box: tuple[Box, FakeOpenAI],
) -> None:
    box, model = builtin_box
    model.add({"tool_calls": [call("write_file", {"path": "race.txt", "content": "won\n"})]}, {"text": "done"})
    async with await Client.open(box.clients[0], host="box") as one, \
            await Client.open(box.clients[1], host="box") as two:
        winner, resolved = await race_for_one_approval(one, two)
    assert resolved["by"]["name"] == ("phone" if winner == "approve" else "phone2")
    assert (box.workspace / "race.txt").exists() == (winner == "approve")


# -- codex -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def remote_codex(sshd: SshServer) -> Iterator[Path]:
    """The native Codex binary (with the files beside it) where the remote user can run it:
    scripts/install-codex puts it under /root/.cache, which that user cannot read."""
    native = find_codex(codex_wrapper()).path  # .../<target triple>/bin/codex
    dist = sshd.user_home / "codex-dist"
    shutil.rmtree(dist, ignore_errors=True)
    link_tree(native.parent.parent, dist)
    yield dist / "bin" / native.name
    shutil.rmtree(dist, ignore_errors=True)


@pytest.fixture
async def codex_box(
    desktop: Desktop, remote: SshServer, wheels: Path, remote_codex: Path  # noqa: F811
) -> AsyncIterator[tuple[Box, FakeResponses]]:
    async with FakeResponses() as model:
        workspace = remote_dir(remote, "ws-codex")
        codex_home = remote_dir(remote, "codex-home")
        try:
            # The daemon's environment is the SSH session's: the provider's key cannot come from
            # an environment variable there, so it is in Codex's own config (as `codex login`
            # would put it in CODEX_HOME).
            write_codex_config(codex_home, model.base_url)
            config = codex_home / "config.toml"
            text = config.read_text()
            assert f'env_key = "{FAKE_KEY_ENV}"' in text
            config.write_text(text.replace(f'env_key = "{FAKE_KEY_ENV}"', 'experimental_bearer_token = "dummy-key"'))
            give_to_remote_user(remote, codex_home)
            write_remote_config(
                remote,
                "[agents.codex]\n"
                f'binary = "{remote_codex}"\n'
                f'codex_home = "{codex_home}"\n'
                'approval = "on-request"\n'
                'sandbox = "workspace-write"\n',
            )
            yield await _start(desktop, remote, wheels, workspace, [desktop.client_home]), model
        finally:
            remove_remote_config(remote)
            shutil.rmtree(workspace, ignore_errors=True)
            shutil.rmtree(codex_home, ignore_errors=True)


async def test_codex_on_the_remote_runs_an_approved_command(codex_box: tuple[Box, FakeResponses]) -> None:
    box, model = codex_box
    cmd = "echo approved-$((1+1)) by $(id -un)"
    model.add({"exec": {"cmd": cmd, "justification": "to greet"}}, {"text": ["It printed ", "approved-2", "."]})
    async with await Client.open(box.clients[0], host="box") as client:
        sid = await client.start_session(agent="codex", prompt="run the greeting")
        events = await watch(client, sid, lambda e: asked(e) or turn_done(e))
        assert events[-1]["type"] == "approval.requested", [(e["type"], e["data"]) for e in events]
        requested = events[-1]["data"]
        assert requested["kind"] == "command"
        assert cmd in requested["details"]["command"]
        assert requested["details"]["cwd"] == str(box.workspace)
        assert requested["details"]["reason"] == "to greet"
        info = await client.session(sid)
        assert info["status"] == "waiting-for-approval"
        assert [a["approval"] for a in info["approvals"]] == [requested["approval"]]
        await client.approve(sid, requested["approval"], "approve")
        events = await watch(client, sid, turn_done)
        assert (await client.session(sid))["status"] == "idle"
    assert of(events, "turn.completed")[0]["status"] == "completed"
    [resolved] = of(events, "approval.resolved")
    assert resolved["decision"] == "approve" and resolved["by"]["name"] == "phone"
    [command] = of(events, "item.completed", "command")
    assert command["status"] == "completed" and command["exit_code"] == 0
    assert command["output"] == f"approved-2 by {box.sshd.user}\n"
    [answer] = of(events, "item.completed", "agent_message")
    assert answer["text"] == "It printed approved-2."
    assert f"approved-2 by {box.sshd.user}" in str(model.requests[1]["input"])


# -- resume ----------------------------------------------------------------------------------

LINES = 4000


async def test_a_client_cut_mid_stream_resumes_a_remote_session_without_loss(
    desktop: Desktop, remote: SshServer, wheels: Path  # noqa: F811
) -> None:
    workspace = remote_dir(remote, "ws-resume")
    try:
        script = workspace / "producer.py"
        script.write_text(producer(LINES, every=20))
        give_to_remote_user(remote, script)
        box = await _start(desktop, remote, wheels, workspace, [desktop.client_home])
        async with await Client.open(box.clients[0], host="box") as client:
            session = await client.start_session(["python3", str(script)])
            async with NumberedStream(client, session) as stream, asyncio.timeout(90):
                await stream.seen(800)
                cut = [stream.cut_client()]
                await stream.seen(2000)
                cut.append(stream.cut_client())
                await stream.exited.wait()
            info = await client.session(session)
            # Each cut ended a connection; the client made a new one through the relay each time.
            assert cut[0] is not cut[1] and client._conn not in cut
        stream.assert_whole(LINES)
        assert info["status"] == "finished"
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
