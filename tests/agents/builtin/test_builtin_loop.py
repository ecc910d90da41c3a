import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_openai import FakeOpenAI
from tether.agents.approvals import ApprovalKind, ApprovalMemory
from tether.agents.builtin.llm import ChatClient
from tether.agents.builtin.loop import (
    Decision,
    LoopConfig,
    Redactor,
    TurnResult,
    run_turn,
)
from tether.agents.builtin.tools import ToolRunner
from tether.agents.sandbox import Sandbox, available

# The test's own interpreter may live under /tmp (hidden by the sandbox's private /tmp):
# commands inside the sandbox use the system's.
SANDBOX_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

KEY = "sk-loop-SECRET-abcdef0123456789"
needs_bwrap = pytest.mark.skipif(not available(), reason="bubblewrap unusable here")


class Recorder:
    """Hooks that record everything and answer approvals from a list."""

    def __init__(self, answers: list[Decision] | None = None) -> None:
        self.answers = list(answers or [])
        self.events: list[tuple[str, Any]] = []
        self.approvals: list[tuple[ApprovalKind, dict[str, Any]]] = []

    def on_text_delta(self, text: str) -> None:
        self.events.append(("text", text))

    def on_reasoning_delta(self, text: str) -> None:
        self.events.append(("reasoning", text))

    async def request_approval(self, kind: ApprovalKind, details: dict[str, Any]) -> Decision:
        self.approvals.append((kind, details))
        self.events.append(("approval", {"kind": kind, **details}))
        return self.answers.pop(0) if self.answers else "deny"

    def on_tool_started(self, call_id: str, name: str, args: dict[str, Any]) -> None:
        self.events.append(("started", {"call_id": call_id, "name": name, "args": args}))

    def on_command_output(self, call_id: str, chunk: str) -> None:
        self.events.append(("output", {"call_id": call_id, "chunk": chunk}))

    def on_tool_finished(self, call_id: str, result: dict[str, Any]) -> None:
        self.events.append(("finished", {"call_id": call_id, **result}))

    def on_error(self, message: str) -> None:
        self.events.append(("error", message))

    def of(self, kind: str) -> list[Any]:
        return [payload for k, payload in self.events if k == kind]

    @property
    def text(self) -> str:
        return "".join(self.of("text"))

    def dump(self) -> str:
        return json.dumps(self.events)


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as srv:
        yield srv


