"""`tether ssh` against a real OpenSSH server on loopback, as a throwaway user of this machine.

The "remote" is this machine reached over SSH, so it reaches the test's relay on 127.0.0.1;
tether is installed there from wheels of this checkout (no package index).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ssh.conftest import Desktop, SshServer

pytestmark = [pytest.mark.ssh, pytest.mark.slow, pytest.mark.timeout(600)]


def _connect_args(sshd: SshServer, *extra: str) -> list[str]:
    return [f"{sshd.user}@127.0.0.1", "-p", str(sshd.port), "-i", str(sshd.client_key), *extra]


@pytest.fixture
def remote(sshd: SshServer) -> Iterator[SshServer]:
    """The remote account, with no host state left by an earlier test (its venv is kept: the
    install is the slow part, and "already installed" is a case worth running too)."""
    yield sshd
    for pid in sshd.user_pids():
        try:
            import os
            import signal

            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while sshd.user_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    shutil.rmtree(sshd.user_home / ".tether" / "host", ignore_errors=True)


def _daemon_pids(sshd: SshServer) -> list[int]:
    """Host daemons running as the remote user (their command line says `host --relay`)."""
    pids = []
    for pid in sshd.user_pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"host" in cmdline and b"--relay" in cmdline:
            pids.append(pid)
    return pids


def _remote_status(sshd: SshServer) -> dict[str, object]:
    result = sshd.as_user("~/.tether/venv/bin/tether --home ~/.tether status --json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_install_start_reattach_and_stop(desktop: Desktop, remote: SshServer, wheels: Path) -> None:
    result = desktop.ssh(*_connect_args(remote, "--accept-new", "--wheels", str(wheels), "--name", "box", "--json"))
    assert result.returncode == 0, result.stderr + result.stdout
    started = json.loads(result.stdout)
    assert started["state"] == "running"
    # Progress was shown per step, and the host key was recorded for next time.
    for step in ("connect to", "remote python", "install tether", "inherited devices", "start the remote host"):
        assert step in result.stderr
    assert "1 device(s)" in result.stderr
    known = (desktop.ssh_dir / "known_hosts").read_text()
    assert known.startswith(f"[127.0.0.1]:{remote.port} ssh-ed25519 ")

    # The remote host runs as the remote user, reached the relay, and has its own keys.
    status = _remote_status(remote)
    host = status["host"]
    assert isinstance(host, dict)
    assert host["connected"] is True and host["name"] == "box" and host["id"] == started["host_id"]
    assert host["relay"] == desktop.relay_url
    assert _daemon_pids(remote) == [started["pid"]]
    # The bundle was written 0600 in the remote's home.
    bundle = remote.user_home / ".tether" / "host" / "inherited.json"
    assert bundle.stat().st_mode & 0o777 == 0o600

    listed = json.loads(desktop.ssh("list", "--json").stdout)
    assert [(r["name"], r["host_id"], r["state"]) for r in listed] == [("box", started["host_id"], "running")]

    # Again: nothing to install, the same daemon is reattached, no second one.
    again = desktop.ssh(*_connect_args(remote, "--wheels", str(wheels), "--name", "box", "--json"))
    assert again.returncode == 0, again.stderr
    assert "already installed" in again.stderr and "running (pid" in again.stderr
    assert json.loads(again.stdout)["pid"] == started["pid"]
    assert _daemon_pids(remote) == [started["pid"]]
    assert len(json.loads(desktop.ssh("list", "--json").stdout)) == 1

    # The daemon survived the SSH sessions; `status` asks the machine.
    st = desktop.ssh("status", "box", "--json")
    assert st.returncode == 0, st.stderr
    assert json.loads(st.stdout)["connected"] is True

    stopped = desktop.ssh("stop", "box")
    assert stopped.returncode == 0, stopped.stderr
    deadline = time.monotonic() + 10
    while _daemon_pids(remote) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _daemon_pids(remote) == []
    assert json.loads(desktop.ssh("list", "--json").stdout)[0]["state"] == "stopped"


def test_unknown_host_key_needs_accept_new_and_changed_key_is_refused(
    desktop: Desktop, remote: SshServer, wheels: Path
) -> None:
    unknown = desktop.ssh(*_connect_args(remote, "--wheels", str(wheels)))
    assert unknown.returncode == 1
    assert "can't be established" in unknown.stderr and "--accept-new" in unknown.stderr
    assert not (desktop.ssh_dir / "known_hosts").exists()

    # Record the current key, then let the server come back with another one.
    first = desktop.ssh(*_connect_args(remote, "--accept-new", "--python", "/nonexistent/python3"))
    assert first.returncode == 1  # stops at the Python check, after the key was accepted
    assert (desktop.ssh_dir / "known_hosts").read_text().count("\n") == 1
    remote.restart_with_new_host_key()
    changed = desktop.ssh(*_connect_args(remote, "--accept-new", "--wheels", str(wheels)))
    assert changed.returncode == 1
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in changed.stderr
    assert "ssh-keygen -R" in changed.stderr
    assert _daemon_pids(remote) == []
    # --accept-new never replaces a recorded key.
    assert (desktop.ssh_dir / "known_hosts").read_text().count("\n") == 1


def test_remote_without_a_suitable_python_is_told_what_is_missing(desktop: Desktop, remote: SshServer) -> None:
    # A fake python3 that reports 3.9, in the remote user's home (what an old distribution has).
    fake = remote.user_home / "oldpy" / "python3"
    remote.as_user(f"mkdir -p {fake.parent} && printf '#!/bin/sh\\necho Python 3.9.2\\n' > {fake} && chmod +x {fake}")
    old = desktop.ssh(*_connect_args(remote, "--accept-new", "--python", str(fake)))
    assert old.returncode == 1
    assert "Python 3.9.2" in old.stderr and "needs Python 3.11 or newer" in old.stderr
    assert "--python" in old.stderr

    missing = desktop.ssh(*_connect_args(remote, "--python", "python3.99"))
    assert missing.returncode == 1
    assert "python3.99 was not found" in missing.stderr
