"""The parts of `tether ssh` that need no SSH server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tether.errors import UsageError
from tether.sshremote.connect import SshOptions, Target, known_hosts_name, sh_path
from tether.sshremote.deploy import Probe, check_python, local_wheels
from tether.sshremote.errors import RemotePythonError
from tether.sshremote.registry import Registry, RemoteRecord
from tether.sshremote.tunnel import RelayAddress


def test_targets() -> None:
    assert Target.parse("me@box", port=2222) == Target("box", "me", 2222)
    assert Target.parse("box").label() == "box"
    assert Target.parse("me@box", port=2222, identity="/k").ssh_command() == "ssh -p 2222 -i /k me@box"
    for bad in ("", "@box", "me@", "me box"):
        with pytest.raises(UsageError):
            Target.parse(bad)
    with pytest.raises(UsageError):
        Target.parse("box", port=70000)
    assert known_hosts_name("h", 22) == "h" and known_hosts_name("h", 2222) == "[h]:2222"


def test_paths_for_the_remote_shell() -> None:
    assert sh_path("~") == '"$HOME"'
    assert sh_path("~/.tether/venv") == '"$HOME"/.tether/venv'
    assert sh_path("/opt/x y") == "'/opt/x y'"


def test_options_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TETHER_SSH_KNOWN_HOSTS", str(tmp_path / "kh"))
    monkeypatch.delenv("TETHER_SSH_CONFIG", raising=False)
    options = SshOptions.resolve()
    assert options.known_hosts == tmp_path / "kh" and options.config is None
    assert SshOptions.resolve(known_hosts="/x").known_hosts == Path("/x")


def test_python_checks_say_what_is_missing() -> None:
    def probe(path: str | None, version: tuple[int, ...] | None, venv: bool = True) -> Probe:
        return Probe("/home/me", path, version, venv, None)

    assert check_python(probe("/usr/bin/python3", (3, 11, 2)), "python3", "box") == "Python 3.11.2 (/usr/bin/python3)"
    with pytest.raises(RemotePythonError, match="python3 was not found on box"):
        check_python(probe(None, None), "python3", "box")
    with pytest.raises(RemotePythonError, match=r"box has Python 3\.9\.2 .* needs Python 3\.11"):
        check_python(probe("/usr/bin/python3", (3, 9, 2)), "python3", "box")
    with pytest.raises(RemotePythonError, match="lacks the venv module") as info:
        check_python(probe("/usr/bin/python3", (3, 12, 1), venv=False), "python3", "box")
    assert info.value.hint is not None and "python3.12-venv" in info.value.hint


def test_wheel_dir_needs_exactly_one_tether(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no wheels"):
        local_wheels(tmp_path)
    (tmp_path / "dep-1.0-py3-none-any.whl").write_bytes(b"x")
    with pytest.raises(UsageError, match="exactly one wheel of tether"):
        local_wheels(tmp_path)
    (tmp_path / "tether-0.1.0-py3-none-any.whl").write_bytes(b"y")
    wheels = local_wheels(tmp_path)
    assert wheels.tether.name.startswith("tether-") and len(wheels.files) == 2 and wheels.offline


def test_relay_address_for_the_tunnel() -> None:
    plain = RelayAddress.parse("http://127.0.0.1:8765")
    assert (plain.host, plain.port, plain.tls) == ("127.0.0.1", 8765, False)
    assert plain.remote_url(4000) == "ws://127.0.0.1:4000/ws"
    tls = RelayAddress.parse("https://relay.example.com")
    assert (tls.port, tls.tls) == (443, True)


def _record(name: str, host: str = "box", **kw: object) -> RemoteRecord:
    base: dict[str, object] = dict(
        name=name, host=host, user="me", port=None, identity=None, remote_home="~/.tether", python="python3",
        mode="relay", relay_url="ws://r", workspaces=[], host_id="h" * 20, static_public="s", state="running",
    )
    base.update(kw)
    return RemoteRecord(**base)  # type: ignore[arg-type]


def test_registry_keeps_one_entry_per_place(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.save(_record("box"))
    registry.save(_record("renamed"))  # same place, new name: replaces
    registry.save(_record("other", host="other"))
    assert sorted(r.name for r in registry.load()) == ["other", "renamed"]
    assert (tmp_path / "host" / "remotes.json").stat().st_mode & 0o777 == 0o600
    registry.set_state("other", "stopped")
    assert registry.get("other").state == "stopped"
    with pytest.raises(UsageError, match="no remote host named"):
        registry.get("nope")


def test_a_reused_pid_is_never_taken_for_the_daemon() -> None:
    import subprocess

    from tether.sshremote.remote import _alive

    other = subprocess.Popen(["sleep", "30"])
    try:
        assert not _alive(other.pid)
    finally:
        other.kill()
        other.wait()


def test_a_remote_is_reached_later_with_the_files_it_was_first_reached_with(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TETHER_SSH_KNOWN_HOSTS", raising=False)
    monkeypatch.delenv("TETHER_SSH_CONFIG", raising=False)
    # The daemon names no files: the record's win over the defaults.
    later = SshOptions.resolve().saved_with(str(tmp_path / "kh"), str(tmp_path / "cfg"))
    assert (later.known_hosts, later.config) == (tmp_path / "kh", tmp_path / "cfg")
    # Files named now (option or environment) win over the record's.
    named = SshOptions.resolve(known_hosts="/now").saved_with(str(tmp_path / "kh"), None)
    assert named.known_hosts == Path("/now") and named.config is None
    monkeypatch.setenv("TETHER_SSH_CONFIG", "/env-cfg")
    assert SshOptions.resolve().saved_with(None, str(tmp_path / "cfg")).config == Path("/env-cfg")
    # Relative names are made absolute, so a daemon in another directory finds the same file.
    assert SshOptions.resolve(known_hosts="rel/kh").known_hosts == Path.cwd() / "rel" / "kh"


async def test_the_keeper_follows_the_registry_and_says_why_a_tunnel_is_not_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import socket

    from tether.errors import TetherError
    from tether.sshremote import keeper

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    registry = Registry(tmp_path)
    registry.save(_record("relayed"))
    tunneled = _record("tun", host="127.0.0.1")
    tunneled.mode, tunneled.port, tunneled.relay_url = "tunnel", closed_port, "ws://127.0.0.1:1"
    tunneled.known_hosts = str(tmp_path / "known_hosts")
    registry.save(tunneled)
    monkeypatch.setattr(keeper, "HOLD_TIMEOUT", 1.0)
    k = keeper.TunnelKeeper(tmp_path)
    try:
        with pytest.raises(UsageError, match="no tunnel-mode remote host named 'relayed'"):
            await k.hold("relayed")
        with pytest.raises(TetherError, match=r"did not come up in 1 s \(SSH connection failed") as caught:
            await k.hold("tun")
        assert caught.value.hint and "keeps trying" in caught.value.hint
        [held] = k.tunnels()
        assert (held["name"], held["state"], held["port"]) == ("tun", "failed", None)
        assert "SSH connection failed" in str(held["detail"])
        task = k._held["tun"].task
        registry.set_state("tun", "stopped")
        k.reconcile()
        assert "tun" not in k._held
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        for held in k._held.values():
            held.task.cancel()


async def test_a_tunnel_task_that_fails_is_started_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tether.sshremote import keeper

    registry = Registry(tmp_path)
    record = _record("tun")
    record.mode = "tunnel"
    registry.save(record)
    runs: list[str] = []

    async def broken(self: keeper.TunnelKeeper, name: str) -> None:
        runs.append(name)
        raise RuntimeError("a bug in the tunnel")

    monkeypatch.setattr(keeper.TunnelKeeper, "_hold", broken)
    k = keeper.TunnelKeeper(tmp_path)
    k.reconcile()
    await asyncio.sleep(0.05)
    assert runs == ["tun"] and "tun" not in k._held
    assert "a bug in the tunnel" in caplog.text
    k.reconcile()  # the registry did not change, but the failed tunnel is wanted again
    await asyncio.sleep(0.05)
    assert runs == ["tun", "tun"]
