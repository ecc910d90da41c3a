"""Fixtures that run the real Claude Code CLI against the scripted model in tests/support/fake_anthropic.

The binary comes from ``scripts/install-claude`` (run by ``scripts/test``): its cache dir is
``$TETHER_CLAUDE_DIR`` or ``~/.cache/tether/claude-<version>``; ``$TETHER_CLAUDE_BIN`` overrides
it with any claude path. Tests that need it are skipped — saying how to install it — when it is
absent, and fail instead under CI.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent_session import SessionHarness
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.installed_cli import installed_cli
from tether.agents.base import Resumed
from tether.agents.claude import PINNED_VERSION, ClaudeBinary, ClaudeError, find_claude
from tether.agents.claude.adapter import ClaudeAgent
from tether.agents.policy import AgentConfig, Approval, Policy, Sandbox
from tether.host.agent_session import AgentSession
from tether.host.eventlog import EventLog

TIMEOUT = 40.0
UNTRUSTED = Policy(Approval.UNTRUSTED, Sandbox.WORKSPACE_WRITE)

# Read once, before any test gives Claude Code a HOME of its own (see ``claude_env``).
_DEFAULT_CACHE = Path.home() / ".cache" / "tether" / f"claude-{PINNED_VERSION}"


def claude_cache_dir() -> Path:
    return Path(os.environ.get("TETHER_CLAUDE_DIR") or _DEFAULT_CACHE)


def claude_command() -> Path:
    """The installed ``claude`` (npm's bin link), or skip / fail saying how to install it."""
    return installed_cli("Claude Code", PINNED_VERSION, claude_cache_dir(), "claude", "TETHER_CLAUDE_BIN")


@pytest.fixture(scope="session")
def claude_binary() -> ClaudeBinary:
    try:
        return find_claude(claude_command())
    except ClaudeError as exc:
        pytest.fail(f"Claude Code is installed but unusable: {exc}")


@pytest.fixture
async def fake_model() -> AsyncIterator[FakeAnthropic]:
    server = FakeAnthropic()
    await server.start()
    yield server
    await server.close()
    # Nothing may leave loopback: every request Claude Code made elsewhere came here as a proxy request.
    assert server.escaped == [], f"Claude Code tried to reach the outside: {server.escaped}"


def shell_home(under: Path) -> dict[str, str]:
    """An empty HOME for Claude Code: its Bash tool runs the user's shell profile, and this
    machine's (pyenv's init) prints to stderr inside the sandbox, where it cannot rehash."""
    home = under / "user-home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home)}


@pytest.fixture
def claude_env(fake_model: FakeAnthropic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point every Claude Code the test starts (through os.environ) at the fake model and an empty
    config dir; the adapter passes the host's environment on."""
    config_dir = tmp_path / "claude-config"
    config_dir.mkdir()
    env = {**fake_model.env(), "CLAUDE_CONFIG_DIR": str(config_dir), **shell_home(tmp_path)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # The host's real credentials must not be what the tests use.
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    return env


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path.resolve()


@pytest.fixture
def tether_home(tmp_path: Path) -> Path:
    home = tmp_path / "tether-home"
    home.mkdir()
    (home / "host.key").write_text("the host's private key\n")
    return home


class Harness(SessionHarness):
    def __init__(self, log: EventLog, binary: ClaudeBinary, workspace: Path, hidden: Path) -> None:
        super().__init__(log, ClaudeAgent, workspace, timeout=TIMEOUT, hidden=[hidden])
        self.binary = binary

    async def start(
        self, prompt: str, *, policy: Policy = UNTRUSTED, resumed: Resumed | None = None, **options: Any,
    ) -> AgentSession:
        return await self.open(prompt, policy, AgentConfig("claude", options={"binary": str(self.binary.path),
                                                                              **options}), resumed)


@pytest.fixture
async def harness(
    event_log: EventLog, claude_binary: ClaudeBinary, workspace: Path, claude_env: dict[str, str], tether_home: Path,
) -> AsyncIterator[Harness]:
    h = Harness(event_log, claude_binary, workspace, tether_home)
    yield h
    await h.close()
