"""Where the tests find an agent CLI that scripts/install-<command> installed (run by scripts/test)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def installed_cli(name: str, pinned: str, cache_dir: Path, command: str, bin_env: str) -> Path:
    """npm's bin link of ``command`` under ``cache_dir`` (``$bin_env`` overrides it with any path), or
    skip the test saying how to install it — fail it instead under CI, which must run it."""
    explicit = os.environ.get(bin_env)
    path = Path(explicit) if explicit else cache_dir / "node_modules" / ".bin" / command
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{name} {pinned} is not installed, and CI must run these tests")
        pytest.skip(f"{name} {pinned} is not installed: run scripts/install-{command} (scripts/test does)")
    return path
