"""`tether ssh` against a real OpenSSH server on loopback, as a throwaway user of this machine.

The "remote" is this machine reached over SSH, so it reaches the test's relay on 127.0.0.1;
tether is installed there from wheels of this checkout (no package index).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ssh.conftest import Desktop, Netns, SshServer

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
    (sshd.user_home / ".tether" / "config.toml").unlink(missing_ok=True)


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
    # No --mode: this remote (this machine) reaches the relay, so it dials it itself.
    assert f"can the remote reach the relay: yes: relay mode (127.0.0.1:{desktop.relay_port})" in result.stderr
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

    # The remote's own config.toml is read at start: after an edit there, a run restarts it.
    from tests.ssh.helpers import write_remote_config

    write_remote_config(remote, "# edited on the remote\n")
    edited = desktop.ssh(*_connect_args(remote, "--wheels", str(wheels), "--name", "box", "--json"))
    assert edited.returncode == 0, edited.stderr
    assert "restarted (pid" in edited.stderr
    restarted = json.loads(edited.stdout)["pid"]
    assert restarted != started["pid"]
    _wait(lambda: _daemon_pids(remote) == [restarted], timeout=15)

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


def _remote_bundle_devices(sshd: SshServer, host_id: str) -> list[str]:
    from tether.host.inheritance import load_bundle

    bundle = load_bundle(sshd.user_home / ".tether", host_id)
    assert bundle is not None
    return [d.name for d in bundle.devices]


def test_refresh_carries_a_revocation_to_the_remote(
    desktop: Desktop, remote: SshServer, wheels: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from tests.procs import tether, tether_json
    from tether.crypto.keys import Identity
    from tether.sshremote.hooks import refresh_remotes

    result = desktop.ssh(*_connect_args(remote, "--accept-new", "--wheels", str(wheels), "--name", "box", "--json"))
    assert result.returncode == 0, result.stderr
    host_id = json.loads(result.stdout)["host_id"]
    assert _remote_bundle_devices(remote, host_id) == ["phone"]

    (device,) = tether_json(desktop.home, "devices", "list", "--json")
    same = desktop.ssh("refresh")
    assert same.returncode == 0, same.stderr
    assert _remote_bundle_devices(remote, host_id) == ["phone"]
    # The desktop revokes the phone; the hook its daemon calls hands the remote a bundle without it.
    tether(desktop.home, "devices", "revoke", device["id"])
    monkeypatch.setenv("TETHER_SSH_KNOWN_HOSTS", desktop.env["TETHER_SSH_KNOWN_HOSTS"])
    monkeypatch.setenv("TETHER_SSH_CONFIG", desktop.env["TETHER_SSH_CONFIG"])
    identity = Identity.load(desktop.home / "host" / "keys.json")
    assert asyncio.run(refresh_remotes(desktop.home, identity=identity, name="desktop")) == []
    assert _remote_bundle_devices(remote, host_id) == []
    refreshed = desktop.ssh("refresh", "box")
    assert refreshed.returncode == 0, refreshed.stderr
    assert "0 device(s)" in refreshed.stderr
    # A remote that cannot be reached is reported, not fatal.
    remote.stop()
    try:
        assert asyncio.run(refresh_remotes(desktop.home, identity=identity)) == ["box"]
        unreachable = desktop.ssh("refresh")
        assert unreachable.returncode == 1 and "could not reach: box" in unreachable.stderr
    finally:
        remote.start()


def test_no_relay_is_a_clear_error(remote: SshServer, wheels: Path, tmp_path: Path) -> None:
    from tests.procs import short_home

    home = short_home("tdn")
    try:
        result = subprocess_ssh(home, tmp_path, *_connect_args(remote, "--accept-new", "--wheels", str(wheels)))
        assert result.returncode == 1
        assert "has no host yet" in result.stderr
    finally:
        shutil.rmtree(home, ignore_errors=True)


def subprocess_ssh(home: Path, ssh_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    import os

    from tests.ssh.conftest import TETHER_SSH

    (ssh_dir / "config").write_text("")
    env = {**os.environ, "TETHER_SSH_KNOWN_HOSTS": str(ssh_dir / "known_hosts"),
           "TETHER_SSH_CONFIG": str(ssh_dir / "config")}
    return subprocess.run([*TETHER_SSH, "--home", str(home), "ssh", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def _ssh_session_pids(sshd: SshServer) -> list[int]:
    pids = []
    for pid in sshd.user_pids():
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sshd"):
                pids.append(pid)
        except OSError:
            continue
    return pids


def _wait(predicate: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


async def test_tunnel_mode_reaches_a_remote_that_cannot_reach_the_relay_and_survives_a_dropped_ssh_connection(
    desktop: Desktop, remote: SshServer, netns_sshd: SshServer, netns: Netns, wheels: Path
) -> None:
    import asyncio
    import os
    import signal
    import sys

    from tests.support.numbered import NumberedStream, producer
    from tether import Client

    # The remote is in its own network namespace: it cannot reach the relay on this loopback,
    # nor through the veth pair (the relay listens on 127.0.0.1 only).
    for address in ("127.0.0.1", netns.outside):
        probe = netns.run(sys.executable, "-c", f"import socket; socket.create_connection(('{address}', "
                          f"{desktop.relay_port}), 3)")
        assert probe.returncode != 0 and ("refused" in probe.stderr or "unreachable" in probe.stderr), probe.stderr
    # No --mode: the remote is asked whether it reaches the relay, and it does not.
    args = [f"{remote.user}@{netns_sshd.address}", "-i", str(remote.client_key), "--accept-new",
            "--wheels", str(wheels), "--name", "tun", "--json"]
    result = await asyncio.to_thread(desktop.ssh, *args)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "can the remote reach the relay: no (" in result.stderr and "tunnel mode" in result.stderr
    assert "held by this machine's host" in result.stderr
    (record,) = json.loads(desktop.ssh("list", "--json").stdout)
    assert record["mode"] == "tunnel" and record["tunnel_port"] and record["state"] == "running"
    assert (record["tunnel"]["state"], record["tunnel"]["port"]) == ("up", record["tunnel_port"])
    st = await asyncio.to_thread(desktop.ssh, "status", "tun", "--json")
    assert st.returncode == 0, st.stderr
    assert json.loads(st.stdout)["tunnel"]["state"] == "up" and json.loads(st.stdout)["running"] is True
    host = _remote_status(remote)["host"]
    assert isinstance(host, dict)
    # The remote daemon dials its own loopback: the tunnel's end, held by the desktop daemon.
    assert host["relay"] == f"ws://127.0.0.1:{record['tunnel_port']}/ws"
    await asyncio.to_thread(_wait, lambda: _remote_status(remote)["host"]["connected"] is True)  # type: ignore[index]
    assert desktop.host.log.count("tunnel tun: tunnel up") == 1

    # A client paired with the desktop only (it has not asked for its hosts since) names "tun",
    # learns it from the desktop, and streams a session there while the SSH connection is cut.
    async with await Client.open(desktop.client_home, host="tun") as client:
        session_id = await client.start_session(["python3", "-c", producer(3000, pause=0.06)])
        first_conn = client._conn
        async with NumberedStream(client, session_id) as stream, asyncio.timeout(120):
            await stream.seen(300)
            for pid in _ssh_session_pids(remote):
                os.kill(pid, signal.SIGKILL)
            await stream.exited.wait()
        reconnected = client._conn is not first_conn
    stream.assert_whole(3000)
    assert reconnected, "the client's connection to the remote was cut and resumed"
    log = desktop.host.log
    assert "tunnel tun: SSH connection lost" in log and log.count("tunnel tun: tunnel up") >= 2
    assert json.loads(desktop.ssh("list", "--json").stdout)[0]["tunnel_port"] == record["tunnel_port"]

    # The machine "reboots": its daemon is gone with the SSH connection. When the tunnel is back,
    # the desktop starts the remote host again on it.
    (daemon_pid,) = _daemon_pids(remote)
    os.kill(daemon_pid, signal.SIGKILL)
    for pid in _ssh_session_pids(remote):
        os.kill(pid, signal.SIGKILL)
    await asyncio.to_thread(_wait, lambda: "tunnel tun: its host was started" in desktop.host.log, 60)
    await asyncio.to_thread(_wait, lambda: _remote_status(remote)["host"]["connected"] is True, 60)  # type: ignore[index]
    assert _daemon_pids(remote) not in ([], [daemon_pid])

    # `tether ssh stop` ends the remote daemon and the desktop's tunnel.
    assert (await asyncio.to_thread(desktop.ssh, "stop", "tun")).returncode == 0
    await asyncio.to_thread(_wait, lambda: "tunnel tun: closed" in desktop.host.log, 10)
    listed = desktop.ssh("list")
    assert "tun" in listed.stdout and "tunnel not held (stopped)" in listed.stdout


def _other_build(wheels: Path, into: Path) -> Path:
    """The same wheels with a tether wheel of another build (same version, other bytes)."""
    import zipfile

    into.mkdir()
    for whl in wheels.glob("*.whl"):
        shutil.copy(whl, into / whl.name)
    (ours,) = into.glob("tether-*.whl")
    with zipfile.ZipFile(ours, "a") as z:
        z.comment = b"another build"
    return into


def test_a_new_build_upgrades_and_restarts_the_one_daemon(
    desktop: Desktop, remote: SshServer, wheels: Path, tmp_path: Path
) -> None:
    first = desktop.ssh(*_connect_args(remote, "--accept-new", "--wheels", str(wheels), "--name", "box", "--json"))
    assert first.returncode == 0, first.stderr
    old_pid = json.loads(first.stdout)["pid"]
    newer = _other_build(wheels, tmp_path / "newer")
    second = desktop.ssh(*_connect_args(remote, "--wheels", str(newer), "--name", "box", "--json"))
    assert second.returncode == 0, second.stderr
    assert "upgraded" in second.stderr and "restarted" in second.stderr
    new_pid = json.loads(second.stdout)["pid"]
    assert new_pid != old_pid
    _wait(lambda: _daemon_pids(remote) == [new_pid], timeout=15)
    host = _remote_status(remote)["host"]
    assert isinstance(host, dict) and host["connected"] is True
    # Back to the first build for the other tests (the venv is shared between them).
    assert desktop.ssh(*_connect_args(remote, "--wheels", str(wheels), "--name", "box")).returncode == 0


def test_two_runs_at_once_install_once_and_start_one_daemon(
    desktop: Desktop, remote: SshServer, wheels: Path
) -> None:
    from tests.ssh.conftest import TETHER_SSH

    shutil.rmtree(remote.user_home / ".tether" / "venv", ignore_errors=True)
    (desktop.ssh_dir / "known_hosts").write_text("")
    assert desktop.ssh(*_connect_args(remote, "--accept-new", "--python", "/nope")).returncode == 1  # records the key
    runs = [
        subprocess.Popen(
            [*TETHER_SSH, "--home", str(desktop.home), "ssh",
             *_connect_args(remote, "--wheels", str(wheels), "--name", "box", "--json")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=desktop.env,
        )
        for _ in range(2)
    ]
    results = [(p.communicate(timeout=300), p.returncode) for p in runs]
    for (_out, err), code in results:
        assert code == 0, err
    pids = {json.loads(out)["pid"] for (out, _), _ in results}
    assert len(pids) == 1
    assert _daemon_pids(remote) == list(pids)
    assert len(json.loads(desktop.ssh("list", "--json").stdout)) == 1


def test_a_device_of_the_desktop_reaches_the_remote_host(desktop: Desktop, remote: SshServer, wheels: Path) -> None:
    from tests.procs import tether, tether_json

    result = desktop.ssh(*_connect_args(remote, "--accept-new", "--wheels", str(wheels), "--name", "box", "--json"))
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(desktop.ssh("list", "--json").stdout)
    # The client was paired with the desktop only: it learns the new host over that channel.
    hosts = {h["id"]: h for h in tether_json(desktop.client_home, "hosts", "--json")}
    assert record["host_id"] in hosts and hosts[record["host_id"]]["online"] is True
    assert hosts[record["host_id"]]["name"] == "box"
    assert tether_json(desktop.client_home, "sessions", "list", "--host", "box", "--json") == []
    sid = tether_json(desktop.client_home, "sessions", "start", "--host", "box", "--json", "--", "whoami")["id"]
    deadline = time.monotonic() + 20
    out = ""
    while remote.user not in out and time.monotonic() < deadline:
        lines = tether(desktop.client_home, "sessions", "events", sid, "--host", "box", "--json").stdout.splitlines()
        out = "".join(json.loads(x)["data"].get("data", "") for x in lines if '"session.output"' in x)
        time.sleep(0.3)
    assert remote.user in out, out
    # Revoked on the desktop: its daemon pushes the remote a bundle without the device (over
    # SSH, with the files `tether ssh` used), and the remote closes the device's live channel.
    import asyncio

    from tether import Client
    from tether.errors import TetherError

    async def locked_out_after_revoke() -> tuple[float, str]:
        async with await Client.open(desktop.client_home, host="box") as client:
            client.retry_for = 0
            assert (await client.info())["name"] == "box"
            (device,) = tether_json(desktop.home, "devices", "list", "--json")
            await asyncio.to_thread(tether, desktop.home, "devices", "revoke", device["id"])
            revoked_at = time.monotonic()
            async with asyncio.timeout(20):
                while True:
                    try:
                        await client.info()
                    except TetherError as exc:
                        return time.monotonic() - revoked_at, str(exc)
                    await asyncio.sleep(0.05)

    took, why = asyncio.run(locked_out_after_revoke())
    print(f"locked out of the remote {took:.2f} s after the revocation on the desktop: {why}")
    assert took <= 2.0
    assert "revoked on the desktop host" in why  # the remote host's own reason, not the relay's
    refused = tether(desktop.client_home, "sessions", "list", "--host", "box", check=False)
    assert refused.returncode != 0 and "revoked" in refused.stderr.lower()


def test_a_relay_with_closed_admission_gets_the_enrollment_key(
    remote: SshServer, wheels: Path, tmp_path: Path
) -> None:
    from tests.procs import remove, short_home, start_host, start_relay

    key = tmp_path / "relay.key"
    home, workspace = short_home("tdh"), short_home("tdw")
    relay, port = start_relay(0, "--enroll-key", str(key), "--create-enroll-key")
    try:
        host = start_host(home, f"ws://127.0.0.1:{port}", workspace, "--enroll-key", str(key))
        try:
            result = subprocess_ssh(
                home, tmp_path, *_connect_args(remote, "--accept-new", "--wheels", str(wheels), "--name", "box",
                                               "--enroll-key", str(key), "--json"),
            )
            assert result.returncode == 0, result.stderr
            assert "relay enrollment key" in result.stderr and "connected to the relay" in result.stderr
            kept = remote.user_home / ".tether" / "host" / "relay-enroll.key"
            assert kept.read_bytes() == key.read_bytes() and kept.stat().st_mode & 0o777 == 0o600
            status = _remote_status(remote)["host"]
            assert isinstance(status, dict) and status["connected"] is True
        finally:
            host.stop()
    finally:
        relay.stop()
        remove(home, workspace)


def test_ssh_config_aliases_and_the_agent_are_honoured(desktop: Desktop, remote: SshServer, wheels: Path) -> None:
    import os

    from tests.ssh.conftest import TETHER_SSH

    # A Host alias of the ssh config names the machine, port, user and key.
    (desktop.ssh_dir / "config").write_text(
        f"Host boxalias\n  HostName 127.0.0.1\n  Port {remote.port}\n  User {remote.user}\n"
        f"  IdentityFile {remote.client_key}\n"
    )
    aliased = desktop.ssh("boxalias", "--accept-new", "--wheels", str(wheels), "--json")
    assert aliased.returncode == 0, aliased.stderr
    assert json.loads(aliased.stdout)["name"] == "boxalias"
    assert _daemon_pids(remote) == [json.loads(aliased.stdout)["pid"]]

    # No -i and no IdentityFile: the key comes from an SSH agent.
    (desktop.ssh_dir / "config").write_text("")
    sock = desktop.ssh_dir / "agent.sock"
    agent = subprocess.run(["ssh-agent", "-a", str(sock), "-s"], capture_output=True, text=True, check=True)
    agent_pid = int(agent.stdout.split("SSH_AGENT_PID=")[1].split(";")[0])
    try:
        env = {**desktop.env, "SSH_AUTH_SOCK": str(sock), "HOME": str(desktop.ssh_dir)}  # no default keys
        args = [f"{remote.user}@127.0.0.1", "-p", str(remote.port), "--wheels", str(wheels), "--name", "boxalias"]
        without = subprocess.run([*TETHER_SSH, "--home", str(desktop.home), "ssh", *args], capture_output=True,
                                 text=True, timeout=120, env=env)
        assert without.returncode == 1 and "permission denied (publickey)" in without.stderr, "no key in the agent yet"
        subprocess.run(["ssh-add", "-q", str(remote.client_key)], env=env, check=True, capture_output=True)
        agented = subprocess.run([*TETHER_SSH, "--home", str(desktop.home), "ssh", *args, "--json"],
                                 capture_output=True, text=True, timeout=120, env=env)
        assert agented.returncode == 0, agented.stderr
        assert json.loads(agented.stdout)["pid"] == json.loads(aliased.stdout)["pid"]  # the same daemon
    finally:
        os.kill(agent_pid, 15)


def test_forget_stops_the_remote_drops_its_devices_and_clients_drop_it(
    desktop: Desktop, remote: SshServer, wheels: Path
) -> None:
    from tests.procs import tether_json

    result = desktop.ssh(*_connect_args(remote, "--accept-new", "--wheels", str(wheels), "--name", "box", "--json"))
    assert result.returncode == 0, result.stderr
    host_id = json.loads(result.stdout)["host_id"]
    assert host_id in {h["id"] for h in tether_json(desktop.client_home, "hosts", "--json")}

    forgotten = desktop.ssh("forget", "box")
    assert forgotten.returncode == 0, forgotten.stderr
    assert "clients are told" in forgotten.stderr
    assert _daemon_pids(remote) == []
    assert not (remote.user_home / ".tether" / "host" / "inherited.json").exists()
    assert json.loads(desktop.ssh("list", "--json").stdout) == []
    # The client paired with the desktop drops the host it had learned.
    assert host_id not in {h["id"] for h in tether_json(desktop.client_home, "hosts", "--json")}

    # A machine that cannot be reached is forgotten only with --force.
    again = desktop.ssh(*_connect_args(remote, "--wheels", str(wheels), "--name", "box", "--json"))
    assert again.returncode == 0, again.stderr
    assert host_id in {h["id"] for h in tether_json(desktop.client_home, "hosts", "--json")}
    remote.stop()
    try:
        refused = desktop.ssh("forget", "box")
        assert refused.returncode == 1 and "--force" in refused.stderr
        assert len(json.loads(desktop.ssh("list", "--json").stdout)) == 1
        forced = desktop.ssh("forget", "box", "--force")
        assert forced.returncode == 0, forced.stderr
        assert "forgetting it here only" in forced.stderr
        assert json.loads(desktop.ssh("list", "--json").stdout) == []
    finally:
        remote.start()


def test_without_wheels_the_remote_gets_this_checkout_and_its_index_the_dependencies(
    desktop: Desktop, remote: SshServer
) -> None:
    # A fresh venv: tether is built from this checkout (never taken from an index by name), the
    # dependencies come from whatever package index the remote's pip is configured with.
    shutil.rmtree(remote.user_home / ".tether" / "venv", ignore_errors=True)
    result = desktop.ssh(*_connect_args(remote, "--accept-new", "--name", "box", "--json"), timeout=600)
    assert result.returncode == 0, result.stderr
    assert "tether-0.1.0-" in result.stderr and "(1 wheel(s))" in result.stderr
    assert "installed in" in result.stderr
    version = remote.as_user("~/.tether/venv/bin/python -c 'import tether; print(tether.__version__)'")
    from tether import __version__

    assert version.returncode == 0 and version.stdout.strip() == __version__, version.stderr
    assert _remote_status(remote)["host"]["connected"] is True  # type: ignore[index]


def test_a_device_paired_after_tether_ssh_reaches_the_remote_by_itself(
    desktop: Desktop, remote: SshServer, wheels: Path
) -> None:
    import asyncio

    from tests.procs import login, remove, short_home, tether_json
    from tether import Client
    from tether.errors import TetherError

    result = desktop.ssh(*_connect_args(remote, "--accept-new", "--wheels", str(wheels), "--name", "box", "--json"))
    assert result.returncode == 0, result.stderr
    late = short_home("tdl")
    try:
        # Pairing with the desktop makes its daemon push the remote a bundle with the new device.
        offer = tether_json(desktop.home, "pair", "--json")
        login(late, offer["link"], "--name", "tablet", "--json")
        paired_at = time.monotonic()

        async def reach_box() -> float:
            async with asyncio.timeout(20):
                while True:
                    try:
                        async with await Client.open(late, host="box") as client:
                            assert (await client.info())["name"] == "box"
                            return time.monotonic() - paired_at
                    except TetherError:
                        await asyncio.sleep(0.1)

        took = asyncio.run(reach_box())
        print(f"a device paired with the desktop reached the remote {took:.2f} s later")
        assert _remote_bundle_devices(remote, json.loads(result.stdout)["host_id"]) == ["phone", "tablet"]
    finally:
        remove(late)


def test_a_desktop_behind_a_public_url_gives_that_url_to_the_remote_and_its_clients(
    remote: SshServer, wheels: Path, tmp_path: Path
) -> None:
    import re

    from tests.procs import TETHER, Proc, free_port, login, remove, short_home, tether_json

    # `tether up` whose relay phones reach by another address (here localhost for 127.0.0.1, as a
    # proxy or tunnel would give): the remote and the clients that learn of it get that address.
    home, workspace, client = short_home("tdu"), short_home("tdw"), short_home("tdc")
    port = free_port()
    public = f"http://localhost:{port}"
    up = Proc([*TETHER, "--home", str(home), "up", "--listen", f"127.0.0.1:{port}", "--public-url", public,
               "--workspace", str(workspace), "--name", "desktop"], name="up")
    try:
        up.wait_for("tether is up")
        link = re.search(r"http://localhost:\d+/#pair=\S+", up.out)
        assert link, up.out
        login(client, link.group(0))
        result = subprocess_ssh(home, tmp_path, *_connect_args(remote, "--accept-new", "--wheels", str(wheels),
                                                               "--name", "box", "--json"))
        assert result.returncode == 0, result.stderr
        assert f"relay {public}" in result.stderr
        assert f"can the remote reach the relay: yes: relay mode (localhost:{port})" in result.stderr
        _wait(lambda: _remote_status(remote)["host"]["connected"] is True)  # type: ignore[index]
        assert _remote_status(remote)["host"]["relay"] == public  # type: ignore[index]
        hosts = {h["name"]: h for h in tether_json(client, "hosts", "--json")}
        assert hosts["box"]["relay"] == public and hosts["box"]["online"] is True
        assert hosts["box"]["linked_from"] == hosts["desktop"]["id"]
    finally:
        up.stop()
        remove(home, workspace, client)
