"""The builtin adapter driven by the host's real AgentSession, event log and database, against
the scripted model server: what each kind of turn leaves in the log."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_openai import FakeOpenAI
from tether.agents.base import Decision
from tether.agents.builtin.adapter import BuiltinAgent
from tether.agents.policy import AgentConfig, Approval, Policy, Sandbox
from tether.agents.sandbox import available
from tether.agents.secrets import env_secrets
from tether.errors import TetherError
from tether.host import projection
from tether.host.agent_session import AgentSession
from tether.host.eventlog import Event, EventLog

KEY = "sk-adapter-SECRET-0123456789abcdef"
ENV_SECRET = "envsecret-9f8e7d6c5b4a"
needs_bwrap = pytest.mark.skipif(not available(), reason="bubblewrap unusable here")


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as srv:
        yield srv


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


class Harness:
    def __init__(self, log: EventLog, server: FakeOpenAI, workspace: Path) -> None:
        self.log = log
        self.server = server
        self.workspace = workspace
        self.sessions: list[AgentSession] = []

    async def open(
        self, approval: str = "on-request", sandbox: str = "workspace-write", hidden: Sequence[Path] = (),
        **options: Any
    ) -> AgentSession:
        opts = {"base_url": self.server.base_url, "model": "fake-model", "api_key": KEY, **options}
        policy = Policy(Approval(approval), Sandbox(sandbox))
        session = AgentSession(
            session_id=f"s_test{len(self.sessions)}", workspace=self.workspace, policy=policy,
            config=AgentConfig("builtin", policy, opts), log=self.log, agent_cls=BuiltinAgent, hidden=hidden,
        )
        await session.agent.open()
        await self.log.append(session.session_id, "session.started",
                              {"agent": "builtin", "workspace": str(self.workspace), "command": [], "title": "test",
                               "cols": 80, "rows": 24, "policy": policy.to_json()})
        self.sessions.append(session)
        return session

    async def events(self, session: AgentSession) -> list[Event]:
        return [e for e in await self.log.read(0, 100_000) if e.session == session.session_id]

    async def wait(self, session: AgentSession, pred: Callable[[Event], bool], timeout: float = 20) -> Event:
        async with asyncio.timeout(timeout):
            while True:
                for e in await self.events(session):
                    if pred(e):
                        return e
                await asyncio.sleep(0.02)

    async def turn(self, session: AgentSession, text: str,
                   answers: list[Decision] | None = None, timeout: float = 20) -> list[Event]:
        """Run one turn to its end, answering approvals from ``answers``; the turn's events."""
        started = await session.send_input(text)
        answers = list(answers or [])
        done_turns = len([e for e in await self.events(session) if e.type == "turn.completed"])
        async with asyncio.timeout(timeout):
            answered: set[str] = set()
            while True:
                evs = await self.events(session)
                for e in evs:
                    if e.type == "approval.requested" and e.seq > started.seq and e.data["approval"] not in answered:
                        answered.add(e.data["approval"])
                        decision = answers.pop(0) if answers else Decision.DENY
                        await session.approve(e.data["approval"], decision, {"id": "d_test", "name": "tester"})
                if len([e for e in evs if e.type == "turn.completed"]) > done_turns:
                    break
                await asyncio.sleep(0.02)
        return [e for e in await self.events(session) if e.seq >= started.seq]

    async def close(self) -> None:
        for s in self.sessions:
            await s.close()


@pytest.fixture
async def h(event_log: EventLog, server: FakeOpenAI, workspace: Path) -> AsyncIterator[Harness]:
    harness = Harness(event_log, server, workspace)
    yield harness
    await harness.close()


