"""The host's config file, ``$TETHER_HOME/config.toml``: workspaces, agents and policy.

Loaded once into a typed :class:`HostConfig`; every mistake is a :class:`ConfigError` naming the
key and its line. Example::

    [host]
    name = "desktop"
    workspaces = ["~/src", "~/work"]

    [agents.builtin]
    base_url = "http://127.0.0.1:11434/v1"    # else $OPENAI_BASE_URL
    model = "qwen2.5-coder"
    api_key_env = "MY_KEY"                    # or api_key = "..."; else $OPENAI_API_KEY
    approval = "on-request"                   # untrusted | on-request | never
    sandbox = "workspace-write"               # read-only | workspace-write | full-access

    [agents.pty]                              # a pty is a shell as the host's user
    allow_remote = true                       # devices and tokens may start one (default true)
    allow_restricted = false                  # ... even those held to a workspace (default false)

    [agents.codex]
    binary = "codex"
    approval = "untrusted"
    sandbox = "read-only"

    [agents.claude]
    binary = "claude"                         # Claude Code; credentials from its own login or env
    config_dir = "~/.claude"                  # else $CLAUDE_CONFIG_DIR or ~/.claude
    mcp_config = "~/.claude/tether-mcp.json"  # MCP servers its sessions may use (none unless set)

    [limits]                                  # what one device or token may hold (defaults shown)
    max_sessions = 100                        # live sessions on the host, whoever started them
    max_sessions_per_caller = 16              # live sessions one device or token started
    max_channels_per_caller = 32              # channels one device or token has open at once
    max_subscriptions_per_caller = 64         # event subscriptions over all of its channels
    handshake_timeout = 10.0                  # seconds a new channel has to finish its handshake
    event_retention_days = 30.0               # sessions ended longer ago are forgotten, events too
    max_database_mb = 1024                    # beyond it, the oldest output events are dropped

    [push]                                    # Web Push to paired browsers (defaults shown)
    enabled = true
    subject = "mailto:tether@localhost"       # who push services may contact about this host (VAPID)
    allow_endpoints = []                      # URL prefixes allowed besides public https push services
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.agents.policy import AgentConfig, Policy, PolicyError, parse_approval, parse_sandbox
from tether.agents.registry import AGENTS
from tether.errors import ConfigError

FILE_NAME = "config.toml"
# Keys whose values are secrets: never printed, logged or sent to a client.
SECRET_KEYS = frozenset({"api_key"})

_HOST_KEYS: dict[str, type] = {"name": str, "workspaces": list}
_PUSH_KEYS: dict[str, type] = {"enabled": bool, "subject": str, "allow_endpoints": list}
_LIMIT_KEYS: dict[str, type] = {
    "max_sessions": int, "max_sessions_per_caller": int, "max_channels_per_caller": int,
    "max_subscriptions_per_caller": int, "handshake_timeout": float, "event_retention_days": float,
    "max_database_mb": int,
}
@dataclass(frozen=True)
class PtyAccess:
    """Who besides the owner may start a pty session: it runs any command as the host's user, so
    a workspace restriction cannot hold inside it (it can read the host's keys)."""

    remote: bool = True  # [agents.pty] allow_remote: paired devices and tokens
    restricted: bool = False  # [agents.pty] allow_restricted: even those held to a workspace


@dataclass(frozen=True)
class Limits:
    """``[limits]``: what the host and each device or token (a *caller*) may hold, so one paired
    device cannot take the host's memory, descriptors or disk from the others. The local owner is
    held to the host-wide ones only."""

    max_sessions: int = 100  # a pty or agent session holds a few descriptors; 1,024 went at ≈500
    max_sessions_per_caller: int = 16
    max_channels_per_caller: int = 32
    max_subscriptions_per_caller: int = 64
    handshake_timeout: float = 10.0
    event_retention_days: float = 30.0
    max_database_mb: int = 1024


@dataclass(frozen=True)
class PushConfig:
    """``[push]``: Web Push from this host to the browsers of its devices."""

    enabled: bool = True
    subject: str = "mailto:tether@localhost"
    # Endpoints a subscription may name besides public https ones (a push service of the owner's
    # own, on a private address; a test's on loopback).
    allow_endpoints: tuple[str, ...] = ()


@dataclass(frozen=True)
class HostConfig:
    name: str | None = None
    workspaces: list[Path] = field(default_factory=list)
    agents: dict[str, AgentConfig] = field(default_factory=lambda: {a: AgentConfig(a) for a in AGENTS})
    path: Path | None = None
    pty: PtyAccess = field(default_factory=PtyAccess)
    limits: Limits = field(default_factory=Limits)
    push: PushConfig = field(default_factory=PushConfig)

    def limit_key(self, key: str) -> str:
        """Where to change a limit, for refusals: ``limits.KEY in FILE``."""
        return f"limits.{key} in {self.path or 'the host config (' + FILE_NAME + ' in its home)'}"

    def agent(self, name: str) -> AgentConfig:
        return self.agents.get(name) or AgentConfig(name)

    def redacted(self) -> dict[str, Any]:
        """The config as `tether config show` prints it: secrets replaced, never shown."""
        return {
            "file": str(self.path) if self.path else None,
            "host": {"name": self.name, "workspaces": [str(w) for w in self.workspaces]},
            "limits": dataclasses.asdict(self.limits),
            "push": {**dataclasses.asdict(self.push), "allow_endpoints": list(self.push.allow_endpoints)},
            "agents": {
                name: {
                    "enabled": agent.enabled,
                    **agent.policy.to_json(),
                    **{k: ("<redacted>" if k in SECRET_KEYS else v) for k, v in sorted(agent.options.items())},
                }
                for name, agent in self.agents.items()
            },
        }


def load_config(home: Path) -> HostConfig:
    """Read ``home/config.toml``; a missing file means the defaults."""
    path = home / FILE_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return HostConfig(path=None)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> HostConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}", hint="fix the TOML syntax at that line") from None
    where = _Locator(text, path)
    for key in raw:
        if key not in ("host", "agents", "limits", "push"):
            raise where.error(
                key, None, f"unknown section [{key}]", "known sections: [host], [agents.NAME], [limits], [push]"
            )
    host = _table(raw.get("host", {}), "host", where)
    _check_keys(host, _HOST_KEYS, "host", where)
    name = host.get("name")
    listed = _strings(host.get("workspaces", []), "host", "workspaces", where)
    workspaces = [Path(os.path.expanduser(w)) for w in listed]
    agents_raw = _table(raw.get("agents", {}), "agents", where)
    agents = {a: AgentConfig(a) for a in AGENTS}
    for agent_name, settings in agents_raw.items():
        if agent_name not in AGENTS:
            raise where.error(agent_name, "agents", f"unknown agent [agents.{agent_name}]",
                              f"known agents: {', '.join(AGENTS)}")
        table = _table(settings, f"agents.{agent_name}", where)
        section = f"agents.{agent_name}"
        _check_keys(table, dict(AGENTS[agent_name].keys), section, where)
        try:
            policy = Policy(
                parse_approval(table.get("approval", Policy().approval.value)),
                parse_sandbox(table.get("sandbox", Policy().sandbox.value)),
            )
        except PolicyError as exc:
            bad = "approval" if "approval" in exc.message else "sandbox"
            raise where.error(bad, section, exc.message, exc.hint) from None
        options = {k: v for k, v in table.items() if k not in ("approval", "sandbox", "enabled")}
        agents[agent_name] = AgentConfig(agent_name, policy, options, bool(table.get("enabled", True)))
    pty = agents["pty"].options
    access = PtyAccess(pty.get("allow_remote", PtyAccess.remote), pty.get("allow_restricted", PtyAccess.restricted))
    return HostConfig(
        name=name, workspaces=workspaces, agents=agents, path=path, pty=access, limits=_limits(raw, where),
        push=_push(raw, where),
    )


