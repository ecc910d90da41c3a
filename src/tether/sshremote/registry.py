"""The desktop's list of remote hosts it started over SSH: ``<home>/host/remotes.json`` (0600).

One entry per remote account and remote home: running ``tether ssh`` again to the same place
updates the entry (and reattaches to or upgrades the daemon there), never adds a second one.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from tether.errors import ConfigError, UsageError
from tether.home import write_private

FILE = "remotes.json"


class RemoteRecord(msgspec.Struct, forbid_unknown_fields=False):
    name: str
    host: str  # as given (an ssh config alias stays an alias)
    user: str | None
    port: int | None
    identity: str | None
    remote_home: str
    python: str
    mode: str  # "relay" | "tunnel"
    relay_url: str  # the URL the remote daemon dials
    workspaces: list[str]
    host_id: str
    static_public: str  # base64url
    state: str  # "running" | "stopped" | "unreachable"
    pid: int | None = None
    build: str = ""
    updated_at: float = 0.0
    tunnel_port: int | None = None
    enroll: bool = False  # the remote daemon was started with the relay's enrollment key
    known_hosts: str | None = None  # the files the remote was first reached with
    ssh_config: str | None = None

    def same_place(self, other: RemoteRecord) -> bool:
        return (self.host, self.user, self.port, self.remote_home) == (
            other.host, other.user, other.port, other.remote_home,
        )

    def ssh_place(self) -> tuple[object, ...]:
        """What a tunnel to this remote depends on (a change means dialing again)."""
        return (self.host, self.user, self.port, self.identity, self.remote_home, self.relay_url,
                self.known_hosts, self.ssh_config)

    def destination(self) -> str:
        text = f"{self.user}@{self.host}" if self.user else self.host
        return f"{text}:{self.port}" if self.port else text


class _File(msgspec.Struct):
    version: int = 1
    remotes: list[RemoteRecord] = msgspec.field(default_factory=list)


class Registry:
    def __init__(self, home: Path) -> None:
        self.path = home / "host" / FILE

    def load(self) -> list[RemoteRecord]:
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=_File).remotes
        except FileNotFoundError:
            return []
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            raise ConfigError(
                f"{self.path} is damaged", hint="remove it; run `tether ssh` again for each remote"
            ) from None

    def _save(self, remotes: list[RemoteRecord]) -> None:
        write_private(self.path, msgspec.json.format(msgspec.json.encode(_File(remotes=remotes)), indent=2) + b"\n")

    def save(self, record: RemoteRecord) -> None:
        """Add or replace (same remote place, or same name) the record."""
        record.updated_at = time.time()
        others = [r for r in self.load() if not r.same_place(record) and r.name != record.name]
        self._save([*others, record])

    def find_place(self, record: RemoteRecord) -> RemoteRecord | None:
        return next((r for r in self.load() if r.same_place(record)), None)

    def get(self, name: str) -> RemoteRecord:
        remotes = self.load()
        match = [r for r in remotes if r.name == name or r.host_id == name]
        if len(match) != 1:
            known = ", ".join(r.name for r in remotes) or "none yet"
            raise UsageError(f"no remote host named {name!r}", hint=f"see `tether ssh list` (known: {known})")
        return match[0]

    def remove(self, name: str) -> None:
        self._save([r for r in self.load() if r.name != name])

    def set_state(self, name: str, state: str, pid: int | None = None) -> None:
        self._update(name, state=state, pid=pid)

    def set_tunnel_port(self, name: str, port: int) -> None:
        self._update(name, tunnel_port=port)

    def _update(self, name: str, **fields: object) -> None:
        remotes = self.load()
        for r in remotes:
            if r.name == name:
                for key, value in fields.items():
                    setattr(r, key, value)
                r.updated_at = time.time()
        self._save(remotes)