def call(name: str, args: Any, call_id: str = "c1") -> dict[str, Any]:
    return {"id": call_id, "name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}


async def turn(
    server: FakeOpenAI, ws: Path, hooks: Recorder, *, mode: str = "workspace-write", policy: str = "on-request",
    prompt: str = "do it", memory: ApprovalMemory | None = None, messages: list[dict[str, Any]] | None = None,
    **config: Any,
) -> tuple[TurnResult, list[dict[str, Any]]]:
    client = ChatClient(server.base_url, KEY, "fake", 10.0)
    tools = ToolRunner(Sandbox(mode, ws), secrets=client.secrets)  # type: ignore[arg-type]
    messages = messages if messages is not None else []
    messages.append({"role": "user", "content": prompt})
    async with client:
        result = await run_turn(client, messages, tools, hooks, memory=memory,
                                config=LoopConfig(policy=policy, **config))  # type: ignore[arg-type]
    assert KEY not in hooks.dump()
    assert KEY not in json.dumps(messages)
    return result, messages


def tool_messages(server: FakeOpenAI, request: int) -> list[dict[str, Any]]:
    return [m for m in server.requests[request].json["messages"] if m["role"] == "tool"]


async def test_approved_write_creates_the_file_with_a_diff(server: FakeOpenAI, tmp_path: Path) -> None:
    server.add(
        {"text": "Writing.", "tool_calls": [call("write_file", {"path": "hello.txt", "content": "hi\n"})]},
        {"chunks": ["Do", "ne."]},
    )
    hooks = Recorder(["approve"])
    result, messages = await turn(server, tmp_path, hooks)
    assert result.status == "completed" and result.text == "Done." and result.steps == 2
    assert (tmp_path / "hello.txt").read_text() == "hi\n"
    [(kind, details)] = hooks.approvals
    assert kind == "file_change" and details["path"] == "hello.txt" and details["kind"] == "create"
    assert "+hi" in details["diff"] and details["call_id"] == "c1"
    [finished] = hooks.of("finished")
    assert finished["ok"] and finished["diff"] == details["diff"] and finished["path"] == "hello.txt"
    assert [k for k, _ in hooks.events] == ["text", "started", "approval", "finished", "text", "text"]
    # The conversation is ready for the next turn.
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[1]["tool_calls"][0]["function"]["name"] == "write_file"
    [tool_msg] = tool_messages(server, 1)
    assert tool_msg["tool_call_id"] == "c1" and "created hello.txt" in tool_msg["content"]


async def test_denied_write_leaves_no_file_and_tells_the_model(server: FakeOpenAI, tmp_path: Path) -> None:
    server.add({"tool_calls": [call("write_file", {"path": "hello.txt", "content": "hi\n"})]}, {"text": "OK."})
    hooks = Recorder(["deny"])
    result, _ = await turn(server, tmp_path, hooks)
    assert result.status == "completed"
    assert not (tmp_path / "hello.txt").exists()
    [finished] = hooks.of("finished")
    assert finished["denied"] and not finished["ok"] and "denied" in finished["error"]
    assert tool_messages(server, 1)[0]["content"].startswith("Denied: the user denied this file change")


async def test_read_only_refuses_the_write_even_when_approved(server: FakeOpenAI, tmp_path: Path) -> None:
    server.add({"tool_calls": [call("write_file", {"path": "hello.txt", "content": "hi\n"})]}, {"text": "OK."})
    hooks = Recorder(["approve"])
    result, _ = await turn(server, tmp_path, hooks, mode="read-only", policy="never")
    assert result.status == "completed"
    assert not (tmp_path / "hello.txt").exists()
    [finished] = hooks.of("finished")
    assert not finished["ok"] and "read-only" in finished["error"]
    assert "read-only" in tool_messages(server, 1)[0]["content"]


@needs_bwrap
async def test_read_only_command_fails_inside_bwrap(server: FakeOpenAI, tmp_path: Path) -> None:
    server.add({"tool_calls": [call("run_command", {"command": "touch file"})]}, {"text": "Could not."})
    hooks = Recorder(["approve"])
    result, _ = await turn(server, tmp_path, hooks, mode="read-only")
    assert result.status == "completed"
    assert not (tmp_path / "file").exists()
    [(kind, details)] = hooks.approvals
    assert kind == "command" and details["command"] == "touch file" and details["sandbox"] == "read-only"
    [finished] = hooks.of("finished")
    assert finished["exit_code"] != 0 and "Read-only file system" in finished["output"]
    assert "Read-only file system" in "".join(o["chunk"] for o in hooks.of("output"))


@pytest.mark.parametrize("path", ["../escape.txt", "/etc/tether-escape", "link/escape.txt"])
async def test_path_outside_the_workspace_is_refused(server: FakeOpenAI, tmp_path: Path, path: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "link").symlink_to(tmp_path)
    server.add({"tool_calls": [call("write_file", {"path": path, "content": "x"})]}, {"text": "OK."})
    hooks = Recorder(["approve"])
    result, _ = await turn(server, ws, hooks, mode="full-access")
    assert result.status == "completed"
    assert hooks.approvals == []  # refused before anyone is asked
    [finished] = hooks.of("finished")
    assert "outside the workspace" in finished["error"]
    assert not (tmp_path / "escape.txt").exists() and not os.path.exists("/etc/tether-escape")


async def test_invalid_tool_json_is_a_tool_error_and_the_loop_goes_on(server: FakeOpenAI, tmp_path: Path) -> None:
    server.add(
        {"tool_calls": [call("write_file", '{"path": "a.txt", "content": '), call("nope", "{}", "c2")]},
        {"tool_calls": [call("list_dir", {"path": "."}, "c3")]},
        {"text": "Fixed."},
    )
    hooks = Recorder()
    result, _ = await turn(server, tmp_path, hooks)
    assert result.status == "completed" and result.text == "Fixed."
    started = hooks.of("started")
    assert started[0]["args"] == {"raw": '{"path": "a.txt", "content": '}
    finished = hooks.of("finished")
    assert "not valid JSON" in finished[0]["error"] and "unknown tool 'nope'" in finished[1]["error"]
    assert finished[2]["ok"]
    told = tool_messages(server, 1)
    assert [m["tool_call_id"] for m in told] == ["c1", "c2"]
    assert told[0]["content"].startswith("Error: the arguments of write_file are not valid JSON")


@pytest.mark.parametrize("reply,expected", [
    ({"garbage": ["<<<garbage>>>"]}, "not JSON"),
    ({"status": 500, "body": "internal"}, "HTTP 500"),
    ({"chunks": ["par", "tial"], "cut": True}, "broke off"),
])
async def test_bad_model_server_fails_the_turn(server: FakeOpenAI, tmp_path: Path, reply: Any, expected: str) -> None:
    server.add(reply)
    hooks = Recorder()
    result, _ = await turn(server, tmp_path, hooks)
    assert result.status == "failed" and result.error and expected in result.error
    assert hooks.of("error") == [result.error]
    # And the next turn works.
    server.add({"text": "back"})
    again, _ = await turn(server, tmp_path, Recorder())
    assert again.status == "completed" and again.text == "back"


async def test_huge_prompt_is_refused_and_not_sent(server: FakeOpenAI, tmp_path: Path) -> None:
    hooks = Recorder()
    result, messages = await turn(server, tmp_path, hooks, prompt="x" * (1024 * 1024))
    assert result.status == "failed" and "over the limit of 262144 bytes" in (result.error or "")
    assert hooks.of("error") == [result.error]
    assert server.requests == [] and messages == []


async def test_huge_prompt_is_sent_when_the_limit_allows(server: FakeOpenAI, tmp_path: Path) -> None:
    server.add({"text": "that was long"})
    result, _ = await turn(server, tmp_path, Recorder(), prompt="x" * (1024 * 1024), max_prompt_bytes=2 * 1024 * 1024)
    assert result.status == "completed"
    assert len(server.requests[0].body) > 1024 * 1024


async def test_on_request_approve_for_session_covers_the_kind(server: FakeOpenAI, tmp_path: Path) -> None:
    server.add(
        {"tool_calls": [call("run_command", {"command": "echo one"}, "c1"),
                        call("run_command", {"command": "echo two"}, "c2"),
                        call("write_file", {"path": "a", "content": "a"}, "c3"),
                        call("read_file", {"path": "a"}, "c4")]},
        {"text": "done"},
    )
    hooks = Recorder(["approve_for_session", "approve"])
    memory = ApprovalMemory()
    await turn(server, tmp_path, hooks, mode="full-access", memory=memory)
    assert [k for k, _ in hooks.approvals] == ["command", "file_change"]  # echo two, read_file: not asked
    assert all(f["ok"] for f in hooks.of("finished"))
    # The memory outlives the turn.
    server.add({"tool_calls": [call("run_command", {"command": "echo three"})]}, {"text": "done"})
    hooks2 = Recorder()
    await turn(server, tmp_path, hooks2, mode="full-access", memory=memory)
    assert hooks2.approvals == [] and hooks2.of("finished")[0]["exit_code"] == 0


async def test_untrusted_remembers_only_the_exact_command(server: FakeOpenAI, tmp_path: Path) -> None:
    server.add(
        {"tool_calls": [call("run_command", {"command": "echo one"}, "c1"),
                        call("run_command", {"command": "echo one"}, "c2"),
                        call("run_command", {"command": "echo two"}, "c3")]},
        {"text": "done"},
    )
    hooks = Recorder(["approve_for_session", "deny"])
    await turn(server, tmp_path, hooks, mode="full-access", policy="untrusted")
    assert [d["command"] for _, d in hooks.approvals] == ["echo one", "echo two"]
    assert [f["ok"] for f in hooks.of("finished")] == [True, True, False]


async def test_never_asks_nothing(server: FakeOpenAI, tmp_path: Path) -> None:
    server.add(
        {"tool_calls": [call("run_command", {"command": "echo hi > b"}, "c1"),
                        call("edit_file", {"path": "b", "old": "hi", "new": "ho"}, "c2")]},
        {"text": "done"},
    )
    hooks = Recorder()
    await turn(server, tmp_path, hooks, mode="full-access", policy="never")
    assert hooks.approvals == []
    assert (tmp_path / "b").read_text() == "ho\n"
    assert "-hi" in hooks.of("finished")[1]["diff"]


async def test_a_weird_approval_answer_is_a_deny(server: FakeOpenAI, tmp_path: Path) -> None:
    server.add({"tool_calls": [call("write_file", {"path": "a", "content": "a"})]}, {"text": "ok"})
    await turn(server, tmp_path, Recorder(["yes please"]), mode="full-access")  # type: ignore[list-item]
    assert not (tmp_path / "a").exists()


async def test_max_steps(server: FakeOpenAI, tmp_path: Path) -> None:
    for i in range(3):
        server.add({"tool_calls": [call("list_dir", {"path": "."}, f"c{i}")]})
    hooks = Recorder()
    result, messages = await turn(server, tmp_path, hooks, max_steps=3)
    assert result.status == "max_steps" and "stopped after 3 model calls" in (result.error or "")
    assert len(server.requests) == 3 and messages[-1]["role"] == "tool"


async def test_api_key_never_reaches_hooks_model_or_logs(
    server: FakeOpenAI, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    (tmp_path / "leak.txt").write_text(f"key={KEY}\n")
    half = len(KEY) // 2
    server.add(
        {"reasoning": f"the key is {KEY}",
         "tool_calls": [call("run_command", {"command": f"echo $OPENAI_API_KEY; cat leak.txt; echo {KEY}"}, "c1"),
                        call("read_file", {"path": "leak.txt"}, "c2")]},
        # The model "says" the key split across chunks.
        {"chunks": ["it is ", KEY[:half], KEY[half:], " ok"]},
        {"status": 401, "body": f"bad key {KEY}"},
    )
    hooks = Recorder()
    result, _ = await turn(server, tmp_path, hooks, mode="full-access", policy="never")
    assert result.status == "completed"
    assert hooks.text == "it is [redacted] ok"
    assert "[redacted]" in hooks.of("finished")[0]["output"]
    second, _ = await turn(server, tmp_path, hooks, mode="full-access", policy="never")
    assert second.status == "failed" and KEY not in (second.error or "") and "[redacted]" in (second.error or "")
    for i, req in enumerate(server.requests):
        assert KEY not in req.body.decode(), f"request {i} carried the key in its body"
        assert req.headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in caplog.text


@pytest.mark.parametrize("mode", ["full-access", pytest.param("workspace-write", marks=needs_bwrap)])
async def test_interrupt_kills_the_command_and_keeps_the_conversation_valid(
    server: FakeOpenAI, tmp_path: Path, mode: str
) -> None:
    marker = f"tether-interrupt-{os.getpid()}-{mode}"
    command = f"echo started; {SANDBOX_PYTHON} -c 'import time; time.sleep(60)' {marker}"
    server.add({"tool_calls": [call("run_command", {"command": command}, "c1"), call("list_dir", {"path": "."}, "c2")]})
    hooks = Recorder()
    messages: list[dict[str, Any]] = []
    task = asyncio.create_task(turn(server, tmp_path, hooks, mode=mode, policy="never", messages=messages))
    for _ in range(200):
        if hooks.of("output"):
            break
        await asyncio.sleep(0.05)
    assert hooks.of("output")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [finished] = hooks.of("finished")
    assert finished["call_id"] == "c1" and finished["error"] == "interrupted by the user"
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
    assert [m["tool_call_id"] for m in messages[2:]] == ["c1", "c2"]
    for _ in range(100):
        if not any(marker.encode() in _cmdline(p) for p in _pids()):
            break
        await asyncio.sleep(0.05)
    assert not any(marker.encode() in _cmdline(p) for p in _pids())


async def test_interrupt_while_the_model_streams(server: FakeOpenAI, tmp_path: Path) -> None:
    server.add({"hang": True})
    hooks = Recorder()
    task = asyncio.create_task(turn(server, tmp_path, hooks))
    while not server.requests:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hooks.of("error") == []


async def test_what_the_redactor_held_back_is_shown_when_the_stream_is_cut(server: FakeOpenAI, tmp_path: Path) -> None:
    server.add({"chunks": ["the key starts ", KEY[:6]], "cut": True})
    hooks = Recorder()
    result, _ = await turn(server, tmp_path, hooks)
    assert result.status == "failed" and hooks.text == f"the key starts {KEY[:6]}"


async def test_what_the_redactor_held_back_is_shown_when_a_command_is_interrupted(
    server: FakeOpenAI, tmp_path: Path,
) -> None:
    server.add({"tool_calls": [call("run_command", {"command": f"printf 'out {KEY[:6]}'; sleep 60"})]})
    hooks = Recorder()
    task = asyncio.create_task(turn(server, tmp_path, hooks, mode="full-access", policy="never"))
    for _ in range(200):
        if hooks.of("output"):
            break
        await asyncio.sleep(0.05)
    assert [o["chunk"] for o in hooks.of("output")] == ["out "]  # the start of the key waits
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "".join(o["chunk"] for o in hooks.of("output")) == f"out {KEY[:6]}"


def test_stream_redactor_across_chunks() -> None:
    r = Redactor(["SECRET"])
    s = r.stream()
    out = [s.feed(c) for c in ["a S", "EC", "R", "ET b SE", "CRE", "x"]] + [s.flush()]
    assert "".join(out) == "a [redacted] b SECREx"
    assert out[1] == ""  # "SEC" held back
    assert r.value({"a": ["SECRET", 1]}) == {"a": ["[redacted]", 1]}


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _cmdline(pid: int) -> bytes:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return b""
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