def _push(raw: dict[str, Any], where: _Locator) -> PushConfig:
    table = _table(raw.get("push", {}), "push", where)
    _check_keys(table, _PUSH_KEYS, "push", where)
    subject = table.get("subject", PushConfig.subject)
    if not re.match(r"^(mailto:[^@\s]+@[^@\s]+|https://\S+)$", subject):
        raise where.error("subject", "push", f"must be a mailto: address or an https:// URL, not {subject!r}",
                          'e.g. subject = "mailto:you@example.com"')
    allowed = table.get("allow_endpoints", [])
    if not all(isinstance(a, str) and re.match(r"^https?://[^/\s]+/", a) for a in allowed):
        raise where.error("allow_endpoints", "push", "must be a list of URL prefixes, each up to a path",
                          'e.g. allow_endpoints = ["https://push.internal.example/"]')
    return PushConfig(bool(table.get("enabled", True)), subject, tuple(allowed))


def _limits(raw: dict[str, Any], where: _Locator) -> Limits:
    table = _table(raw.get("limits", {}), "limits", where)
    _check_keys(table, _LIMIT_KEYS, "limits", where)
    for key, value in table.items():
        if value < 0 or (value == 0 and key != "event_retention_days"):
            raise where.error(key, "limits", f"must be more than 0, not {value}")
    return Limits(**table)


class _Locator:
    """Finds the line of a key, so errors can say where to look."""

    def __init__(self, text: str, path: Path) -> None:
        self.lines = text.splitlines()
        self.path = path

    def line_of(self, key: str, section: str | None) -> int | None:
        current: str | None = None
        for number, line in enumerate(self.lines, 1):
            header = re.match(r"\s*\[\s*([^\]]+?)\s*\]", line)
            if header:
                current = header.group(1)
                if section is None and current.split(".")[0] == key:
                    return number
                if section is not None and current == f"{section}.{key}":
                    return number
                continue
            if current == section and re.match(rf"\s*{re.escape(key)}\s*=", line):
                return number
        return None

    def error(self, key: str, section: str | None, message: str, hint: str | None = None) -> ConfigError:
        line = self.line_of(key, section)
        full = f"{section}.{key}" if section else key
        place = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(f"{place}: {full}: {message}", hint=hint)


def _table(value: Any, section: str, where: _Locator) -> dict[str, Any]:
    if not isinstance(value, dict):
        head, _, key = section.rpartition(".")
        raise where.error(key, head or None, "must be a table", f"write it as [{section}]")
    return value


def _check_keys(table: dict[str, Any], known: dict[str, type], section: str, where: _Locator) -> None:
    for key, value in table.items():
        expected = known.get(key)
        if expected is None:
            listing = ", ".join(sorted(known)) or "none"
            raise where.error(key, section, "unknown key", f"known keys here: {listing}")
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if expected is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise where.error(key, section, f"must be a {expected.__name__}, not {type(value).__name__}")


def _strings(value: Any, section: str, key: str, where: _Locator) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise where.error(key, section, "must be a list of directory paths")
    return list(value)
