"""Finding the Codex CLI binary and checking that it is a version tether speaks.

``npm install -g @openai/codex`` puts a Node script on PATH (``bin/codex.js``) that starts the
real, native binary from a per-platform package (``@openai/codex-linux-x64`` …). tether runs the
native binary itself: on Node versions without ``process.execve`` the wrapper stays as the
parent, and killing it leaves the native child — with its running commands — behind.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tether.errors import TetherError

# The Codex versions whose app-server protocol tether was tested against (tests/agents/codex/).
# The app-server protocol changes between minor releases (methods, enum values, fields), so this
# is an exact list, not a range; scripts/install-codex installs the first one.
SUPPORTED_VERSIONS: tuple[str, ...] = ("0.169.0",)
PINNED_VERSION = SUPPORTED_VERSIONS[0]
VERSION_TIMEOUT_SECONDS = 15.0

# (system, machine) → (npm platform package, Rust target triple), as the npm wrapper maps them.
_PLATFORMS: dict[tuple[str, str], tuple[str, str]] = {
    ("Linux", "x86_64"): ("codex-linux-x64", "x86_64-unknown-linux-musl"),
    ("Linux", "amd64"): ("codex-linux-x64", "x86_64-unknown-linux-musl"),
    ("Linux", "aarch64"): ("codex-linux-arm64", "aarch64-unknown-linux-musl"),
    ("Linux", "arm64"): ("codex-linux-arm64", "aarch64-unknown-linux-musl"),
    ("Darwin", "x86_64"): ("codex-darwin-x64", "x86_64-apple-darwin"),
    ("Darwin", "arm64"): ("codex-darwin-arm64", "aarch64-apple-darwin"),
}

_VERSION_RE = re.compile(r"(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)")
_INSTALL_HINT = f"install it with `npm install -g @openai/codex@{PINNED_VERSION}` (or run scripts/install-codex)"


class CodexError(TetherError):
    """The Codex CLI is missing, unusable, or misbehaved."""

    code = "codex"


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
    found = _locate(explicit)
    wrapper: Path | None = None
    native = found
    if is_npm_wrapper(found):
        wrapper = found
        native = native_beside_wrapper(found)
    version = codex_version(native)
    if check_version and version not in SUPPORTED_VERSIONS:
        supported = ", ".join(SUPPORTED_VERSIONS)
        raise CodexError(
            f"Codex {version} at {native} is not supported by this tether (supported: {supported})",
            hint=f"install a supported version: `npm install -g @openai/codex@{PINNED_VERSION}` "
            "or pass the path of one explicitly",
            code="codex_unsupported",
        )
    return CodexBinary(path=native, version=version, wrapper=wrapper)


def _locate(explicit: str | os.PathLike[str] | None) -> Path:
    name = os.fspath(explicit) if explicit is not None else "codex"
    if os.sep in name or (os.altsep and os.altsep in name):
        path = Path(name).expanduser()
        if not path.exists():
            raise CodexError(f"no Codex binary at {path}", hint=_INSTALL_HINT, code="codex_missing")
        if not os.access(path, os.X_OK):
            raise CodexError(f"{path} is not executable", hint="check its permissions", code="codex_missing")
        return path.absolute()
    on_path = shutil.which(name)
    if on_path is None:
        raise CodexError(f"the Codex CLI (`{name}`) was not found on PATH", hint=_INSTALL_HINT, code="codex_missing")
    return Path(on_path).absolute()


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
    try:
        done = subprocess.run(
            [os.fspath(path), "--version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CodexError(f"could not run `{path} --version`: {exc}", hint=_INSTALL_HINT, code="codex_broken") from None
    output = (done.stdout or "") + (done.stderr or "")
    match = _VERSION_RE.search(done.stdout or "") or _VERSION_RE.search(output)
    if done.returncode != 0 or match is None:
        snippet = output.strip().splitlines()[-1][:200] if output.strip() else f"exit code {done.returncode}"
        raise CodexError(
            f"`{path} --version` did not report a version ({snippet})",
            hint="is this really the Codex CLI? " + _INSTALL_HINT, code="codex_broken",
        )
    return match.group(1)
