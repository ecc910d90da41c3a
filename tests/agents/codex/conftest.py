"""Fixtures that run the real Codex CLI against the scripted model in tests/support/fake_responses.

The Codex binary comes from ``scripts/install-codex`` (run by ``scripts/test``): its cache dir is
``$TETHER_CODEX_DIR`` or ``~/.cache/tether/codex-<version>``; ``$TETHER_CODEX_BIN`` overrides it
with any codex path. Tests that need it are skipped — saying how to install it — when it is absent.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent_session import SessionHarness
from tests.support.fake_responses import FakeResponses
from tether.agents.codex import (
    PINNED_VERSION,
    AppServer,
    CodexBinary,
    CodexError,
    Event,
    Exited,
    Notification,
    ServerRequest,
    find_codex,
)
from tether.agents.codex.adapter import CodexAgent
from tether.agents.policy import AgentConfig, Policy
from tether.host.agent_session import AgentSession
from tether.host.eventlog import EventLog

EVENT_TIMEOUT = 30.0
TIMEOUT = 30.0
FAKE_KEY_ENV = "TETHER_FAKE_MODEL_KEY"


def codex_cache_dir() -> Path:
    default = Path.home() / ".cache" / "tether" / f"codex-{PINNED_VERSION}"
    return Path(os.environ.get("TETHER_CODEX_DIR") or default)


@pytest.fixture(scope="session")
def codex_binary() -> CodexBinary:
    explicit = os.environ.get("TETHER_CODEX_BIN")
    # The npm wrapper, so every run also checks that it resolves to the native binary.
    wrapper = codex_cache_dir() / "node_modules" / ".bin" / "codex"
    if explicit is None and not wrapper.exists():
        if os.environ.get("CI"):
            pytest.fail(f"Codex CLI {PINNED_VERSION} is not installed, and CI must run these tests")
        pytest.skip(f"Codex CLI {PINNED_VERSION} is not installed: run scripts/install-codex (scripts/test does)")
    try:
        return find_codex(explicit or wrapper)
    except CodexError as exc:
        pytest.fail(f"Codex is installed but unusable: {exc}")


def write_codex_config(home: Path, base_url: str, *, approval_policy: str = "on-request", features: str = "") -> None:
    """A CODEX_HOME whose only model provider is the fake Responses server; ``features``: more
    lines of its ``[features]`` table."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f'''
model = "mock-model"
model_provider = "mock"
approval_policy = "{approval_policy}"
sandbox_mode = "workspace-write"
check_for_update_on_startup = false

[features]
# zstd-compressed request bodies would be unreadable to the fake server
enable_request_compression = false
# Codex's startup plugin sync reaches github.com, api.github.com and chatgpt.com: tests stay on loopback
plugins = false
{features}

[analytics]
enabled = false

[model_providers.mock]
name = "tether fake model"
base_url = "{base_url}"
wire_api = "responses"
env_key = "{FAKE_KEY_ENV}"
request_max_retries = 0
stream_max_retries = 0
supports_websockets = false
''')


@pytest.fixture
async def fake_model() -> AsyncIterator[FakeResponses]:
    server = FakeResponses()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def codex_home(tmp_path: Path, fake_model: FakeResponses) -> Path:
    home = tmp_path / "codex-home"
    write_codex_config(home, fake_model.base_url)
    return home


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


class Events:
    """What one app-server connection delivered, with waits on it."""

    def __init__(self, server: AppServer) -> None:
        self.server = server
        self.seen: list[Event] = []

    async def next(self, timeout: float = EVENT_TIMEOUT) -> Event:
        try:
            event = await asyncio.wait_for(self.server.events.get(), timeout)
        except TimeoutError:
            raise AssertionError(f"no codex event within {timeout:.0f} s (seen: {self.methods()})") from None
        self.seen.append(event)
        return event

    async def wait(
        self, method: str, where: Callable[[dict[str, Any]], bool] = lambda _: True, timeout: float = EVENT_TIMEOUT,
    ) -> Notification | ServerRequest:
        """The next notification or server request named ``method`` whose params match ``where``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no {method} within {timeout:.0f} s (seen: {self.methods()})")
            event = await self.next(left)
            if isinstance(event, Exited):
                raise AssertionError(f"app-server exited while waiting for {method}: {event}")
            if event.method == method and where(event.params):
                return event

    async def wait_exited(self, timeout: float = EVENT_TIMEOUT) -> Exited:
        while True:
            event = await self.next(timeout)
            if isinstance(event, Exited):
                return event

    def methods(self) -> list[str]:
        return [e.method if not isinstance(e, Exited) else "<exited>" for e in self.seen]

    def notifications(self, method: str) -> list[Notification]:
        return [e for e in self.seen if isinstance(e, Notification) and e.method == method]


StartAppServer = Callable[..., Awaitable[tuple[AppServer, Events]]]


@pytest.fixture
async def start_appserver(
    codex_binary: CodexBinary, codex_home: Path, workspace: Path,
) -> AsyncIterator[StartAppServer]:
    """Starts app-server processes (same CODEX_HOME unless told); all are closed at the end."""
    started: list[AppServer] = []

    async def start(home: Path | None = None) -> tuple[AppServer, Events]:
        server = await AppServer.start(
            # HOME: Codex runs commands in login shells, which must not read this machine's profile
            codex_binary, codex_home=home or codex_home, cwd=workspace,
            env={FAKE_KEY_ENV: "dummy-key", "HOME": str(home or codex_home)},
        )
        started.append(server)
        return server, Events(server)

    yield start
    for server in started:
        await server.close()


@pytest.fixture(autouse=True)
def fake_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAKE_KEY_ENV, "dummy-key")


class Harness(SessionHarness):
    def __init__(self, log: EventLog, binary: CodexBinary, codex_home: Path, workspace: Path) -> None:
        super().__init__(log, CodexAgent, workspace, timeout=TIMEOUT)
        self.binary = binary
        self.codex_home = codex_home

    def config(self, **options: Any) -> AgentConfig:
        return AgentConfig(
            "codex", options={"binary": str(self.binary.path), "codex_home": str(self.codex_home), **options}
        )

    async def start(
        self, prompt: str, *, policy: Policy | None = None, options: dict[str, Any] | None = None,
    ) -> AgentSession:
        return await self.open(prompt, policy or Policy(), self.config(**(options or {})))


@pytest.fixture
async def harness(
    event_log: EventLog, codex_binary: CodexBinary, codex_home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Harness]:
    # The adapter's app-servers inherit this process's environment. HOME: Codex runs commands in
    # login shells, which must not read this machine's profile (its pyenv init printed "cannot
    # rehash" into a command's output when two shells started at once)
    monkeypatch.setenv("HOME", str(codex_home))
    h = Harness(event_log, codex_binary, codex_home, workspace)
    yield h
    await h.close()
