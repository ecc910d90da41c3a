"""The real ``codex app-server`` (the pinned version) driven against the scripted model server.

These are also the record of what the protocol looks like: each test asserts the notification and
server-request names and the fields the tether adapter maps (see the report in the commit log).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.agents.codex.conftest import StartAppServer
from tests.support.fake_responses import FakeResponses
from tether.agents.codex import (
    COMMAND_APPROVAL,
    FILE_CHANGE_APPROVAL,
    AppServerExited,
    Notification,
    RequestState,
    ServerRequest,
)

pytestmark = pytest.mark.slow

APPROVED_CMD = "echo approved-$((1+1))"


def text_of(item: dict[str, Any]) -> str:
    return str(item.get("text", ""))


def model_inputs(request: dict[str, Any]) -> str:
    """A model request's input, flattened to text, to look for what Codex showed the model."""
    return json.dumps(request["input"])


async def start_thread(start_appserver: StartAppServer, workspace: Path, sandbox: str = "workspace-write"):  # type: ignore[no-untyped-def]
    server, events = await start_appserver()
    started = await server.thread_start(workspace, "on-request", sandbox)
    thread_id = started["thread"]["id"]
    await events.wait("thread/started", lambda p: p["thread"]["id"] == thread_id)
    return server, events, thread_id


async def test_initialize_identifies_tether(start_appserver: StartAppServer, codex_home: Path) -> None:
    server, _events = await start_appserver()
    assert server.info["userAgent"].startswith("tether/0.169.0")
    assert Path(server.info["codexHome"]) == codex_home


async def test_turn_streams_reasoning_and_agent_message(
    start_appserver: StartAppServer, fake_model: FakeResponses, workspace: Path,
) -> None:
    fake_model.add({"reasoning": "the user wants a greeting", "text": ["Hel", "lo ", "there"]})
    server, events, thread_id = await start_thread(start_appserver, workspace)

    turn = await server.turn_start(thread_id, "say hi")
    assert turn["status"] == "inProgress"
    await events.wait("turn/started", lambda p: p["turn"]["id"] == turn["id"])
    user = await events.wait("item/started", lambda p: p["item"]["type"] == "userMessage")
    assert user.params["item"]["content"][0]["text"] == "say hi"
    reasoning = await events.wait("item/completed", lambda p: p["item"]["type"] == "reasoning")
    assert reasoning.params["item"]["summary"] == ["the user wants a greeting"]
    message = await events.wait("item/completed", lambda p: p["item"]["type"] == "agentMessage")
    done = await events.wait("turn/completed")

    deltas = events.notifications("item/agentMessage/delta")
    assert [d.params["delta"] for d in deltas] == ["Hel", "lo ", "there"]
    assert {d.params["itemId"] for d in deltas} == {message.params["item"]["id"]}
    assert text_of(message.params["item"]) == "Hello there"
    assert events.notifications("item/reasoning/summaryTextDelta")[0].params["delta"] == "the user wants a greeting"
    assert done.params["threadId"] == thread_id
    assert done.params["turn"]["id"] == turn["id"]
    assert done.params["turn"]["status"] == "completed"
    assert done.params["turn"]["error"] is None
    # The fake model got the prompt, and the dummy API key from env_key.
    assert "say hi" in model_inputs(fake_model.requests[0])


