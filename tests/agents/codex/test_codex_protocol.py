"""The app-server client against a fake app-server: framing, errors, server requests, the
method allowlist, overload retries and exit handling."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tether.agents.codex import (
    ALLOWED_METHODS,
    COMMAND_APPROVAL,
    METHOD_SCOPES,
    AppServer,
    AppServerExited,
    CodexBinary,
    Exited,
    MethodNotAllowed,
    Notification,
    RefusedRequest,
    RequestState,
    RpcError,
    ServerRequest,
    check_allowed,
)
from tether.protocol.scopes import Scope

FAKE = Path(__file__).with_name("fake_appserver.py")

# What app-server offers (0.169.0) that no remote party may ever reach through tether.
DANGEROUS = [
    "fs/readFile", "fs/writeFile", "fs/remove", "fs/readDirectory", "fs/copy", "fs/watch",
    "command/exec", "command/exec/write", "thread/shellCommand",
    "config/read", "config/value/write", "config/batchWrite", "modelProvider/config/write",
    "skills/config/write", "account/read", "account/login/start", "account/logout",
    "account/rateLimits/read", "remoteControl/enable", "remoteControl/disable",
    "remoteControl/pairing/start", "process/spawn", "mcpServer/tool/call", "plugin/install",
    "marketplace/add", "externalAgentConfig/import", "thread/delete", "feedback/upload",
    "initialize", "initialized", "windowsSandbox/setupStart", "environment/add",
]


@pytest.mark.parametrize("method", DANGEROUS)
def test_dangerous_methods_are_refused(method: str) -> None:
    assert method not in ALLOWED_METHODS
    with pytest.raises(MethodNotAllowed, match="not available through tether"):
        check_allowed(method, {})


@pytest.mark.parametrize("param", ["config", "path", "history", "dynamicTools"])
def test_parameters_that_widen_power_are_refused(param: str) -> None:
    with pytest.raises(MethodNotAllowed, match=param):
        check_allowed("thread/resume", {"threadId": "t", param: {}})


def test_every_allowed_method_has_a_remote_scope() -> None:
    assert set(METHOD_SCOPES) == ALLOWED_METHODS
    assert {Scope(s) for s in METHOD_SCOPES.values()} <= {Scope.READ, Scope.PROMPT}
    for method in ("thread/start", "thread/resume", "thread/list", "thread/read", "turn/start",
                   "turn/interrupt", "model/list"):
        check_allowed(method, {})


Start = Callable[..., Awaitable[AppServer]]


@pytest.fixture
async def start_fake(tmp_path: Path) -> AsyncIterator[Start]:
    script = tmp_path / "codex"
    script.write_text(f"#!{sys.executable}\nimport runpy\nrunpy.run_path({str(FAKE)!r}, run_name='__main__')\n")
    script.chmod(0o755)
    binary = CodexBinary(path=script, version="0.169.0")
    started: list[AppServer] = []

    async def start(**env: str) -> AppServer:
        server = await AppServer.start(
            binary, codex_home=tmp_path / "home", cwd=tmp_path,
            env={"FAKE_APPSERVER_LOG": str(tmp_path / "wire.log"), **env},
        )
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close()


def wire(tmp_path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (tmp_path / "wire.log").read_text().splitlines()]


async def next_event(server: AppServer) -> Notification | ServerRequest | Exited:
    return await asyncio.wait_for(server.events.get(), 10)


async def test_handshake_and_framing(start_fake: Start, tmp_path: Path) -> None:
    server = await start_fake()
    assert server.info["userAgent"].startswith("tether/")
    event = await next_event(server)
    assert isinstance(event, Notification)
    assert event.method == "remoteControl/status/changed"
    assert event.emitted_at_ms == 5
    sent = wire(tmp_path)
    assert sent[0]["method"] == "initialize"
    assert sent[0]["params"]["clientInfo"]["name"] == "tether"  # type: ignore[index]
    assert sent[1] == {"method": "initialized"}
    assert all("jsonrpc" not in m for m in sent)


async def test_refused_method_never_reaches_the_process(start_fake: Start, tmp_path: Path) -> None:
    server = await start_fake()
    with pytest.raises(MethodNotAllowed):
        await server.request("fs/readFile", {"path": "/etc/passwd"})
    with pytest.raises(MethodNotAllowed):
        await server.request("thread/start", {"config": {"mcp_servers": {}}})
    await server.thread_list()
    assert [m.get("method") for m in wire(tmp_path)] == ["initialize", "initialized", "thread/list"]


async def test_rpc_error_is_typed(start_fake: Start) -> None:
    server = await start_fake()
    with pytest.raises(RpcError) as raised:
        await server.request("thread/name/set", {"threadId": "x", "name": "n"})
    assert raised.value.rpc_code == -32600
    assert raised.value.rpc_message == "thread not found"
    assert "thread/name/set" in str(raised.value)


async def test_overload_is_retried_with_backoff(start_fake: Start, tmp_path: Path) -> None:
    server = await start_fake(FAKE_OVERLOAD="3")
    assert await server.thread_list() == {"data": [], "nextCursor": None}
    assert [m.get("method") for m in wire(tmp_path)].count("thread/list") == 4


async def test_overload_gives_up(start_fake: Start) -> None:
    server = await start_fake(FAKE_OVERLOAD="100")
    with pytest.raises(RpcError) as raised:
        await server.thread_list()
    assert raised.value.rpc_code == -32001


async def test_server_requests_answered_later_and_unknown_ones_refused(start_fake: Start) -> None:
    server = await start_fake()
    turn = await server.turn_start("thread-1", "hi")
    assert turn["id"] == "turn-1"
    events = [await next_event(server) for _ in range(5)]
    requests = [e for e in events if isinstance(e, ServerRequest)]
    assert len(requests) == 1  # neither the clock nor the attestation is handed on to be answered:
    clock = next(e for e in events if isinstance(e, Notification) and e.method == "test/clock")
    assert abs(clock.params["answer"]["result"]["currentTimeAt"] - time.time()) < 60  # the host's time,
    attest = next(e for e in events if isinstance(e, Notification) and e.method == "test/attest")
    assert attest.params["answer"]["error"]["code"] == -32601  # an unknown request is refused at once,
    assert [e.method for e in events if isinstance(e, RefusedRequest)] == ["attestation/generate"]  # and said
    approval = requests[0]
    assert approval.method == COMMAND_APPROVAL and approval.is_approval
    assert approval.thread_id == "thread-1" and approval.item_id == "call-1"
    assert server.pending_server_requests == [approval]

    await asyncio.sleep(0.1)  # a person thinking
    assert await approval.respond({"decision": "accept"})
    answered = await next_event(server)
    assert isinstance(answered, Notification)
    assert answered.params["answer"] == {"id": 0, "result": {"decision": "accept"}}
    assert approval.state is RequestState.ANSWERED
    assert await approval.wait_closed() is RequestState.ANSWERED
    assert not await approval.reject("too late")
    assert server.pending_server_requests == []


async def test_resolved_by_codex_clears_the_request(start_fake: Start, tmp_path: Path) -> None:
    server = await start_fake()
    await server.turn_start("thread-1", "hi")
    approval = None
    while approval is None:
        event = await next_event(server)
        if isinstance(event, ServerRequest):
            approval = event
    await server.turn_interrupt("thread-1", "turn-1")
    resolved = await next_event(server)
    while not (isinstance(resolved, Notification) and resolved.method == "serverRequest/resolved"):
        resolved = await next_event(server)
    assert approval.state is RequestState.RESOLVED
    assert not await approval.respond({"decision": "accept"})
    await asyncio.sleep(0.1)
    assert not any(m.get("id") == 0 and "result" in m for m in wire(tmp_path))


async def test_handler_receives_events_in_order(start_fake: Start, tmp_path: Path) -> None:
    binary = CodexBinary(path=tmp_path / "codex", version="0.169.0")
    await start_fake()  # writes the launcher script
    seen: list[str] = []

    async def handler(event: Notification | ServerRequest | Exited) -> None:
        seen.append(event.method if not isinstance(event, Exited) else "<exited>")
        if isinstance(event, ServerRequest):
            await event.respond({"decision": "decline"})

    server = await AppServer.start(binary, cwd=tmp_path, handler=handler)
    await server.turn_start("t", "hi")
    for _ in range(100):
        if "test/answered" in seen:
            break
        await asyncio.sleep(0.02)
    await server.close()
    assert seen[0] == "remoteControl/status/changed"
    assert seen.index(COMMAND_APPROVAL) < seen.index("test/answered")
    assert seen[-1] == "<exited>"


async def test_process_exit_fails_pending_work(start_fake: Start) -> None:
    server = await start_fake()
    await server.turn_start("thread-1", "hi")
    approval = None
    while approval is None:
        event = await next_event(server)
        if isinstance(event, ServerRequest):
            approval = event
    with pytest.raises(AppServerExited) as raised:
        await server.thread_read("die")
    assert raised.value.returncode == 3
    assert "exited with code 3" in raised.value.message
    assert raised.value.hint is not None and "boom" in raised.value.hint
    assert approval.state is RequestState.FAILED
    exited = None
    while exited is None:
        event = await next_event(server)
        if isinstance(event, Exited):
            exited = event
    assert exited.returncode == 3
    assert any("boom" in line for line in exited.stderr_tail)
    with pytest.raises(AppServerExited):
        await server.thread_list()


async def test_close_reports_a_stop_not_a_crash(start_fake: Start) -> None:
    server = await start_fake()
    await server.close()
    exited = None
    while exited is None:
        event = await next_event(server)
        if isinstance(event, Exited):
            exited = event
    assert exited.message == "codex app-server was stopped"
    assert not server.running
    await server.close()  # twice is fine


async def test_policy_values_are_checked(start_fake: Start, tmp_path: Path) -> None:
    server = await start_fake()
    with pytest.raises(Exception, match="unknown approval policy"):
        await server.thread_start(tmp_path, "sometimes", "workspace-write")
    with pytest.raises(Exception, match="unknown sandbox mode"):
        await server.thread_start(tmp_path, "on-request", "full-access")
