"""Dialing the remote with asyncssh, checking its host key like OpenSSH does.

``~/.ssh/config``, keys and the agent are asyncssh's own handling. The host key is checked
against known_hosts: a key that differs from a recorded one is refused (REMOTE HOST
IDENTIFICATION HAS CHANGED), an unknown one is refused unless ``--accept-new``, which records it
(OpenSSH's ``StrictHostKeyChecking=accept-new``). Tests point ``TETHER_SSH_KNOWN_HOSTS`` and
``TETHER_SSH_CONFIG`` at their own files so they never touch the real ``~/.ssh``.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.errors import UsageError
from tether.sshremote.errors import HostKeyError, SshError

if TYPE_CHECKING:
    import asyncssh

KNOWN_HOSTS_ENV = "TETHER_SSH_KNOWN_HOSTS"
CONFIG_ENV = "TETHER_SSH_CONFIG"
CONNECT_TIMEOUT = 20.0


@dataclass(frozen=True)
class Target:
    """Where to SSH: ``[user@]host`` with an optional port and identity file (None: from the
    ssh config or the defaults)."""

    host: str
    user: str | None = None
    port: int | None = None
    identity: str | None = None

    @classmethod
    def parse(cls, destination: str, *, port: int | None = None, identity: str | None = None) -> Target:
        user, sep, host = destination.rpartition("@")
        if not host or (sep and not user) or any(c.isspace() for c in destination):
            raise UsageError(f"bad SSH destination {destination!r}", hint="use [user@]machine, e.g. me@build-box")
        if port is not None and not 0 < port < 65536:
            raise UsageError(f"bad SSH port {port}")
        return cls(host, user or None, port, identity)

    def ssh_command(self) -> str:
        """The OpenSSH command line that reaches the same place."""
        parts = ["ssh"]
        if self.port:
            parts += ["-p", str(self.port)]
        if self.identity:
            parts += ["-i", shlex.quote(self.identity)]
        parts.append(shlex.quote(f"{self.user}@{self.host}" if self.user else self.host))
        return " ".join(parts)

    def label(self) -> str:
        text = f"{self.user}@{self.host}" if self.user else self.host
        return f"{text}:{self.port}" if self.port else text


@dataclass
class SshOptions:
    known_hosts: Path
    config: Path | None = None
    accept_new: bool = False
    timeout: float = CONNECT_TIMEOUT
    # Whether the files were named (option or environment) rather than the defaults.
    known_hosts_given: bool = False
    config_given: bool = False

    @classmethod
    def resolve(
        cls, *, known_hosts: str | None = None, config: str | None = None, accept_new: bool = False
    ) -> SshOptions:
        kh = known_hosts or os.environ.get(KNOWN_HOSTS_ENV)
        cfg = config or os.environ.get(CONFIG_ENV)
        return cls(
            Path(kh or "~/.ssh/known_hosts").expanduser().absolute(),
            Path(cfg).expanduser().absolute() if cfg else None,
            accept_new=accept_new, known_hosts_given=bool(kh), config_given=bool(cfg),
        )

    def saved_with(self, known_hosts: str | None, config: str | None) -> SshOptions:
        """These options for a remote reached before: the files it was first reached with
        (``known_hosts``, ``config``), unless others are named now. The desktop daemon, which
        holds tunnels and pushes revocations, so checks host keys against the same file."""
        return replace(
            self,
            known_hosts=self.known_hosts if self.known_hosts_given or not known_hosts else Path(known_hosts),
            config=self.config if self.config_given or not config else Path(config),
        )


@dataclass
class _HostKeyCheck:
    """What the host-key callback saw, to explain a refusal (asyncssh only says "not trusted")."""

    known_hosts: Path
    accept_new: bool
    host: str = ""
    port: int = 22
    key: Any = None
    outcome: str = ""  # "", "mismatch", "unknown", "accepted"
    known_lines: list[int] = field(default_factory=list)


def known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _known_lines(path: Path, host: str, addr: str, port: int) -> list[int]:
    """Line numbers of known_hosts entries for this host (for the mismatch message)."""
    import asyncssh

    lines: list[int] = []
    try:
        text = path.read_text()
    except OSError:
        return lines
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            keys = asyncssh.import_known_hosts(line).match(host, addr, port)
        except (ValueError, asyncssh.Error):
            continue
        if keys[0] or keys[1]:
            lines.append(number)
    return lines


def _client_class(check: _HostKeyCheck) -> type[asyncssh.SSHClient]:
    import asyncssh

    class Client(asyncssh.SSHClient):
        def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
            # Called only for a key known_hosts does not trust.
            check.host, check.port, check.key = host, port, key
            check.known_lines = _known_lines(check.known_hosts, host, addr, port)
            if check.known_lines:
                check.outcome = "mismatch"
                return False
            if check.accept_new:
                check.outcome = "accepted"
                return True
            check.outcome = "unknown"
            return False

    return Client


def _fingerprint(key: Any) -> str:
    return f"{key.get_algorithm()} key {key.get_fingerprint('sha256')}"


def _record_key(check: _HostKeyCheck) -> None:
    path = check.known_hosts
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    algorithm, blob = check.key.export_public_key("openssh").decode().split()[:2]
    line = f"{known_hosts_name(check.host, check.port)} {algorithm} {blob}\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(line)


def _host_key_error(check: _HostKeyCheck, target: Target) -> HostKeyError:
    name = known_hosts_name(check.host, check.port)
    where = f"{check.known_hosts}:{','.join(map(str, check.known_lines))}"
    if check.outcome == "mismatch":
        return HostKeyError(
            f"REMOTE HOST IDENTIFICATION HAS CHANGED for {name}: it presented the {_fingerprint(check.key)}, "
            f"which is not the key recorded in {where}. Someone could be intercepting the connection "
            "(man in the middle), or the host key was just changed. tether will not connect.",
            hint=f"if you know the key changed, remove the old one with `ssh-keygen -R '{name}' -f "
            f"{check.known_hosts}` and connect again",
        )
    return HostKeyError(
        f"the authenticity of {name} can't be established: it presented the {_fingerprint(check.key)}, "
        f"which is not in {check.known_hosts}",
        hint=f"check the fingerprint with the machine's owner, then run again with --accept-new "
        f"(or connect once with `{target.ssh_command()}`)",
    )


def _identity_file(identity: str) -> str:
    path = Path(identity).expanduser()
    if not path.is_file():
        raise UsageError(f"identity file {path} does not exist")
    return str(path)


async def connect(target: Target, options: SshOptions) -> asyncssh.SSHClientConnection:
    """An authenticated SSH connection, or :class:`SshError` saying what failed."""
    import asyncssh

    check = _HostKeyCheck(options.known_hosts, options.accept_new)
    kwargs: dict[str, Any] = {
        "client_factory": _client_class(check),
        # An empty trust set still routes every key through the callback above.
        "known_hosts": str(options.known_hosts) if options.known_hosts.exists() else ([], [], []),
        "connect_timeout": options.timeout,
        # Notice a dead connection (a tunnel must come back) within about a minute.
        "keepalive_interval": 15,
        "keepalive_count_max": 4,
    }
    if options.config is not None:
        kwargs["config"] = [str(options.config)]
    if target.port is not None:
        kwargs["port"] = target.port
    if target.user is not None:
        kwargs["username"] = target.user
    if target.identity is not None:
        kwargs["client_keys"] = [_identity_file(target.identity)]
    try:
        conn = await asyncssh.connect(target.host, **kwargs)
    except asyncssh.HostKeyNotVerifiable:
        if check.outcome in ("mismatch", "unknown"):
            raise _host_key_error(check, target) from None
        raise HostKeyError(
            f"the host key of {target.label()} could not be verified (revoked or a bad certificate)",
            hint=f"check {options.known_hosts}",
        ) from None
    except asyncssh.PermissionDenied:
        raise SshError(
            f"{target.label()} refused to log in: permission denied (publickey)",
            hint="check -i IDENTITY, your ssh-agent and the remote's ~/.ssh/authorized_keys "
            f"(try `{target.ssh_command()}`)",
        ) from None
    except asyncssh.Error as exc:
        raise SshError(f"SSH to {target.label()} failed: {exc.reason}") from None
    except TimeoutError:
        raise SshError(f"SSH to {target.label()} timed out after {options.timeout:.0f} s") from None
    except OSError as exc:
        raise SshError(
            f"cannot reach {target.label()}: {exc.strerror or exc}", hint="check the machine name, port and network"
        ) from None
    if check.outcome == "accepted":
        _record_key(check)
    return conn


@dataclass(frozen=True)
class RunResult:
    status: int
    stdout: str
    stderr: str


async def run(
    conn: asyncssh.SSHClientConnection, command: str, *, input: bytes | None = None, timeout: float = 600
) -> RunResult:
    """Run a shell command on the remote (its login shell's ``-c``)."""
    import asyncssh

    try:
        result = await conn.run(command, input=input, check=False, encoding=None, timeout=timeout)
    except asyncssh.Error as exc:
        raise SshError(f"the SSH connection failed while running a command: {exc.reason}") from None
    except TimeoutError:
        raise SshError(f"a remote command took longer than {timeout:.0f} s: {command[:80]}") from None

    def text(value: Any) -> str:
        if isinstance(value, bytes):
            return value.decode(errors="replace")
        return str(value or "")

    status = result.exit_status if result.exit_status is not None else 255
    return RunResult(status, text(result.stdout), text(result.stderr))


def sh_path(path: str) -> str:
    """A remote path for a POSIX shell command, ``~`` meaning the remote user's home."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)
