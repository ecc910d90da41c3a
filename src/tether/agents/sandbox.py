"""The sandbox agents run in: bubblewrap on Linux, nothing elsewhere.

This is the only Linux-specific module of tether (ARCHITECTURE §7). Three modes, from the host's
policy:

- ``read-only``: the whole file system is mounted read-only, the workspace included; no network.
- ``workspace-write``: read-only, except the workspace, which is bound read-write; no network.
- ``full-access``: the command runs as the host user, unwrapped.

Sandboxed modes are enforced for real with ``bwrap`` or not at all: when bubblewrap is missing or
cannot create namespaces here (some containers turn user namespaces off), :meth:`Sandbox.command`
raises :class:`SandboxUnavailable` instead of running the command unconfined. macOS has no
bubblewrap (``sandbox-exec`` is future work), so sandboxed modes refuse there too.

File changes that the agent's tools make from the host process (not inside bwrap) ask
:meth:`Sandbox.check_write` first, so ``read-only`` also refuses those.

``hide`` lists directories a sandboxed command must not read at all, though the rest of the file
system is readable: the tether home (the host's private keys, its database, a config file that may
hold an API key). Each is covered by an empty tmpfs.

The built-in agent's commands run inside :class:`Sandbox`. An agent that brings its own sandbox
(Codex) runs whole inside :func:`hiding`: the file system as it is, network included, except the
hidden directories, so what its sandbox lets commands read cannot include them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

from tether.errors import TetherError

SandboxMode = Literal["read-only", "workspace-write", "full-access"]
SANDBOX_MODES: tuple[str, ...] = get_args(SandboxMode)

PROBE_TIMEOUT_SECONDS = 10.0


class SandboxError(TetherError):
    code = "sandbox"


class SandboxUnavailable(SandboxError):
    """A sandboxed mode was asked for on a machine where it cannot be enforced."""

    code = "sandbox_unavailable"


class SandboxDenied(SandboxError):
    """The sandbox mode forbids this action (e.g. a file write in read-only mode)."""

    code = "sandbox_denied"


# bwrap path -> (works, what we saw). Probing starts a process, so it is done once per path.
_probe_cache: dict[str, tuple[bool, str]] = {}


def _probe_argv(bwrap: str) -> list[str]:
    # Probe with the namespaces the real wrapping needs: bwrap alone may work where
    # --unshare-net or --unshare-pid does not (they need user namespaces when not root).
    return [
        bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
        "--unshare-net", "--unshare-pid", "--die-with-parent", "--new-session", "true",
    ]


def probe(bwrap: str | None = None) -> tuple[bool, str]:
    """Whether bubblewrap works on this machine, and what was seen (cached; blocks briefly).

    On the event loop, call :func:`probe_async` (or :meth:`Sandbox.prepare`) instead.
    """
    if sys.platform != "linux":
        return False, f"bubblewrap sandboxing is only available on Linux (this is {sys.platform})"
    found = bwrap or shutil.which("bwrap")
    if found is None:
        return False, "bwrap is not installed"
    if found in _probe_cache:
        return _probe_cache[found]
    try:
        done = subprocess.run(
            _probe_argv(found), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, timeout=PROBE_TIMEOUT_SECONDS, check=False,
        )
    except FileNotFoundError:
        result = (False, f"{found} does not exist")
    except PermissionError:
        result = (False, f"{found} is not executable")
    except subprocess.TimeoutExpired:
        result = (False, f"{found} did not finish a trial run within {PROBE_TIMEOUT_SECONDS:.0f} s")
    else:
        if done.returncode == 0:
            result = (True, f"{found} works")
        else:
            said = done.stderr.decode(errors="replace").strip()[:300] or f"exit code {done.returncode}"
            result = (False, f"{found} cannot create a sandbox here: {said}")
    _probe_cache[found] = result
    return result


async def probe_async(bwrap: str | None = None) -> tuple[bool, str]:
    """:func:`probe` off the event loop."""
    return await asyncio.to_thread(probe, bwrap)


def available(bwrap: str | None = None) -> bool:
    """True when sandboxed modes can be enforced here (cached after the first call)."""
    return probe(bwrap)[0]


class Sandbox:
    """How to run a command and whether a file may be written, for one mode and one workspace."""

    def __init__(
        self, mode: SandboxMode, workspace: Path, *, bwrap: str | None = None, hide: Sequence[Path] = ()
    ) -> None:
        if mode not in SANDBOX_MODES:
            raise SandboxError(
                f"unknown sandbox mode {mode!r}", hint=f"choose one of {', '.join(SANDBOX_MODES)}",
                code="sandbox_mode",
            )
        self.mode: SandboxMode = mode
        self.workspace = Path(os.path.realpath(workspace))
        self._bwrap = bwrap
        self.hide = [Path(os.path.realpath(p)) for p in hide]

    @property
    def sandboxed(self) -> bool:
        return self.mode != "full-access"

    @property
    def writes_allowed(self) -> bool:
        return self.mode != "read-only"

    def _unavailable(self, seen: str) -> SandboxUnavailable:
        return SandboxUnavailable(
            f"refusing to run in {self.mode} mode without bubblewrap: install it (apt-get install bubblewrap)"
            " or choose full-access",
            hint=f"what tether saw: {seen}",
        )

    def ensure_available(self) -> None:
        """Raise :class:`SandboxUnavailable` if this mode cannot be enforced (may block on first call)."""
        if not self.sandboxed:
            return
        ok, seen = probe(self._bwrap)
        if not ok:
            raise self._unavailable(seen)

    async def prepare(self) -> None:
        """:meth:`ensure_available` without blocking the loop; after it, :meth:`command` never blocks."""
        if not self.sandboxed:
            return
        ok, seen = await probe_async(self._bwrap)
        if not ok:
            raise self._unavailable(seen)

    def command(self, argv: Sequence[str]) -> list[str]:
        """The argv that runs ``argv`` inside this sandbox, with the workspace as working directory."""
        if not self.sandboxed:
            return list(argv)
        self.ensure_available()
        bwrap = self._bwrap or shutil.which("bwrap") or "bwrap"
        ws = str(self.workspace)
        # A hidden directory that holds the workspace is covered before the workspace is bound (so
        # the workspace stays visible); one inside the workspace, after (so it stays hidden).
        around = [p for p in self.hide if p.is_dir() and self.workspace.is_relative_to(p)]
        inside = [p for p in self.hide if p.is_dir() and p not in around]
        # Order matters: bwrap applies mounts in sequence, and the workspace may live under /tmp,
        # so it is bound after the private /tmp to stay visible.
        wrapped = [
            bwrap,
            "--ro-bind", "/", "/",
            "--dev", "/dev",
            "--proc", "/proc",
            "--tmpfs", "/tmp",
            *(arg for p in around for arg in ("--tmpfs", str(p))),
            "--bind" if self.mode == "workspace-write" else "--ro-bind", ws, ws,
            *(arg for p in inside for arg in ("--tmpfs", str(p))),
            "--unshare-net",
            # A pid namespace: when bwrap dies (interrupt), the kernel kills every process the
            # command started, not only the first one.
            "--unshare-pid",
            "--die-with-parent",
            # No access to the host's terminal (TIOCSTI injection).
            "--new-session",
            "--chdir", ws,
            "--",
        ]
        return wrapped + list(argv)

    def check_write(self, what: str) -> None:
        """Refuse a file change made from the host process when the mode is read-only."""
        if not self.writes_allowed:
            raise SandboxDenied(
                f"the sandbox is read-only: refusing to change {what}",
                hint="the host's policy for this agent must allow workspace-write to edit files",
            )


async def hiding(
    mode: SandboxMode, hide: Sequence[Path], *, keep: Sequence[Path] = (), bwrap: str | None = None
) -> list[str]:
    """The argv prefix that runs a whole agent process with ``hide`` covered by empty tmpfs, and
    nothing else changed (``keep``: directories inside a hidden one the agent needs, such as its
    own state, bound back). Empty in ``full-access``, which runs unconfined by the owner's choice,
    and when nothing is hidden; :class:`SandboxUnavailable` when bubblewrap cannot do it here."""
    return await asyncio.to_thread(_hiding, mode, hide, keep, bwrap)  # realpath and the probe block


def _hiding(mode: SandboxMode, hide: Sequence[Path], keep: Sequence[Path], bwrap: str | None) -> list[str]:
    hidden = [Path(os.path.realpath(p)) for p in hide if p.is_dir()]
    if mode == "full-access" or not hidden:
        return []
    ok, seen = probe(bwrap)
    if not ok:
        raise SandboxUnavailable(
            f"refusing to run in {mode} mode without bubblewrap, which hides the tether home from the agent:"
            " install it (apt-get install bubblewrap) or choose full-access",
            hint=f"what tether saw: {seen}",
        )
    kept = [Path(os.path.realpath(p)) for p in keep if p.is_dir()]
    back = [p for p in kept if any(p.is_relative_to(h) for h in hidden)]
    return [
        bwrap or shutil.which("bwrap") or "bwrap",
        # Recursive, devices usable (--bind would mount nodev): /dev, /proc and every other mount
        # stay as they are.
        "--dev-bind", "/", "/",
        *(arg for p in hidden for arg in ("--tmpfs", str(p))),
        *(arg for p in back for arg in ("--bind", str(p), str(p))),
        "--die-with-parent",
        "--",
    ]