def call(name: str, args: Any, call_id: str = "c1") -> dict[str, Any]:
    return {"id": call_id, "name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}


def of(events: list[Event], type: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [e.data for e in events if e.type == type and (kind is None or e.data.get("kind") == kind)]


def turn_status(events: list[Event]) -> dict[str, Any]:
    [done] = of(events, "turn.completed")
    return done


# -- text ------------------------------------------------------------------------------------


async def test_a_text_answer_is_one_agent_message_item(h: Harness) -> None:
    h.server.add({"reasoning": "thinking hard", "chunks": ["Hel", "lo ", "there"]})
    session = await h.open()
    events = await h.turn(session, "say hello")
    assert turn_status(events) == {"turn": turn_status(events)["turn"], "status": "completed", "error": None}
    [started] = of(events, "item.started", "agent_message")
    [done] = of(events, "item.completed", "agent_message")
    assert done["item"] == started["item"] and done["text"] == "Hello there" and done["status"] == "completed"
    deltas = [d for d in of(events, "item.delta") if d["item"] == started["item"]]
    assert "".join(d["data"] for d in deltas) == "Hello there"
    assert all(set(d) == {"item", "stream", "data"} and d["stream"] == "text" for d in deltas)
    [reasoning] = of(events, "item.completed", "reasoning")
    assert reasoning["text"] == "thinking hard"
    # The system prompt names the workspace; the model's key went in the header only.
    sent = h.server.requests[0].json["messages"]
    assert sent[0]["role"] == "system" and str(h.workspace.resolve()) in sent[0]["content"]
    assert "tether" in sent[0]["content"]
    assert h.server.requests[0].headers["authorization"] == f"Bearer {KEY}"


async def test_the_conversation_goes_on_across_turns(h: Harness) -> None:
    h.server.add({"text": "first answer"}, {"text": "second answer"})
    session = await h.open()
    await h.turn(session, "one")
    events = await h.turn(session, "two")
    assert turn_status(events)["status"] == "completed"
    sent = h.server.requests[1].json["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[2]["content"] == "first answer" and sent[3]["content"] == "two"


# -- file changes --------------------------------------------------------------------------


async def test_an_approved_write_shows_the_diff_then_changes_the_file(h: Harness) -> None:
    h.server.add({"tool_calls": [call("write_file", {"path": "hello.txt", "content": "hi\n"})]}, {"text": "done"})
    session = await h.open()
    events = await h.turn(session, "write hello.txt", [Decision.APPROVE])
    diff = "--- /dev/null\n+++ b/hello.txt\n@@ -0,0 +1 @@\n+hi\n"
    [asked] = of(events, "approval.requested")
    assert asked["kind"] == "file_change" and asked["details"]["path"] == "hello.txt"
    assert asked["details"]["diff"] == diff
    assert asked["options"] == ["approve", "approve_for_session", "deny"]
    [started] = of(events, "item.started", "file_change")
    assert started["item"] == asked["item"] and started["path"] == "hello.txt" and started["diff"] == diff
    types = [e.type for e in events]
    assert types.index("item.started", types.index("turn.started") + 2) < types.index("approval.requested")
    [done] = of(events, "item.completed", "file_change")
    assert (done["status"], done["path"], done["diff"]) == ("completed", "hello.txt", diff)
    assert (h.workspace / "hello.txt").read_text() == "hi\n"
    assert turn_status(events)["status"] == "completed"
    changes = await h.log.db.run(lambda c: projection.file_changes(c, session.session_id), write=False)
    assert [(c["path"], c["diff"], c["status"]) for c in changes] == [("hello.txt", diff, "completed")]


async def test_a_denied_write_is_declined_and_the_model_is_told(h: Harness) -> None:
    h.server.add({"tool_calls": [call("write_file", {"path": "no.txt", "content": "x"})]}, {"text": "ok"})
    session = await h.open()
    events = await h.turn(session, "write", [Decision.DENY])
    [done] = of(events, "item.completed", "file_change")
    assert done["status"] == "declined" and done["path"] == "no.txt"
    assert not (h.workspace / "no.txt").exists()
    tool_msg = h.server.requests[1].json["messages"][-1]
    assert tool_msg["role"] == "tool" and "denied" in tool_msg["content"].lower()


async def test_approve_for_session_stops_asking_for_that_kind(h: Harness) -> None:
    h.server.add(
        {"tool_calls": [call("write_file", {"path": "a.txt", "content": "a"}, "c1")]}, {"text": "one"},
        {"tool_calls": [call("write_file", {"path": "b.txt", "content": "b"}, "c2")]}, {"text": "two"},
    )
    session = await h.open()
    first = await h.turn(session, "a", [Decision.APPROVE_FOR_SESSION])
    second = await h.turn(session, "b")
    assert len(of(first, "approval.requested")) == 1 and of(second, "approval.requested") == []
    assert (h.workspace / "b.txt").read_text() == "b"
    [started] = of(second, "item.started", "file_change")
    assert started["path"] == "b.txt" and "+b" in started["diff"]


async def test_read_only_refuses_a_write_without_asking(h: Harness) -> None:
    h.server.add({"tool_calls": [call("write_file", {"path": "x.txt", "content": "x"})]}, {"text": "ok"})
    session = await h.open(approval="untrusted", sandbox="read-only")
    events = await h.turn(session, "write")
    assert of(events, "approval.requested") == []
    [done] = of(events, "item.completed", "file_change")
    assert done["status"] == "failed" and "read-only" in done["error"]
    assert not (h.workspace / "x.txt").exists()
    assert "read-only" in h.server.requests[1].json["messages"][-1]["content"]


async def test_a_path_outside_the_workspace_is_refused(h: Harness) -> None:
    h.server.add({"tool_calls": [call("write_file", {"path": "../escape.txt", "content": "x"})]}, {"text": "ok"})
    session = await h.open(approval="never")
    events = await h.turn(session, "escape")
    [done] = of(events, "item.completed", "file_change")
    assert done["status"] == "failed" and "outside the workspace" in done["error"]
    assert not (h.workspace.parent / "escape.txt").exists()


# -- commands ------------------------------------------------------------------------------


@needs_bwrap
async def test_a_command_streams_its_output(h: Harness) -> None:
    h.server.add({"tool_calls": [call("run_command", {"command": "echo out-$((6*7)); exit 3"})]}, {"text": "ok"})
    session = await h.open()
    events = await h.turn(session, "run", [Decision.APPROVE])
    [started] = of(events, "item.started", "command")
    assert started["command"] == "echo out-$((6*7)); exit 3" and started["cwd"] == str(h.workspace.resolve())
    [asked] = of(events, "approval.requested")
    assert asked["item"] == started["item"] and asked["details"]["command"] == started["command"]
    assert asked["details"]["cwd"] == started["cwd"]
    output = "".join(d["data"] for d in of(events, "item.delta") if d["stream"] == "output")
    assert output == "out-42\n"
    [done] = of(events, "item.completed", "command")
    assert (done["exit_code"], done["output"], done["status"]) == (3, "out-42\n", "failed")


@needs_bwrap
async def test_secrets_never_reach_the_events_or_the_model(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TETHER_TEST_SECRET", ENV_SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-envkey-should-be-hidden-123")
    command = ('env; echo "key=$OPENAI_API_KEY"; echo "s=$TETHER_TEST_SECRET";'
               ' test -n "$TETHER_TEST_SECRET" && echo inherited')
    h.server.add({"tool_calls": [call("run_command", {"command": command})]},
                 {"text": f"I saw {KEY} and {ENV_SECRET}"})
    session = await h.open(approval="never")
    events = await h.turn(session, "show me")
    dumped = json.dumps([e.to_wire() for e in events])
    for secret in (KEY, ENV_SECRET, "sk-envkey-should-be-hidden-123"):
        assert secret not in dumped
        assert secret not in h.server.requests[1].body.decode()
    [done] = of(events, "item.completed", "command")
    # Commands get none of the host's secret variables (issue [6] item 4), not only redacted values.
    assert "inherited" not in done["output"] and "key=\n" in done["output"] and "s=\n" in done["output"]
    assert "TETHER_TEST_SECRET" not in done["output"] and "OPENAI_API_KEY" not in done["output"]


# -- failures ------------------------------------------------------------------------------


async def test_a_tool_call_with_invalid_json_is_an_error_item_and_the_turn_goes_on(h: Harness) -> None:
    h.server.add({"tool_calls": [call("write_file", '{"path": "a", "content": ')]}, {"text": "sorry"})
    session = await h.open()
    events = await h.turn(session, "go")
    [err] = of(events, "item.completed", "error")
    assert err["status"] == "failed" and "not valid JSON" in err["message"]
    assert turn_status(events)["status"] == "completed"
    assert of(events, "item.completed", "agent_message")[-1]["text"] == "sorry"


@pytest.mark.parametrize("reply", [
    {"garbage": ["this is not json"]},
    {"status": 500, "body": "upstream exploded"},
    {"cut": True, "text": "half"},
])
async def test_a_broken_model_server_fails_the_turn_clearly(h: Harness, reply: dict[str, Any]) -> None:
    h.server.add(reply, {"text": "recovered"})
    session = await h.open()
    events = await h.turn(session, "go")
    done = turn_status(events)
    assert done["status"] == "failed" and done["error"]
    [err] = of(events, "item.completed", "error")
    assert err["message"] == done["error"]
    # The session survives: the next turn works.
    events = await h.turn(session, "again")
    assert turn_status(events)["status"] == "completed"


async def test_a_huge_prompt_is_refused_without_being_sent(h: Harness) -> None:
    session = await h.open()
    events = await h.turn(session, "x" * (1024 * 1024))
    done = turn_status(events)
    assert done["status"] == "failed" and "over the limit" in done["error"]
    assert h.server.requests == []


async def test_an_interrupted_turn_closes_its_items_and_the_next_works(h: Harness) -> None:
    h.server.add({"tool_calls": [call("run_command", {"command": "sleep 30"})]}, {"text": "next"})
    session = await h.open(approval="never", sandbox="full-access")
    await session.send_input("sleep")
    await h.wait(session, lambda e: e.type == "item.started" and e.data.get("kind") == "command")
    await session.interrupt()
    done = await h.wait(session, lambda e: e.type == "turn.completed")
    assert done.data["status"] == "interrupted"
    events = await h.events(session)
    [cmd] = of(events, "item.completed", "command")
    assert cmd["status"] == "failed" and "interrupted" in cmd["error"]
    events = await h.turn(session, "go on")
    assert turn_status(events)["status"] == "completed"


async def test_an_approval_pending_at_interrupt_is_cleared(h: Harness) -> None:
    h.server.add({"tool_calls": [call("write_file", {"path": "w.txt", "content": "w"})]})
    session = await h.open()
    await session.send_input("write")
    asked = await h.wait(session, lambda e: e.type == "approval.requested")
    await session.interrupt()
    await h.wait(session, lambda e: e.type == "turn.completed")
    pending = await h.log.db.run(lambda c: projection.pending_approvals(c, session.session_id), write=False)
    assert pending == []
    with pytest.raises(TetherError) as exc:
        await session.approve(asked.data["approval"], Decision.APPROVE, {"id": "d", "name": "late"})
    assert exc.value.code == "approval_conflict"
    assert not (h.workspace / "w.txt").exists()


# -- opening ---------------------------------------------------------------------------------


async def test_open_refuses_without_a_model_or_a_server(h: Harness) -> None:
    with pytest.raises(TetherError) as exc:
        await h.open(model="")
    assert exc.value.code == "agent_config" and "model" in exc.value.message
    with pytest.raises(TetherError) as exc:
        await h.open(base_url="", api_key="")
    assert exc.value.code == "agent_config" and "base_url" in exc.value.message
    with pytest.raises(TetherError) as exc:
        await h.open(api_key="", api_key_env="TETHER_NO_SUCH_VARIABLE_SET")
    assert "TETHER_NO_SUCH_VARIABLE_SET" in exc.value.message


async def test_the_key_can_come_from_a_named_variable_or_openai_env(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_MODEL_KEY", "sk-from-named-variable-1")
    h.server.add({"text": "a"}, {"text": "b"})
    s1 = await h.open(api_key="", api_key_env="MY_MODEL_KEY")
    await h.turn(s1, "hi")
    assert h.server.requests[-1].headers["authorization"] == "Bearer sk-from-named-variable-1"
    monkeypatch.setenv("OPENAI_BASE_URL", h.server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-openai-env-2")
    s2 = await h.open(api_key="", base_url="")
    await h.turn(s2, "hi")
    assert h.server.requests[-1].headers["authorization"] == "Bearer sk-from-openai-env-2"


async def test_open_refuses_a_sandbox_it_cannot_enforce(h: Harness, tmp_path: Path) -> None:
    missing = tmp_path / "no-bwrap"
    policy = Policy(Approval.ON_REQUEST, Sandbox.WORKSPACE_WRITE)
    session = AgentSession(
        session_id="s_nobwrap", workspace=h.workspace, policy=policy,
        config=AgentConfig("builtin", policy, {"base_url": h.server.base_url, "model": "m"}),
        log=h.log, agent_cls=BuiltinAgent,
    )
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr("shutil.which", lambda name, *a, **k: None if name == "bwrap" else str(missing))
    try:
        with pytest.raises(TetherError) as exc:
            await session.agent.open()
    finally:
        monkeypatch.undo()
    assert exc.value.code == "sandbox_unavailable" and "bubblewrap" in exc.value.message


def test_env_secrets_picks_secret_names_only() -> None:
    env = {"GITHUB_TOKEN": "ghp_abcdefgh1234", "HOME": "/home/someone-long", "DB_PASSWORD": "hunter2hunter2",
           "SHORT_TOKEN": "abc", "SSH_AUTH_SOCK": "/tmp/ssh-agent.sock"}
    assert set(env_secrets(env)) == {"hunter2hunter2", "ghp_abcdefgh1234"}


@needs_bwrap
async def test_sandboxed_commands_cannot_read_the_tether_home(h: Harness) -> None:
    # Not under /tmp: the sandbox's private /tmp would hide it anyway and prove nothing.
    home = Path(tempfile.mkdtemp(prefix="tether-home-", dir="/var/tmp"))
    try:
        (home / "config.toml").write_text("visible = false\n")
        h.server.add({"tool_calls": [call("run_command", {"command": f"cat {home}/config.toml; echo done"})]},
                     {"text": "ok"})
        session = await h.open(approval="never", hidden=[home])
        events = await h.turn(session, "peek")
        [done] = of(events, "item.completed", "command")
        assert "visible" not in done["output"] and "done" in done["output"]
    finally:
        shutil.rmtree(home, ignore_errors=True)
