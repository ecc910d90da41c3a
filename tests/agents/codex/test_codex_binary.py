"""find_codex: PATH and explicit lookup, npm wrapper → native binary, version checks."""

from __future__ import annotations

import os
import platform
import stat
from pathlib import Path

import pytest

from tether.agents.codex import PINNED_VERSION, CodexError, find_codex
from tether.agents.codex.binary import _PLATFORMS, is_npm_wrapper


def fake_codex(path: Path, version: str = PINNED_VERSION) -> Path:
    """A shell script answering --version the way the Codex CLI does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho 'codex-cli {version}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def npm_install(root: Path, *, native: bool = True, version: str = PINNED_VERSION) -> Path:
    """The layout ``npm install @openai/codex`` makes; returns node_modules/.bin/codex."""
    package, triple = _PLATFORMS[(platform.system(), platform.machine())]
    modules = root / "node_modules"
    script = modules / "@openai" / "codex" / "bin" / "codex.js"
    script.parent.mkdir(parents=True)
    script.write_text("#!/usr/bin/env node\n// Unified entry point for the Codex CLI.\n")
    script.chmod(0o755)
    if native:
        fake_codex(modules / "@openai" / package / "vendor" / triple / "bin" / "codex", version)
    link = modules / ".bin" / "codex"
    link.parent.mkdir()
    link.symlink_to(Path("..") / "@openai" / "codex" / "bin" / "codex.js")
    return link


needs_known_platform = pytest.mark.skipif(
    (platform.system(), platform.machine()) not in _PLATFORMS, reason="no Codex build for this platform",
)


def test_explicit_native_binary(tmp_path: Path) -> None:
    binary = find_codex(fake_codex(tmp_path / "codex"))
    assert binary.path == tmp_path / "codex"
    assert binary.version == PINNED_VERSION
    assert binary.wrapper is None


@needs_known_platform
def test_npm_wrapper_resolves_to_the_native_binary(tmp_path: Path) -> None:
    link = npm_install(tmp_path)
    assert is_npm_wrapper(link)
    binary = find_codex(link)
    assert binary.wrapper == link
    assert binary.path.name == "codex"
    assert "vendor" in binary.path.parts
    assert not is_npm_wrapper(binary.path)


@needs_known_platform
def test_wrapper_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    link = npm_install(tmp_path)
    monkeypatch.setenv("PATH", str(link.parent))
    binary = find_codex()
    assert binary.wrapper == link
    assert "vendor" in binary.path.parts


@needs_known_platform
def test_wrapper_without_native_binary(tmp_path: Path) -> None:
    with pytest.raises(CodexError) as raised:
        find_codex(npm_install(tmp_path, native=False))
    assert raised.value.code == "codex_missing"
    assert "npm wrapper" in raised.value.message and "native binary" in raised.value.message
    assert raised.value.hint is not None and f"@openai/codex@{PINNED_VERSION}" in raised.value.hint


def test_missing_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CodexError) as raised:
        find_codex()
    assert raised.value.code == "codex_missing"
    assert "not found on PATH" in str(raised.value)
    assert "npm install -g @openai/codex" in str(raised.value)


def test_missing_explicit_path(tmp_path: Path) -> None:
    with pytest.raises(CodexError, match="no Codex binary at") as raised:
        find_codex(tmp_path / "nowhere" / "codex")
    assert raised.value.code == "codex_missing"


def test_unsupported_version(tmp_path: Path) -> None:
    with pytest.raises(CodexError) as raised:
        find_codex(fake_codex(tmp_path / "codex", "0.1.0"))
    assert raised.value.code == "codex_unsupported"
    assert "Codex 0.1.0" in raised.value.message and "not supported" in raised.value.message
    assert PINNED_VERSION in raised.value.message
    assert raised.value.hint is not None and PINNED_VERSION in raised.value.hint
    # Anyone who knows better can still look.
    assert find_codex(tmp_path / "codex", check_version=False).version == "0.1.0"


@needs_known_platform
def test_unsupported_version_behind_wrapper(tmp_path: Path) -> None:
    with pytest.raises(CodexError, match=r"0\.99\.0"):
        find_codex(npm_install(tmp_path, version="0.99.0"))


def test_not_codex_at_all(tmp_path: Path) -> None:
    script = tmp_path / "codex"
    script.write_text("#!/bin/sh\necho 'something else' >&2\nexit 3\n")
    script.chmod(0o755)
    with pytest.raises(CodexError, match="did not report a version") as raised:
        find_codex(script)
    assert raised.value.code == "codex_broken"


def test_not_executable(tmp_path: Path) -> None:
    path = tmp_path / "codex"
    path.write_text("")
    os.chmod(path, 0o644)
    with pytest.raises(CodexError, match="not executable"):
        find_codex(path)
