"""An agent CLI installed from npm at a pinned version: finding its command, reading its version.

Codex and Claude Code are both installed with ``npm install -g`` and both change their protocol
between releases, so tether runs only the versions it was tested against. How each npm package
lays out its native binary differs (see the ``binary`` module of each adapter); finding the
command, running ``--version`` and refusing an untested version is the same, and lives here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tether.errors import TetherError

VERSION_TIMEOUT_SECONDS = 15.0
VERSION_RE = re.compile(r"(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)")


@dataclass(frozen=True)
class NpmCli:
    name: str  # how messages name it: "Codex", "Claude Code"
    command: str  # the command npm puts on PATH, and the suffix of its scripts/install-<command>
    package: str  # the npm package: "@openai/codex"
    pinned: str  # the version scripts/install-<command> installs
    # Its error type; error codes are ``<its code>_missing``, ``_broken`` and ``_unsupported``.
    error: type[TetherError]

    @property
    def install_hint(self) -> str:
        return f"install it with `npm install -g {self.package}@{self.pinned}` (or run scripts/install-{self.command})"

    def fail(self, message: str, *, hint: str | None, reason: str) -> TetherError:
        return self.error(message, hint=hint, code=f"{self.error.code}_{reason}")

    def locate(self, explicit: str | os.PathLike[str] | None) -> Path:
        """``explicit`` (a path or a command name) or the command on PATH, as an absolute path."""
        name = os.fspath(explicit) if explicit is not None else self.command
        if os.sep in name or (os.altsep and os.altsep in name):
            path = Path(name).expanduser()
            if not path.exists():
                raise self.fail(f"no {self.name} binary at {path}", hint=self.install_hint, reason="missing")
            if not os.access(path, os.X_OK):
                raise self.fail(f"{path} is not executable", hint="check its permissions", reason="missing")
            return path.absolute()
        on_path = shutil.which(name)
        if on_path is None:
            raise self.fail(f"the {self.name} CLI (`{name}`) was not found on PATH", hint=self.install_hint,
                            reason="missing")
        return Path(on_path).absolute()

    def run_version(self, path: Path, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``path --version``, run; the error says so when it cannot run at all."""
        try:
            return subprocess.run(
                [os.fspath(path), "--version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT_SECONDS,
                stdin=subprocess.DEVNULL, check=False, env=dict(env) if env is not None else None,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise self.fail(f"could not run `{path} --version`: {exc}", hint=self.install_hint,
                            reason="broken") from None

    def no_version(self, path: Path, done: subprocess.CompletedProcess[str], *, what: str) -> TetherError:
        """The error for a ``--version`` run that did not report ``what`` (e.g. "a version")."""
        output = (done.stdout or "") + (done.stderr or "")
        snippet = output.strip().splitlines()[-1][:200] if output.strip() else f"exit code {done.returncode}"
        return self.fail(f"`{path} --version` did not report {what} ({snippet})",
                         hint=f"is this really the {self.name} CLI? " + self.install_hint, reason="broken")

    def check_supported(self, version: str, native: Path, supported: tuple[str, ...], *, or_else: str) -> None:
        """Refuse a version tether was not tested against; ``or_else`` is the other way out."""
        if version not in supported:
            raise self.fail(
                f"{self.name} {version} at {native} is not supported by this tether "
                f"(supported: {', '.join(supported)})",
                hint=f"install a supported version: `npm install -g {self.package}@{self.pinned}` or {or_else}",
                reason="unsupported",
            )
