"""Workspace escape: `..`, absolute paths and symlinks must not leave the allowed workspaces."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.host.principal import Principal
from tether.host.workspaces import WorkspaceError, resolve_workspace
from tether.protocol.scopes import ALL_SCOPES, parse_scopes


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    allowed = tmp_path / "allowed"
    (allowed / "project").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (allowed / "escape").symlink_to(outside)
    (allowed / "inner-link").symlink_to(allowed / "project")
    return allowed, outside


def test_inside_paths_resolve(tree: tuple[Path, Path]) -> None:
    allowed, _ = tree
    assert resolve_workspace(None, [allowed]) == allowed.resolve()
    assert resolve_workspace(str(allowed / "project"), [allowed]) == (allowed / "project").resolve()
    assert resolve_workspace(str(allowed / "inner-link"), [allowed]) == (allowed / "project").resolve()
    assert resolve_workspace(str(allowed / "project" / ".."), [allowed]) == allowed.resolve()


@pytest.mark.parametrize(
    "attempt",
    ["{allowed}/../outside", "{outside}", "/", "/etc", "{allowed}/escape", "{allowed}/project/../../outside",
     "{allowed}/escape/.", "~"],
)
def test_escapes_are_refused(tree: tuple[Path, Path], attempt: str) -> None:
    allowed, outside = tree
    with pytest.raises(WorkspaceError, match="outside the allowed workspaces"):
        resolve_workspace(attempt.format(allowed=allowed, outside=outside), [allowed])


def test_restriction_narrows_and_never_widens(tree: tuple[Path, Path]) -> None:
    allowed, outside = tree
    project = allowed / "project"
    assert resolve_workspace(None, [allowed], str(project)) == project.resolve()
    with pytest.raises(WorkspaceError):
        resolve_workspace(str(allowed), [allowed], str(project))
    # A restriction outside the host's workspaces grants nothing.
    with pytest.raises(WorkspaceError, match="no workspace is allowed"):
        resolve_workspace(None, [allowed], str(outside))


def test_bad_paths(tree: tuple[Path, Path]) -> None:
    allowed, _ = tree
    with pytest.raises(WorkspaceError, match="NUL"):
        resolve_workspace("a\x00b", [allowed])
    (allowed / "file").write_text("x")
    with pytest.raises(WorkspaceError, match="not a directory"):
        resolve_workspace(str(allowed / "file"), [allowed])


def test_visibility_and_management_keep_to_the_restriction(tree: tuple[Path, Path]) -> None:
    """Principal.sees and Principal.manages: the one rule for sessions, events, threads, devices."""
    allowed, outside = tree
    held = Principal("device", "d1", "held", parse_scopes("read,admin"), workspace=str(allowed / "project"))
    free = Principal("device", "d2", "free", ALL_SCOPES)
    assert held.sees(str(allowed / "project")) and held.sees(str(allowed / "inner-link"))
    # Outside, through a symlink out, a sibling, and no directory at all (a Codex thread without cwd).
    for path in (str(outside), str(allowed / "escape"), str(allowed), None):
        assert not held.sees(path), path
        assert free.sees(path)
    read = parse_scopes("read")
    assert held.manages(read, str(allowed / "project"))
    assert not held.manages(read, None)  # an unrestricted device is wider than a restricted admin
    assert not held.manages(parse_scopes("read,prompt"), str(allowed / "project"))  # more scopes
    assert free.manages(ALL_SCOPES, None) and free.manages(read, str(outside))
    assert Principal.local().manages(ALL_SCOPES, None)
