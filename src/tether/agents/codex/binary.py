"""Finding the Codex CLI binary and checking that it is a version tether speaks.

``npm install -g @openai/codex`` puts a Node script on PATH (``bin/codex.js``) that starts the
real, native binary from a per-platform package (``@openai/codex-linux-x64`` …). tether runs the
native binary itself: on Node versions without ``process.execve`` the wrapper stays as the
parent, and killing it leaves the native child — with its running commands — behind.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from tether.agents.npm_cli import VERSION_RE, NpmCli
from tether.errors import TetherError

# The Codex versions whose app-server protocol tether was tested against (tests/agents/codex/).
# The app-server protocol changes between minor releases (methods, enum values, fields), so this
# is an exact list, not a range; scripts/install-codex installs the first one.
SUPPORTED_VERSIONS: tuple[str, ...] = ("0.169.0",)
PINNED_VERSION = SUPPORTED_VERSIONS[0]

# (system, machine) → (npm platform package, Rust target triple), as the npm wrapper maps them.
_PLATFORMS: dict[tuple[str, str], tuple[str, str]] = {
    ("Linux", "x86_64"): ("codex-linux-x64", "x86_64-unknown-linux-musl"),
    ("Linux", "amd64"): ("codex-linux-x64", "x86_64-unknown-linux-musl"),
    ("Linux", "aarch64"): ("codex-linux-arm64", "aarch64-unknown-linux-musl"),
    ("Linux", "arm64"): ("codex-linux-arm64", "aarch64-unknown-linux-musl"),
    ("Darwin", "x86_64"): ("codex-darwin-x64", "x86_64-apple-darwin"),
    ("Darwin", "arm64"): ("codex-darwin-arm64", "aarch64-apple-darwin"),
}


class CodexError(TetherError):
    """The Codex CLI is missing, unusable, or misbehaved."""

    code = "codex"


CODEX = NpmCli(name="Codex", command="codex", package="@openai/codex", pinned=PINNED_VERSION,
               error=CodexError)


@dataclass(frozen=True)
class CodexBinary:
    path: Path  # the native executable tether runs
    version: str  # e.g. "0.169.0"
    wrapper: Path | None = None  # the npm Node wrapper it was found through, if any


def find_codex(explicit: str | os.PathLike[str] | None = None, *, check_version: bool = True) -> CodexBinary:
    """The native Codex binary: ``explicit`` (a path or a command name) or ``codex`` on PATH.

    An npm wrapper is resolved to the native binary beside it. Raises :class:`CodexError` with a
    next step when nothing is found or the version is not in :data:`SUPPORTED_VERSIONS`.
    """
    found = CODEX.locate(explicit)
    wrapper: Path | None = None
    native = found
    if is_npm_wrapper(found):
        wrapper = found
        native = native_beside_wrapper(found)
    version = codex_version(native)
    if check_version:
        CODEX.check_supported(version, native, SUPPORTED_VERSIONS, or_else="pass the path of one explicitly")
    return CodexBinary(path=native, version=version, wrapper=wrapper)


def is_npm_wrapper(path: Path) -> bool:
    """Whether ``path`` is the Node script of npm's ``@openai/codex`` (or a link to one)."""
    real = Path(os.path.realpath(path))
    if real.suffix in (".js", ".mjs", ".cjs"):
        return True
    try:
        with real.open("rb") as f:
            head = f.read(128)
    except OSError:
        return False
    first_line = head.split(b"\n", 1)[0]
    return first_line.startswith(b"#!") and b"node" in first_line


def native_beside_wrapper(wrapper: Path) -> Path:
    """The native binary the npm wrapper at ``wrapper`` would start on this platform."""
    key = (platform.system(), platform.machine())
    if key not in _PLATFORMS:
        raise CodexError(
            f"no Codex build for {key[0]} {key[1]}", hint="Codex ships for Linux and macOS on x86-64 and arm64",
            code="codex_missing",
        )
    package, triple = _PLATFORMS[key]
    # .../node_modules/@openai/codex/bin/codex.js → package root .../node_modules/@openai/codex
    package_root = Path(os.path.realpath(wrapper)).parent.parent
    candidates = [
        # npm (flat): the platform package is a sibling in node_modules/@openai/
        package_root.parent / package / "vendor" / triple / "bin" / "codex",
        # nested node_modules (some npm/pnpm layouts)
        package_root / "node_modules" / "@openai" / package / "vendor" / triple / "bin" / "codex",
        # older single-package releases carried the binaries in the package itself
        package_root / "vendor" / triple / "bin" / "codex",
        package_root / "vendor" / triple / "codex" / "codex",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise CodexError(
        f"{wrapper} is the npm wrapper of Codex, but its native binary for {triple} is missing "
        f"(looked in {candidates[0].parent})",
        hint=f"reinstall it: `npm install -g @openai/codex@{PINNED_VERSION}` (npm must not skip optional dependencies)",
        code="codex_missing",
    )


def codex_version(path: Path) -> str:
    """The version ``path --version`` reports (``codex-cli 0.169.0`` → ``0.169.0``)."""
    done = CODEX.run_version(path)
    match = VERSION_RE.search(done.stdout or "") or VERSION_RE.search((done.stdout or "") + (done.stderr or ""))
    if done.returncode != 0 or match is None:
        raise CODEX.no_version(path, done, what="a version")
    return match.group(1)
