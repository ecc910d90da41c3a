from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.agents.policy import Approval, Policy, PolicyError, Sandbox
from tether.errors import ConfigError
from tether.host.config import Limits, PtyAccess, PushConfig, load_config, parse_config

GOOD = """
[host]
name = "desktop"
workspaces = ["~/src", "/tmp"]

[agents.builtin]
base_url = "http://127.0.0.1:9/v1"
model = "m"
api_key = "sk-very-secret"
approval = "untrusted"
sandbox = "read-only"

[agents.codex]
binary = "/opt/codex"
"""


def test_good_config(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(GOOD)
    config = load_config(tmp_path)
    assert config.name == "desktop"
    assert config.workspaces[1] == Path("/tmp") and config.workspaces[0] == Path.home() / "src"
    builtin = config.agent("builtin")
    assert builtin.policy == Policy(Approval.UNTRUSTED, Sandbox.READ_ONLY)
    assert builtin.secret("api_key") == "sk-very-secret"
    assert config.agent("codex").policy == Policy()  # defaults: on-request, workspace-write
    shown = str(config.redacted())
    assert "sk-very-secret" not in shown and "<redacted>" in shown


def test_push_config(tmp_path: Path) -> None:
    assert parse_config("", tmp_path / "config.toml").push == PushConfig()  # on, to public push services only
    config = parse_config(
        "[push]\nenabled = false\nsubject = 'mailto:me@example.com'\nallow_endpoints = ['http://127.0.0.1:8080/']\n",
        tmp_path / "config.toml")
    assert config.push == PushConfig(False, "mailto:me@example.com", ("http://127.0.0.1:8080/",))
    assert config.redacted()["push"]["allow_endpoints"] == ["http://127.0.0.1:8080/"]


def test_missing_file_is_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    assert config.path is None and config.workspaces == [] and config.agent("builtin").policy == Policy()
    assert config.limits == Limits()


def test_limits(tmp_path: Path) -> None:
    text = "[limits]\nmax_sessions = 5\nevent_retention_days = 0\nhandshake_timeout = 2\n"
    (tmp_path / "config.toml").write_text(text)
    config = load_config(tmp_path)
    assert config.limits == Limits(max_sessions=5, event_retention_days=0, handshake_timeout=2)
    assert config.limit_key("max_sessions") == f"limits.max_sessions in {tmp_path / 'config.toml'}"
    assert config.redacted()["limits"]["max_sessions"] == 5


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("[host]\nname = 'x'\nworkspace = ['a']\n", "host.workspace: unknown key", 3),
        ("[host]\nworkspaces = 'a'\n", "host.workspaces: must be a list", 2),
        ("[agents.builtin]\nmodel = 'm'\napproval = 'sometimes'\n", "agents.builtin.approval: unknown approval", 3),
        ("[agents.codex]\n\nsandbox = 'none'\n", "agents.codex.sandbox: unknown sandbox", 3),
        ("[agents.gemini]\nx = 1\n", "unknown agent", 1),
        ("[hosts]\n", "unknown section", 1),
        ("[agents.builtin]\nmax_steps = 'ten'\n", "max_steps: must be a int", 2),
        ("[limits]\nmax_sessions = 0\n", "limits.max_sessions: must be more than 0, not 0", 2),
        ("[limits]\n\nhandshake_timeout = -1.5\n", "limits.handshake_timeout: must be more than 0", 3),
        ("[limits]\nmax_channels = 3\n", "limits.max_channels: unknown key", 2),
        ("[limits]\nmax_sessions_per_caller = 'x'\n", "max_sessions_per_caller: must be a int", 2),
        ("[host\nname=1", "Expected ']'", None),
        ("[push]\nsubject = 'owner@example.com'\n", "push.subject: must be a mailto: address or an https:// URL", 2),
        ("[push]\n\nallow_endpoints = ['127.0.0.1:8080']\n", "push.allow_endpoints: must be a list of URL prefixes", 3),
        ("[push]\nallow_endpoints = 'http://127.0.0.1:8080/'\n", "push.allow_endpoints: must be a list", 2),
        ("[push]\nenabled = 'yes'\n", "push.enabled: must be a bool", 2),
        ("[push]\nendpoint = 'x'\n", "push.endpoint: unknown key", 2),
    ],
)
def test_bad_config_names_key_and_line(tmp_path: Path, text: str, message: str, line: int | None) -> None:
    path = tmp_path / "config.toml"
    with pytest.raises(ConfigError) as info:
        parse_config(text, path)
    assert message in info.value.message
    if line is not None:
        assert f"config.toml:{line}:" in info.value.message


@given(st.text(max_size=300))
@settings(max_examples=200)
def test_arbitrary_text_is_config_or_config_error(text: str) -> None:
    try:
        parse_config(text, Path("config.toml"))
    except ConfigError:
        pass


def test_policy_can_only_be_narrowed() -> None:
    host = Policy(Approval.ON_REQUEST, Sandbox.WORKSPACE_WRITE)
    assert host.narrowed("untrusted", "read-only") == Policy(Approval.UNTRUSTED, Sandbox.READ_ONLY)
    assert host.narrowed() == host
    with pytest.raises(PolicyError, match="looser"):
        host.narrowed(approval="never")
    with pytest.raises(PolicyError, match="looser"):
        host.narrowed(sandbox="full-access")
    with pytest.raises(PolicyError, match="unknown"):
        host.narrowed(sandbox="yolo")


def test_pty_access_defaults_and_keys(tmp_path: Path) -> None:
    """Restricted callers get no pty unless the owner says so; unrestricted ones do."""
    assert parse_config("", tmp_path / "config.toml").pty == PtyAccess(remote=True, restricted=False)
    text = "[agents.pty]\nallow_remote = false\nallow_restricted = true\n"
    assert parse_config(text, tmp_path / "config.toml").pty == PtyAccess(remote=False, restricted=True)
    with pytest.raises(ConfigError) as info:
        parse_config('[agents.pty]\nallow_restricted = "yes"\n', tmp_path / "config.toml")
    assert "agents.pty.allow_restricted" in info.value.message
