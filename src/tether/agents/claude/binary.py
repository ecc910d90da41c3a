"""Finding the Claude Code CLI binary and checking that it is a version tether speaks.

``npm install -g @anthropic-ai/claude-code`` puts ``bin/claude.exe`` on PATH as ``claude``; the
package's postinstall step copies the native binary of this platform (from the optional
dependency ``@anthropic-ai/claude-code-<platform>``) over that placeholder, so the command *is*
the native binary and no Node process stays between tether and Claude Code. When npm skipped the
postinstall (``--ignore-scripts``), the placeholder is still there: tether then runs the native
binary of the platform package beside it, or says how to fix the install.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from tether.agents.npm_cli import VERSION_RE, NpmCli
from tether.errors import TetherError

# The Claude Code versions whose stream-json and control protocol tether was tested against
# (tests/agents/claude/). Claude Code releases often and its SDK protocol is not versioned, so
# this is an exact list; scripts/install-claude installs the first one.
SUPPORTED_VERSIONS: tuple[str, ...] = ("2.1.332",)
PINNED_VERSION = SUPPORTED_VERSIONS[0]

# (system, machine) → the npm platform package the postinstall step copies the binary from.
_PLATFORMS: dict[tuple[str, str], str] = {
    ("Linux", "x86_64"): "claude-code-linux-x64",
    ("Linux", "amd64"): "claude-code-linux-x64",
    ("Linux", "aarch64"): "claude-code-linux-arm64",
    ("Linux", "arm64"): "claude-code-linux-arm64",
    ("Darwin", "x86_64"): "claude-code-darwin-x64",
    ("Darwin", "arm64"): "claude-code-darwin-arm64",
}


class ClaudeError(TetherError):
    """The Claude Code CLI is missing, unusable, or misbehaved."""

    code = "claude"


CLAUDE = NpmCli(name="Claude Code", command="claude", package="@anthropic-ai/claude-code",
                pinned=PINNED_VERSION, error=ClaudeError)


@dataclass(frozen=True)
class ClaudeBinary:
    path: Path  # the native executable tether runs
    version: str  # e.g. "2.1.332"


def find_claude(explicit: str | os.PathLike[str] | None = None, *, check_version: bool = True) -> ClaudeBinary:
    """The native Claude Code binary: ``explicit`` (a path or a command name) or ``claude`` on PATH.

    Raises :class:`ClaudeError` with a next step when nothing usable is found or its version is
    not in :data:`SUPPORTED_VERSIONS`.
    """
    found = Path(os.path.realpath(CLAUDE.locate(explicit)))
    native = found if _is_native(found) else _native_beside_placeholder(found)
    version = claude_version(native)
    if check_version:
        CLAUDE.check_supported(version, native, SUPPORTED_VERSIONS,
                               or_else="set [agents.claude] binary to the path of one")
    return ClaudeBinary(path=native, version=version)


def _is_native(path: Path) -> bool:
    """An executable of this OS, not the npm placeholder (a script or a text stub)."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head in (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe")


def _native_beside_placeholder(placeholder: Path) -> Path:
    key = (platform.system(), platform.machine())
    package = _PLATFORMS.get(key)
    if package is None:
        raise ClaudeError(f"{placeholder} is not a native Claude Code binary, and there is no build for "
                          f"{key[0]} {key[1]}", hint=CLAUDE.install_hint, code="claude_missing")
    # .../node_modules/@anthropic-ai/claude-code/bin/claude.exe → .../node_modules/@anthropic-ai/
    scope = placeholder.parent.parent.parent
    candidates = [
        scope / package / "claude",
        placeholder.parent.parent / "node_modules" / "@anthropic-ai" / package / "claude",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK) and _is_native(candidate):
            return candidate
    raise ClaudeError(
        f"{placeholder} is npm's placeholder for Claude Code, and the native binary is missing "
        f"(looked in {candidates[0].parent})",
        hint=f"reinstall it without --ignore-scripts: `npm install -g @anthropic-ai/claude-code@{PINNED_VERSION}` "
        "(npm must not skip optional dependencies)",
        code="claude_missing",
    )


def claude_version(path: Path) -> str:
    """The version ``path --version`` reports (``2.1.332 (Claude Code)`` → ``2.1.332``)."""
    done = CLAUDE.run_version(path, env={**os.environ, **QUIET_ENV})
    match = VERSION_RE.search(done.stdout or "")
    if done.returncode != 0 or match is None or "Claude Code" not in (done.stdout or "") + (done.stderr or ""):
        raise CLAUDE.no_version(path, done, what="a Claude Code version")
    return match.group(1)


# Claude Code calls home for updates, telemetry, error reports and feature flags unless told
# not to; a tether host only lets it talk to its model provider.
QUIET_ENV: dict[str, str] = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_UPDATES": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_GROWTHBOOK": "1",
    "CLAUDE_CODE_DISABLE_FEATURE_FLAGS": "1",
    "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
    "CLAUDE_CODE_ENABLE_TELEMETRY": "0",
}
