"""``tether relay``'s limit flags reach the relay's RelayLimits."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import tether.relay.server as relay_server
from tests.procs import tether
from tether.cli.main import app
from tether.errors import TetherError, UsageError
from tether.relay.limits import RelayLimits
from tether.relay.mailbox import Mailbox, MailboxLimits


class _Stop(UsageError):
    pass


def run_relay_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[Any, list[RelayLimits]]:
    """Invoke ``tether relay ARGS`` with a stand-in server that records its limits (and its
    mailbox, in ``mailboxes``) and stops; the home is a new temporary directory."""
    seen: list[RelayLimits] = []

    class FakeServer:
        def __init__(self, *, limits: RelayLimits | None = None, mailbox: Mailbox | None = None, **_: object) -> None:
            seen.append(limits or RelayLimits())
            mailboxes.append(mailbox)

        async def start(self, host: str, port: int) -> int:
            raise _Stop("stopped by the test")

        async def close(self) -> None:
            pass

    mailboxes.clear()
    monkeypatch.setenv("TETHER_HOME", tempfile.mkdtemp(prefix="tether-cli-relay-"))
    monkeypatch.setattr(relay_server, "RelayServer", FakeServer)
    result = CliRunner().invoke(app, ["relay", "--listen", "127.0.0.1:0", *args])
    return result, seen


mailboxes: list[Mailbox | None] = []


def said(result: Any) -> str:
    """What the command told the user: its output, or the TetherError ``main()`` would print."""
    exc = result.exception
    text = result.output
    if isinstance(exc, TetherError):
        text += f"{exc.message}\n{exc.hint or ''}"
    return str(text)


def test_defaults_are_relay_limits_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    result, seen = run_relay_cli(monkeypatch)
    assert "stopped by the test" in result.output
    assert seen == [RelayLimits()]


def test_the_mailbox_is_kept_in_the_home_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    run_relay_cli(monkeypatch, "--mailbox-host-bytes", "100000")
    [box] = mailboxes
    assert box is not None and box.limits == MailboxLimits(host_bytes=100_000)
    assert box.db.path == Path(os.environ["TETHER_HOME"]) / "relay" / "mailbox.db"
    assert box.db.path.parent.stat().st_mode & 0o777 == 0o700
    run_relay_cli(monkeypatch, "--no-mailbox")
    assert mailboxes == [None]
    result, _ = run_relay_cli(monkeypatch, "--mailbox-host-bytes", "10")
    assert result.exit_code != 0 and "--mailbox-host-bytes" in result.output


def test_limit_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    result, seen = run_relay_cli(
        monkeypatch,
        "--max-frames-per-second",
        "500",
        "--channel-queue-bytes",
        "65536",
        "--connection-queue-bytes",
        "1048576",
    )
    assert "stopped by the test" in result.output, result.output
    [limits] = seen
    assert limits.frames_per_second == 500
    assert limits.frames_burst == 1000
    assert limits.channel_queue_bytes == 65536
    assert limits.connection_queue_bytes == 1 << 20
    assert limits.opens_per_minute == RelayLimits().opens_per_minute


@pytest.mark.parametrize("flag", ["--max-frames-per-second", "--channel-queue-bytes", "--connection-queue-bytes"])
def test_limits_must_be_positive(monkeypatch: pytest.MonkeyPatch, flag: str) -> None:
    result, seen = run_relay_cli(monkeypatch, flag, "0")
    assert result.exit_code == 2
    assert seen == []


def test_hardening_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    result, seen = run_relay_cli(
        monkeypatch,
        "--max-connections-per-ip", "0",
        "--connections-per-ip-per-second", "5",
        "--max-connections-per-device", "3",
        "--handshake-timeout", "2.5",
        "--idle-timeout", "0",
        "--exempt-loopback",
    )
    assert "stopped by the test" in result.output, result.output
    [limits] = seen
    assert limits.max_connections_per_ip == 0
    assert limits.connections_per_ip_per_second == 5
    assert limits.max_connections_per_device == 3
    assert limits.handshake_timeout == 2.5
    assert limits.idle_timeout is None
    assert limits.exempt_loopback and not limits.trust_forwarded_for


def test_loopback_is_limited_unless_exempted_explicitly() -> None:
    assert not RelayLimits().exempt_loopback
    assert RelayLimits().max_connections_per_ip == 256


def test_exempt_loopback_and_forwarded_for_exclude_each_other(monkeypatch: pytest.MonkeyPatch) -> None:
    result, seen = run_relay_cli(monkeypatch, "--exempt-loopback", "--trust-forwarded-for")
    assert "exclude each other" in said(result)
    assert seen == []


def test_enroll_key_is_created_then_loaded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tether.relay.enrollment import load_enroll_key

    path = tmp_path / "relay.key"
    result, _ = run_relay_cli(monkeypatch, "--enroll-key", str(path))
    assert "does not exist" in said(result) and "--create-enroll-key" in said(result)
    result, _ = run_relay_cli(monkeypatch, "--enroll-key", str(path), "--create-enroll-key")
    assert "created enrollment key" in result.output, result.output
    key = load_enroll_key(path)
    result, _ = run_relay_cli(monkeypatch, "--enroll-key", str(path), "--create-enroll-key")
    assert "created" not in result.output and "stopped by the test" in result.output
    assert load_enroll_key(path) == key  # an existing key is used, never replaced
    result, _ = run_relay_cli(monkeypatch, "--create-enroll-key")
    assert "needs --enroll-key" in said(result)


def test_host_refuses_a_bad_enroll_key_file_before_starting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    bad.chmod(0o600)  # else it is refused for its mode first (test_local_users.py)
    result = CliRunner().invoke(
        app, ["--home", str(tmp_path / "h"), "host", "--relay", "ws://127.0.0.1:9", "--enroll-key", str(bad)]
    )
    assert "is not a tether enrollment key" in said(result)
    assert "not a key" not in said(result).replace("is not a tether", "")
    assert not (tmp_path / "h").exists()


def test_a_port_in_use_is_said_with_what_to_do_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = tether(tmp_path, "relay", "--listen", f"127.0.0.1:{port}", check=False, timeout=30)
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--listen" in result.stderr
    assert "Traceback" not in result.stderr
