"""Helpers for tests that use a remote host started by `tether ssh` (the remote is this machine,
reached over SSH as the throwaway user of ``tests/ssh/conftest.py``).

Files the remote daemon reads (its ``config.toml``, workspaces, a CODEX_HOME) are written here as
root and handed to the remote user, as that user would have made them on a real machine.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
from pathlib import Path
from typing import Any

from tests.procs import tether_json
from tests.ssh.conftest import Desktop, SshServer
from tests.ssh.test_ssh import _connect_args


def remote_ids(sshd: SshServer) -> tuple[int, int]:
    """The remote user's uid and gid."""
    entry = pwd.getpwnam(sshd.user)
    return entry.pw_uid, entry.pw_gid


def give_to_remote_user(sshd: SshServer, path: Path) -> None:
    """``path`` and everything under it owned by the remote user."""
    uid, gid = remote_ids(sshd)
    os.chown(path, uid, gid)
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def remote_dir(sshd: SshServer, name: str) -> Path:
    """A fresh directory ``name`` in the remote user's home, owned by that user (mode 0700)."""
    path = sshd.user_home / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700)
    give_to_remote_user(sshd, path)
    return path


def remote_home(sshd: SshServer) -> Path:
    """The remote's tether home (`tether ssh`'s default ``~/.tether``), made if missing."""
    home = sshd.user_home / ".tether"
    if not home.exists():
        home.mkdir(mode=0o700)
        give_to_remote_user(sshd, home)
    return home


def write_remote_config(sshd: SshServer, text: str) -> Path:
    """The remote host's own ``config.toml`` (owner the remote user, 0600); the daemon reads it
    when it starts, so write it before `tether ssh` starts the daemon."""
    path = remote_home(sshd) / "config.toml"
    path.write_text(text)
    os.chmod(path, 0o600)
    give_to_remote_user(sshd, path)
    return path


def remove_remote_config(sshd: SshServer) -> None:
    (sshd.user_home / ".tether" / "config.toml").unlink(missing_ok=True)


def link_tree(src: Path, dst: Path) -> None:
    """``src`` copied to ``dst`` as hard links when both are on one file system (instant, even
    for hundreds of MB), else as a copy. Files keep their owner and mode: a root-owned 0755
    binary can be run, not changed, by the remote user."""
    def link_or_copy(a: str, b: str) -> object:
        try:
            os.link(a, b)
            return b
        except OSError:
            return shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link_or_copy, symlinks=True)


def start_box(desktop: Desktop, sshd: SshServer, wheels: Path, *extra: str, name: str = "box") -> dict[str, Any]:
    """`tether ssh ... --name NAME` (relay mode) from the desktop; returns its JSON answer."""
    result = desktop.ssh(*_connect_args(sshd, "--accept-new", "--wheels", str(wheels), "--name", name, "--json",
                                        *extra))
    assert result.returncode == 0, result.stderr + result.stdout
    started: dict[str, Any] = json.loads(result.stdout)
    assert started["state"] == "running", started
    return started


def learn_host(client_home: Path, host_id: str, name: str = "box") -> None:
    """The client, paired with the desktop only, learns the remote host through the desktop
    (`tether hosts` asks it for its linked hosts) and sees it online."""
    hosts = {h["id"]: h for h in tether_json(client_home, "hosts", "--json")}
    assert host_id in hosts, hosts
    assert hosts[host_id]["name"] == name and hosts[host_id]["online"] is True, hosts[host_id]