async def test_command_approval_accepted_runs_the_command(
    start_appserver: StartAppServer, fake_model: FakeResponses, workspace: Path,
) -> None:
    fake_model.add(
        {"exec": {"cmd": APPROVED_CMD, "justification": "to greet"}}, {"text": ["It printed ", "approved-2."]},
    )
    server, events, thread_id = await start_thread(start_appserver, workspace)
    turn = await server.turn_start(thread_id, "run the greeting command")

    started = await events.wait("item/started", lambda p: p["item"]["type"] == "commandExecution")
    request = await events.wait(COMMAND_APPROVAL)
    assert isinstance(request, ServerRequest)
    params = request.params
    assert params["threadId"] == thread_id and params["turnId"] == turn["id"]
    assert params["itemId"] == started.params["item"]["id"]
    assert APPROVED_CMD in params["command"]
    assert params["cwd"] == str(workspace)
    assert params["reason"] == "to greet"
    assert "accept" in params["availableDecisions"]
    assert server.pending_server_requests == [request]

    assert await request.respond({"decision": "accept"})
    assert not await request.respond({"decision": "decline"})  # the first answer wins

    resolved = await events.wait("serverRequest/resolved")
    assert resolved.params == {"threadId": thread_id, "requestId": request.id}
    completed = await events.wait("item/completed", lambda p: p["item"]["type"] == "commandExecution")
    item = completed.params["item"]
    assert item["status"] == "completed"
    assert item["exitCode"] == 0
    assert item["aggregatedOutput"] == "approved-2\n"
    # Output deltas stream while a command runs; one this short may finish first and send none,
    # so item/completed's aggregatedOutput is what to rely on.
    deltas = events.notifications("item/commandExecution/outputDelta")
    assert "".join(d.params["delta"] for d in deltas) in ("", "approved-2\n")
    assert all(d.params["itemId"] == item["id"] for d in deltas)
    answer = await events.wait("item/completed", lambda p: p["item"]["type"] == "agentMessage")
    assert text_of(answer.params["item"]) == "It printed approved-2."
    done = await events.wait("turn/completed")
    assert done.params["turn"]["status"] == "completed"
    assert request.state is RequestState.ANSWERED
    assert server.pending_server_requests == []
    # The model saw the command's output.
    assert "approved-2" in model_inputs(fake_model.requests[1])


async def test_command_approval_declined_does_not_run(
    start_appserver: StartAppServer, fake_model: FakeResponses, workspace: Path,
) -> None:
    fake_model.add({"exec": {"cmd": f"{APPROVED_CMD} > ran.txt"}}, {"text": "Fine, I will not."})
    server, events, thread_id = await start_thread(start_appserver, workspace)
    await server.turn_start(thread_id, "run it")

    request = await events.wait(COMMAND_APPROVAL)
    assert isinstance(request, ServerRequest)
    await request.respond({"decision": "decline"})
    completed = await events.wait("item/completed", lambda p: p["item"]["type"] == "commandExecution")
    assert completed.params["item"]["status"] == "declined"
    assert completed.params["item"]["exitCode"] is None
    done = await events.wait("turn/completed")
    assert done.params["turn"]["status"] == "completed"
    assert events.notifications("item/commandExecution/outputDelta") == []
    assert not (workspace / "ran.txt").exists()
    assert "rejected by user" in model_inputs(fake_model.requests[1])


async def test_interrupt_while_approval_pending(
    start_appserver: StartAppServer, fake_model: FakeResponses, workspace: Path,
) -> None:
    fake_model.add({"exec": {"cmd": f"{APPROVED_CMD} > ran.txt"}})
    server, events, thread_id = await start_thread(start_appserver, workspace)
    turn = await server.turn_start(thread_id, "run it")
    request = await events.wait(COMMAND_APPROVAL)
    assert isinstance(request, ServerRequest)

    await server.turn_interrupt(thread_id, turn["id"])
    done = await events.wait("turn/completed")
    assert done.params["turn"]["status"] == "interrupted"
    # Codex withdraws the approval itself, after turn/completed; the request is then closed.
    resolved = await events.wait("serverRequest/resolved")
    assert resolved.params["requestId"] == request.id
    assert request.state is RequestState.RESOLVED
    assert not await request.respond({"decision": "accept"})
    # No item/completed arrives for the command item: the adapter closes open items at turn end.
    command_done = [n for n in events.notifications("item/completed") if n.params["item"]["type"] == "commandExecution"]
    assert command_done == []
    await asyncio.sleep(0.3)
    assert not (workspace / "ran.txt").exists()
    assert len(fake_model.requests) == 1


