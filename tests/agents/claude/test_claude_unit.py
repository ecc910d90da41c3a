"""The claude adapter's parts that need no model: finding the binary, the command line and
environment a policy gives Claude Code, diffs of file changes, and the process wrapper against a
scripted stand-in for Claude Code (bad lines, exits)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tether.agents.claude import (
    QUIET_ENV,
    ClaudeBinary,
    ClaudeError,
    ClaudeExited,
    ClaudeProcess,
    Exited,
    binary,
    stream,
)
from tether.agents.claude.adapter import claude_args, claude_env, claude_settings, file_diff, inside
from tether.agents.claude.shell import write_shell
from tether.agents.policy import AgentConfig, Approval, Policy, Sandbox
from tether.host.config import parse_config

# -- the binary --------------------------------------------------------------------------------


def test_a_missing_binary_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(ClaudeError) as raised:
        binary.find_claude(tmp_path / "claude")
    assert raised.value.code == "claude_missing" and "install-claude" in str(raised.value.hint)
    with pytest.raises(ClaudeError, match="not found on PATH"):
        binary.find_claude("no-such-claude-command")


def test_a_file_that_is_not_executable(tmp_path: Path) -> None:
    path = tmp_path / "claude"
    path.write_text("")
    with pytest.raises(ClaudeError, match="not executable"):
        binary.find_claude(path)


def test_the_npm_placeholder_without_its_native_binary(tmp_path: Path) -> None:
    placeholder = tmp_path / "node_modules" / "@anthropic-ai" / "claude-code" / "bin" / "claude.exe"
    placeholder.parent.mkdir(parents=True)
    placeholder.write_text("#!/bin/sh\necho 'the postinstall step did not run'\n")
    placeholder.chmod(0o755)
    with pytest.raises(ClaudeError, match="placeholder") as raised:
        binary.find_claude(placeholder)
    assert "--ignore-scripts" in str(raised.value.hint)


def test_a_native_program_that_is_not_claude(tmp_path: Path) -> None:
    with pytest.raises(ClaudeError) as raised:
        binary.find_claude("/bin/true")
    assert raised.value.code == "claude_broken"


def test_the_placeholder_resolves_to_the_native_binary_beside_it(tmp_path: Path, claude_binary: ClaudeBinary) -> None:
    scope = tmp_path / "node_modules" / "@anthropic-ai"
    placeholder = scope / "claude-code" / "bin" / "claude.exe"
    placeholder.parent.mkdir(parents=True)
    placeholder.write_text("#!/bin/sh\nexit 1\n")
    placeholder.chmod(0o755)
    package = binary._PLATFORMS[(os.uname().sysname, os.uname().machine)]
    (scope / package).mkdir()
    (scope / package / "claude").symlink_to(claude_binary.path)
    found = binary.find_claude(placeholder)
    assert found.path == scope / package / "claude" and found.version == claude_binary.version


def test_an_unsupported_version_is_refused(claude_binary: ClaudeBinary, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(binary, "SUPPORTED_VERSIONS", ("0.0.1",))
    with pytest.raises(ClaudeError) as raised:
        binary.find_claude(claude_binary.path)
    assert raised.value.code == "claude_unsupported" and claude_binary.version in raised.value.message
    assert binary.find_claude(claude_binary.path, check_version=False).version == claude_binary.version


# -- what a policy starts Claude Code with -----------------------------------------------------


def settings_of(args: list[str]) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(args[args.index("--settings") + 1])
    return value


@pytest.mark.parametrize("approval", list(Approval))
def test_every_command_and_file_change_asks_unless_never(approval: Approval, tmp_path: Path) -> None:
    args = claude_args(Policy(approval, Sandbox.WORKSPACE_WRITE), tmp_path)
    assert args[args.index("--permission-prompt-tool") + 1] == "stdio"
    assert args[args.index("--permission-mode") + 1] == "default"
    asks = settings_of(args)["permissions"].get("ask")
    # Agent always comes to tether (which runs sub-agents in the foreground).
    assert asks == (["Agent"] if approval is Approval.NEVER else ["Bash", "Edit", "Write", "WebFetch", "WebSearch",
                                                                  "Agent"])


@pytest.mark.parametrize(("approval", "sandbox", "web"), [
    (Approval.ON_REQUEST, Sandbox.WORKSPACE_WRITE, True),
    (Approval.UNTRUSTED, Sandbox.READ_ONLY, True),
    (Approval.NEVER, Sandbox.WORKSPACE_WRITE, False),  # nobody asked, and commands have no network
    (Approval.NEVER, Sandbox.READ_ONLY, False),
    (Approval.NEVER, Sandbox.FULL_ACCESS, True),
])
def test_the_web_tools_are_offered_only_when_asked_about_or_the_session_has_network(
    approval: Approval, sandbox: Sandbox, web: bool, tmp_path: Path,
) -> None:
    args = claude_args(Policy(approval, sandbox), tmp_path)
    tools = args[args.index("--tools") + 1].split(",")
    assert ({"WebFetch", "WebSearch"} <= set(tools)) is web
    assert not ({"WebFetch", "WebSearch"} & set(tools)) or web


def test_the_workspace_settings_and_mcp_servers_are_not_loaded(tmp_path: Path) -> None:
    args = claude_args(Policy(), tmp_path)
    assert args[args.index("--setting-sources") + 1] == "user"
    assert "--strict-mcp-config" in args and "--disable-slash-commands" in args
    # No skills or scheduling: they would act without an item tether can show.
    assert args[args.index("--tools") + 1] == ("Bash,Edit,Write,Read,Glob,Grep,TaskCreate,TaskUpdate,TaskList,"
                                               "TaskGet,AskUserQuestion,ExitPlanMode,WebFetch,WebSearch,Agent")


def test_mcp_servers_only_from_the_hosts_own_config(tmp_path: Path) -> None:
    args = claude_args(Policy(), tmp_path, mcp_config="~/tether-mcp.json")
    assert "--strict-mcp-config" in args  # a workspace's .mcp.json still adds nothing
    assert args[args.index("--mcp-config") + 1] == str(Path.home() / "tether-mcp.json")
    assert "--mcp-config" not in claude_args(Policy(), tmp_path)


def test_sandbox_modes(tmp_path: Path) -> None:
    home = tmp_path / "tether-home"
    full = claude_settings(Policy(sandbox=Sandbox.FULL_ACCESS), tmp_path, [home])
    assert "sandbox" not in full
    write = claude_settings(Policy(sandbox=Sandbox.WORKSPACE_WRITE), tmp_path, [home])
    assert write["sandbox"] == {
        "enabled": True, "failIfUnavailable": True, "autoAllowBashIfSandboxed": False,
        "allowUnsandboxedCommands": False, "filesystem": {"denyRead": [str(home)]},
    }
    assert f"Read(/{home}/**)" in write["permissions"]["deny"]
    read_only = claude_args(Policy(sandbox=Sandbox.READ_ONLY), tmp_path, hide=[home])
    assert settings_of(read_only)["sandbox"]["filesystem"]["denyWrite"] == [str(tmp_path)]
    assert read_only[read_only.index("--tools") + 1] == ("Bash,Read,Glob,Grep,TaskCreate,TaskUpdate,TaskList,"
                                                         "TaskGet,AskUserQuestion,ExitPlanMode,WebFetch,WebSearch,"
                                                         "Agent")
    assert read_only[read_only.index("--disallowedTools") + 1] == "Edit,Write"


def test_the_environment_is_quiet_and_names_the_config_dir() -> None:
    env = claude_env(AgentConfig("claude", options={"config_dir": "~/claude-cfg"}),
                     base={"PATH": "/bin", "CLAUDECODE": "1", "DISABLE_TELEMETRY": "0"})
    assert env["CLAUDE_CONFIG_DIR"] == os.path.expanduser("~/claude-cfg")
    assert "CLAUDECODE" not in env and env["PATH"] == "/bin"
    for key, value in QUIET_ENV.items():
        assert env[key] == value


def test_the_config_file_takes_a_claude_section(tmp_path: Path) -> None:
    config = parse_config('[agents.claude]\nbinary = "/opt/claude"\nconfig_dir = "/c"\napproval = "untrusted"\n',
                          tmp_path / "config.toml")
    agent = config.agent("claude")
    assert agent.options == {"binary": "/opt/claude", "config_dir": "/c"}
    assert agent.policy.approval is Approval.UNTRUSTED


# -- diffs -------------------------------------------------------------------------------------


def test_diffs_of_writes_and_edits(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    created = file_diff("Write", {"file_path": str(notes), "content": "a\nb\n"}, tmp_path)
    assert created.startswith(f"--- /dev/null\n+++ {notes}\n") and "+a\n+b\n" in created
    notes.write_text("a\nb\n")
    edited = file_diff("Edit", {"file_path": str(notes), "old_string": "b", "new_string": "c"}, tmp_path)
    assert "-b\n+c\n" in edited and " a\n" in edited
    replaced = file_diff("Write", {"file_path": "notes.txt", "content": "z"}, tmp_path)
    assert "-a\n-b\n+z\n" in replaced


def test_files_outside_the_workspace_are_never_read_for_a_diff(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("do not show me\n")
    diff = file_diff("Write", {"file_path": str(secret), "content": "new\n"}, workspace)
    assert "do not show me" not in diff and "+new\n" in diff
    (workspace / "link").symlink_to(secret)
    assert not inside(str(workspace / "link"), workspace)
    assert "do not show me" not in file_diff("Edit", {"file_path": str(workspace / "link"), "old_string": "x",
                                                      "new_string": "y"}, workspace)
    hidden = workspace / "home"
    hidden.mkdir()
    (hidden / "key").write_text("private\n")
    assert "private" not in file_diff("Write", {"file_path": str(hidden / "key"), "content": ""}, workspace, [hidden])


# -- the process, against a stand-in ------------------------------------------------------------

STAND_IN = textwrap.dedent('''
    import json, sys
    mode = sys.argv[1]
    def out(obj):
        sys.stdout.write(json.dumps(obj) + "\\n"); sys.stdout.flush()
    if mode == "refuse-start":
        sys.stderr.write("Error: sandbox required but unavailable: socat not installed\\n")
        sys.exit(1)
    import time
    turns = 0
    for raw in sys.stdin:
        msg = json.loads(raw)
        if mode == "stubborn" and msg["type"] == "user":
            # Ignores interrupts: the first turn ends late, after tether gave up on it.
            turns += 1
            if turns == 1:
                time.sleep(1.0)
            text = "late" if turns == 1 else "second"
            out({"type": "assistant", "message": {"id": f"m{turns}", "content": [{"type": "text", "text": text}]}})
            out({"type": "result", "subtype": "success", "is_error": False, "result": text})
            continue
        if msg["type"] == "control_request":
            out({"type": "control_response", "response": {"subtype": "success",
                 "request_id": msg["request_id"], "response": {}}})
        elif msg["type"] == "user":
            sys.stdout.write("this is not json\\n")
            sys.stdout.write("\\u00ff garbage {\\n")
            out({"type": "result", "subtype": "success", "is_error": False, "result": "ok"})
            if mode == "die-after-turn":
                sys.exit(7)
''')


async def start_stand_in(tmp_path: Path, mode: str) -> tuple[ClaudeProcess, asyncio.Queue[Any]]:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    events: asyncio.Queue[Any] = asyncio.Queue()
    process = await ClaudeProcess.start(
        ClaudeBinary(Path(sys.executable), "test"), [str(script), mode], cwd=tmp_path, env=dict(os.environ),
        handler=events.put_nowait,
    )
    return process, events


async def test_bad_lines_are_skipped_and_the_turn_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    process, events = await start_stand_in(tmp_path, "die-after-turn")
    try:
        await process.send(stream.user_message("hi"))
        result = await asyncio.wait_for(events.get(), 10)
        assert isinstance(result, stream.Result) and result.result == "ok"
        exited = await asyncio.wait_for(events.get(), 10)
        assert isinstance(exited, Exited) and exited.returncode == 7
        assert exited.message == "Claude Code exited with code 7 unexpectedly"
        with pytest.raises(ClaudeExited):
            await process.send(stream.user_message("again"))
    finally:
        await process.close()
    assert "cannot read: a stream-json line is not JSON" in caplog.text


async def test_a_cli_that_refuses_to_start_says_why(tmp_path: Path) -> None:
    with pytest.raises(ClaudeExited) as raised:
        await start_stand_in(tmp_path, "refuse-start")
    assert "exited with code 1" in raised.value.message
    assert "socat not installed" in str(raised.value.hint)


async def test_a_turn_given_up_on_does_not_leak_into_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tether.agents.claude import adapter as claude_adapter
    from tether.host.agent_session import AgentSession
    from tether.host.db import Database
    from tether.host.eventlog import EventLog
    from tether.protocol.events import EventType

    monkeypatch.setattr(claude_adapter.ClaudeAgent, "interrupt_grace", 0.3)
    db = await Database.open(tmp_path / "host.db")
    log = await EventLog.open(db)
    session = AgentSession(session_id="s_stale", workspace=tmp_path, policy=Policy(), config=AgentConfig("claude"),
                           log=log, agent_cls=claude_adapter.ClaudeAgent)
    agent = session.agent
    assert isinstance(agent, claude_adapter.ClaudeAgent)
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    agent.process = await ClaudeProcess.start(
        ClaudeBinary(Path(sys.executable), "test"), [str(script), "stubborn"], cwd=tmp_path, env=dict(os.environ),
        handler=agent._on_event,
    )

    async def turn_status(turn: str) -> dict[str, Any]:
        async with asyncio.timeout(10):
            while True:
                for event in await log.read(0, 1000):
                    if event.type == EventType.TURN_COMPLETED and event.data["turn"] == turn:
                        return event.data
                await asyncio.sleep(0.02)

    try:
        first = await session.send_input("one")
        await asyncio.sleep(0.1)
        await session.interrupt()
        assert (await turn_status(first.data["turn"]))["status"] == "interrupted"
        second = await session.send_input("two")
        assert (await turn_status(second.data["turn"]))["status"] == "completed"
        texts = [(e.data["turn"], e.data["text"]) for e in await log.read(0, 1000)
                 if e.type == EventType.ITEM_COMPLETED and e.data["kind"] == "agent_message"]
        assert texts == [(second.data["turn"], "second")]
    finally:
        await session.close()
        await log.close()
        await db.close()


def test_claude_keeps_only_its_own_secrets_and_its_commands_none(tmp_path: Path) -> None:
    host = {"PATH": os.environ["PATH"], "ANTHROPIC_API_KEY": "sk-ant-own-key-123", "GH_TOKEN": "ghp-host-123456",
            "AWS_SECRET_ACCESS_KEY": "aws-secret-123456"}
    env = claude_env(AgentConfig("claude"), base=host)
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-own-key-123" and "GH_TOKEN" not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env  # kept only when Claude Code is told to use Bedrock
    assert "AWS_SECRET_ACCESS_KEY" in claude_env(AgentConfig("claude"), base={**host, "CLAUDE_CODE_USE_BEDROCK": "1"})
    shell = write_shell(["ANTHROPIC_API_KEY", "NOT SET; rm -rf /"])
    try:
        assert stat.S_IMODE(shell.parent.stat().st_mode) == 0o700
        run = subprocess.run([shell, 'echo "a=$ANTHROPIC_API_KEY p=${PATH:+set}"'], env={**env, "SHELL": "/bin/sh"},
                             capture_output=True, text=True, timeout=10)
        assert run.stdout == "a= p=set\n", run.stderr
    finally:
        shutil.rmtree(shell.parent)
