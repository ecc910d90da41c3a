"""Which directories sessions may run in.

A requested workspace is resolved (symlinks and ``..`` included) before it is compared, so a
path that merely *looks* inside an allowed workspace cannot escape it.
"""

from __future__ import annotations

import os
from pathlib import Path

from tether.errors import TetherError


class WorkspaceError(TetherError):
    code = "workspace"


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def within(path: str | None, restriction: str | None) -> bool:
    """Whether a caller held to ``restriction`` (None: not held) may see what lives in ``path``
    (a session's workspace, a thread's directory, a device's restriction). Nothing without a
    directory is inside a restriction: a restricted caller sees only what is provably its own."""
    if restriction is None:
        return True
    if path is None:
        return False
    return _inside(Path(os.path.realpath(path)), Path(os.path.realpath(restriction)))


def resolve_workspace(requested: str | None, allowed: list[Path], restriction: str | None = None) -> Path:
    """The real directory a session may use, or :class:`WorkspaceError` saying why not."""
    roots = [Path(os.path.realpath(p)) for p in allowed]
    if restriction is not None:
        limit = Path(os.path.realpath(restriction))
        roots = [limit] if any(_inside(limit, r) for r in roots) else []
    if not roots:
        raise WorkspaceError(
            "no workspace is allowed for this caller",
            hint="start the host with --workspace DIR",
        )
    if requested is None:
        return roots[0]
    if "\x00" in requested:
        raise WorkspaceError("a workspace path cannot contain a NUL byte")
    path = Path(os.path.realpath(Path(requested).expanduser()))
    if not any(_inside(path, r) for r in roots):
        shown = ", ".join(str(r) for r in roots)
        raise WorkspaceError(
            f"workspace {requested!r} is outside the allowed workspaces",
            hint=f"use a directory inside: {shown}",
        )
    if not path.is_dir():
        raise WorkspaceError(f"workspace {requested!r} is not a directory on the host")
    return path
