"""The tether home directory: where a host or a client keeps its keys and state.

Several hosts and clients can share one machine by using different homes
(``--home DIR`` or ``TETHER_HOME``; default ``~/.tether``).
"""

from __future__ import annotations

import json
import os
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


def resolve_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The home to use: the explicit one, else ``$TETHER_HOME``, else ``~/.tether``."""
    raw = explicit or os.environ.get(ENV_VAR) or Path.home() / ".tether"
    return Path(raw).expanduser().absolute()


def ensure_home(home: Path) -> Path:
    """Create the home (mode 0700) if it does not exist yet."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return home


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


def read_json(path: Path) -> Any:
    """Read a JSON file of the home, with an error that names the file when it is bad."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path} is not readable JSON ({exc.__class__.__name__})",
            hint="restore it from a backup or remove it and pair again",
        ) from None
