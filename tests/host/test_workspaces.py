"""Workspace escape: `..`, absolute paths and symlinks must not leave the allowed workspaces."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.host.workspaces import WorkspaceError, resolve_workspace


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
