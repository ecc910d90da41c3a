"""The tether home directory: where a host or a client keeps its keys and state.

Several hosts and clients can share one machine by using different homes
(``--home DIR`` or ``TETHER_HOME``; default ``~/.tether``).
"""

from __future__ import annotations

import json
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.errors import ConfigError

ENV_VAR = "TETHER_HOME"


class HostPaths:
    """Where a host keeps its keys, state and socket in a home (its daemon and the clients that
    reach it over the socket both need them)."""

    def __init__(self, home: Path) -> None:
        self.dir = home / "host"
        self.keys = self.dir / "keys.json"
        self.db = self.dir / "state.db"
        self.socket = self.dir / "daemon.sock"
        self.vapid = self.dir / "push-vapid.pem"  # the host's Web Push signing key


class RelayPaths:
    """Where a relay keeps its mailbox in a home."""

    def __init__(self, home: Path) -> None:
        self.dir = home / "relay"
        self.mailbox = self.dir / "mailbox.db"


def resolve_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The home to use: the explicit one, else ``$TETHER_HOME``, else ``~/.tether``."""
    raw = explicit or os.environ.get(ENV_VAR) or Path.home() / ".tether"
    return Path(raw).expanduser().absolute()


class UnsafeHome(ConfigError):
    """A home, or a key file, that another user of this machine could have written or read."""

    code = "unsafe_home"


# The directories that hold keys and state: nobody else may even list them. The home itself may
# be 0755, as sshd allows for ~ (config.toml holds no keys unless the owner puts them there).
_PRIVATE_DIRS = ("host", "client", "relay")
# Deeper than host/* and client/* is tether's own download cache (ssh/wheel/...), not state.
_DEPTH = 2


def _owner(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name!r}"
    except KeyError:
        return f"uid {uid}"


@dataclass(frozen=True)
class _Problem:
    path: Path
    what: str
    fix: str | None  # a command that fixes it; None: only moving away does (someone else's file)


def _check_entry(path: Path, st: os.stat_result, *, private: bool) -> list[_Problem]:
    """sshd's StrictModes for one file or directory: owned by this user (or root), not writable
    by group or others; ``private``: no group or other permission at all."""
    if st.st_uid not in (os.geteuid(), 0):
        return [_Problem(path, f"belongs to {_owner(st.st_uid)}", None)]
    kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
    if private and st.st_mode & 0o077:
        mode = "700" if kind == "directory" else "600"
        return [_Problem(path, f"{kind} has mode {stat.S_IMODE(st.st_mode):o}, open to other users", f"chmod {mode}")]
    if st.st_mode & 0o022:
        return [_Problem(path, f"{kind} is writable by other users", "chmod go-w")]
    return []


def _parent_problems(path: Path) -> list[_Problem]:
    """Every directory above ``path`` up to /: one another user may write to without the sticky
    bit (like /tmp has) could rename ``path`` away and put its own in its place."""
    problems = []
    for parent in Path(os.path.realpath(path)).parents:
        try:
            st = parent.stat()
        except FileNotFoundError:  # to be made, by ensure_home (0700)
            continue
        if st.st_uid not in (os.geteuid(), 0):
            problems.append(_Problem(parent, f"(a parent) belongs to {_owner(st.st_uid)}", None))
        elif st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            problems.append(_Problem(parent, "(a parent) is writable by other users", "chmod go-w"))
    return problems


def _refuse(what: Path, problems: list[_Problem]) -> UnsafeHome:
    listed = "; ".join(f"{p.path} {p.what}" for p in problems[:6]) + ("; ..." if len(problems) > 6 else "")
    if any(p.fix is None for p in problems):
        hint = ("use a home of your own instead (e.g. --home ~/.tether), not one another user can change; never "
                "take over another user's files (a planted key would become this machine's identity)")
    else:
        fixes = dict.fromkeys(f"{p.fix} {p.path}" for p in problems)
        hint = "fix it with: " + "; ".join(fixes)
    return UnsafeHome(
        f"refusing {what}: another user of this machine could have changed it or read its keys ({listed})",
        hint=hint,
    )


def check_home(home: Path) -> None:
    """Refuse a home that another local user could have written to or read keys from, the way
    sshd's StrictModes refuses ~/.ssh: the home, what is in it and its parents up to / must be
    owned by this user (or root) and not writable by others (parents: unless sticky, as /tmp is);
    ``host/`` and ``client/`` must be open to nobody else. A home that does not exist yet is
    checked where it will be made. :class:`UnsafeHome` lists each problem and the fix."""
    real = Path(os.path.realpath(home))
    problems = _parent_problems(real)
    if real.exists():
        problems += _check_tree(real, 0)
    if problems:
        raise _refuse(home, problems)


def _check_tree(path: Path, depth: int) -> list[_Problem]:
    try:
        st = path.stat()
    except OSError:  # a dangling symlink or a file that just went away: nothing to trust or refuse
        return []
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        return []  # the daemon's socket (inside the private host/)
    private = depth == 1 and path.name in _PRIVATE_DIRS
    problems = _check_entry(path, st, private=private)
    if stat.S_ISDIR(st.st_mode) and depth < _DEPTH and not problems:
        for entry in sorted(path.iterdir()):
            problems += _check_tree(entry, depth + 1)
    return problems


def ensure_home(home: Path) -> Path:
    """Check the home (:func:`check_home`) and create it (mode 0700) if it does not exist yet."""
    check_home(home)
    missing = [p for p in (home, *home.parents) if not p.exists()]
    for directory in reversed(missing):  # parents too: a group-writable umask must not leave them open
        directory.mkdir(mode=0o700, exist_ok=True)
    return home


def read_private(path: Path) -> bytes:
    """The content of a key file, once it is known that nobody else could have written or read
    it: owned by this user (or root), mode 600 or stricter, in directories nobody else can write.
    The mode is checked on the open file, so it cannot be swapped between check and read."""
    problems = _parent_problems(path)
    with path.open("rb") as f:
        problems += _check_entry(path, os.fstat(f.fileno()), private=True)
        if problems:
            raise _refuse(path, problems)
        return f.read()


def write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only (0600), atomically.

    The file is created 0600 before any byte is written, so a secret is never briefly
    readable by others, and replaced with ``os.replace`` so a crash leaves the old file.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_private_json(path: Path, value: Any) -> None:
    write_private(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path, *, private: bool = False) -> Any:
    """Read a JSON file of the home, with an error that names the file when it is bad;
    ``private``: a key file, read with :func:`read_private`."""
    try:
        return json.loads(read_private(path) if private else path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path} is not readable JSON ({exc.__class__.__name__})",
            hint="restore it from a backup or remove it and pair again",
        ) from None