async def test_file_change_approval(
    start_appserver: StartAppServer, fake_model: FakeResponses, workspace: Path,
) -> None:
    # Codex turns an `apply_patch` run through exec_command into a fileChange item; in a read-only
    # sandbox writing it needs approval.
    patch = "apply_patch <<'EOF'\n*** Begin Patch\n*** Add File: hello.txt\n+hi there\n*** End Patch\nEOF\n"
    fake_model.add({"exec": {"cmd": patch, "escalated": False}}, {"text": "Patched."})
    server, events, thread_id = await start_thread(start_appserver, workspace, sandbox="read-only")
    turn = await server.turn_start(thread_id, "add hello.txt")

    started = await events.wait("item/started", lambda p: p["item"]["type"] == "fileChange")
    change = started.params["item"]["changes"][0]
    assert change["path"] == str(workspace / "hello.txt")
    assert change["kind"] == {"type": "add"}
    assert change["diff"] == "hi there\n"
    request = await events.wait(FILE_CHANGE_APPROVAL)
    assert isinstance(request, ServerRequest)
    assert request.params["itemId"] == started.params["item"]["id"]
    assert request.params["turnId"] == turn["id"]
    await request.respond({"decision": "accept"})
    completed = await events.wait("item/completed", lambda p: p["item"]["type"] == "fileChange")
    assert completed.params["item"]["status"] == "completed"
    await events.wait("turn/completed")
    assert (workspace / "hello.txt").read_text() == "hi there\n"


async def test_threads_from_another_process_are_listed_and_resumable(
    start_appserver: StartAppServer, fake_model: FakeResponses, workspace: Path,
) -> None:
    # "The desktop": another app-server on the same CODEX_HOME runs a turn, then goes away.
    fake_model.add({"text": "Hi from the desktop."}, {"text": "I remember."})
    desktop, desktop_events, thread_id = await start_thread(start_appserver, workspace)
    await desktop.turn_start(thread_id, "hello from the desktop")
    await desktop_events.wait("turn/completed")
    await desktop.close()

    server, events = await start_appserver()
    listed = await server.thread_list(limit=10)
    ids = [t["id"] for t in listed["data"]]
    assert thread_id in ids
    listed_thread = listed["data"][ids.index(thread_id)]
    assert listed_thread["cwd"] == str(workspace)
    assert listed_thread["preview"] == "hello from the desktop"

    resumed = await server.thread_resume(thread_id)
    assert resumed["thread"]["id"] == thread_id
    await server.turn_start(thread_id, "do you remember?")
    done = await events.wait("turn/completed")
    assert done.params["turn"]["status"] == "completed"
    assert "hello from the desktop" in model_inputs(fake_model.requests[-1])


async def all_threads_stopped(pid: int) -> None:
    """Until every thread of ``pid`` is stopped: SIGSTOP stops a busy thread on another CPU only
    when that CPU next runs the kernel, which a loaded VM may delay past the next request."""
    async with asyncio.timeout(10):
        while any((task / "stat").read_text().rsplit(")", 1)[1].split()[0] not in "Tt"
                  for task in Path(f"/proc/{pid}/task").iterdir()):
            await asyncio.sleep(0.01)


async def test_killed_binary_fails_pending_requests(
    start_appserver: StartAppServer, fake_model: FakeResponses, workspace: Path,
) -> None:
    fake_model.add({"exec": {"cmd": APPROVED_CMD}})
    server, events, thread_id = await start_thread(start_appserver, workspace)
    await server.turn_start(thread_id, "run it")
    approval = await events.wait(COMMAND_APPROVAL)
    assert isinstance(approval, ServerRequest)

    # Stopped, the process cannot answer; the request is surely in flight when it is killed.
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    await all_threads_stopped(server.pid)
    in_flight = asyncio.create_task(server.thread_list())
    await asyncio.sleep(0.2)
    os.kill(server.pid, signal.SIGKILL)

    with pytest.raises(AppServerExited) as raised:
        await in_flight
    assert "killed by signal 9" in str(raised.value)
    exited = await events.wait_exited()
    assert exited.returncode == -signal.SIGKILL
    assert "killed by signal 9" in exited.message
    assert approval.state is RequestState.FAILED
    assert not await approval.respond({"decision": "accept"})
    with pytest.raises(AppServerExited):
        await server.thread_list()
    assert not server.running


async def test_untrusted_policy_is_accepted_by_thread_start(
    start_appserver: StartAppServer, workspace: Path,
) -> None:
    server, _events = await start_appserver()
    started = await server.thread_start(workspace, "untrusted", "workspace-write")
    assert started["approvalPolicy"] == "untrusted"


def test_notification_is_plain_data() -> None:
    n = Notification("turn/started", {"threadId": "t"}, 1)
    assert n.params["threadId"] == "t"
