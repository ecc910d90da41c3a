"""The CLI as a person uses it: `tether up`, status, devices, attach, interrupt, bad input."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.procs import TETHER, Proc, free_port, login, remove, short_home, tether, tether_json
from tests.support.deployment import Deployment

pytestmark = pytest.mark.slow



def _wait_output(home: Path, session_id: str, needle: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        lines = tether(home, "sessions", "events", session_id, "--json").stdout.splitlines()
        text = "".join(json.loads(x)["data"].get("data", "") for x in lines if '"session.output"' in x)
        if needle in text:
            return text
        time.sleep(0.3)
    raise AssertionError(f"{needle!r} not in {text!r}")


def test_up_pairs_runs_and_stops_cleanly() -> None:
    home, workspace, client = short_home("tu"), short_home("tw"), short_home("tc")
    port = free_port()
    up = Proc([*TETHER, "--home", str(home), "up", "--listen", f"127.0.0.1:{port}", "--workspace", str(workspace)],
              name="up")
    try:
        up.wait_for("tether is up")
        link = re.search(r"http://127\.0\.0\.1:\d+/#pair=\S+", up.out)
        assert link, up.out
        assert "▀" in up.out or "█" in up.out, "a QR code is printed"
        assert "only this machine can open" in up.log, "it warns that a loopback link cannot reach a phone"
        login(client, link.group(0))
        sid = tether_json(client, "sessions", "start", "--json", "--", "bash")["id"]
        tether(client, "sessions", "send", sid, "echo up-$((40+2))")
        _wait_output(client, sid, "up-42")
        status = tether_json(home, "status", "--json")
        assert status["host"]["connected"] is True
        assert status["host"]["relay"] == f"ws://127.0.0.1:{port}"
        up.popen.send_signal(signal.SIGINT)
        assert up.popen.wait(15) == 0
        assert "stopped." in up.log
    finally:
        up.stop()
        remove(home, workspace, client)


def test_status_devices_and_revoke(deployment: Deployment, client_home: Path) -> None:
    host_id = deployment.pair(client_home)
    sock = deployment.host_home / "host" / "daemon.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE((client_home / "client" / "keys.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((deployment.host_home / "host" / "keys.json").stat().st_mode) == 0o600

    status = tether_json(deployment.host_home, "status", "--json")
    assert status["host"]["id"] == host_id and status["host"]["name"] == "test-host"
    client_status = tether_json(client_home, "status", "--json")
    assert "host" not in client_status
    assert client_status["hosts"][0]["id"] == host_id and client_status["hosts"][0]["online"] is True
    human = tether(deployment.host_home, "status").stdout
    assert "connected" in human and host_id in human

    [device] = tether_json(deployment.host_home, "devices", "list", "--json")
    assert device["name"] == "test-client" and device["scopes"] == ["read", "prompt", "approve"]
    # A device without the admin scope cannot list devices through the relay.
    refused = tether(client_home, "devices", "list", check=False)
    assert refused.returncode == 1 and "lacks the 'admin' scope" in refused.stderr

    tether(deployment.host_home, "devices", "rename", device["id"], "phone")
    tether(deployment.host_home, "devices", "revoke", device["id"])
    [device] = tether_json(deployment.host_home, "devices", "list", "--json")
    assert device["name"] == "phone" and device["revoked"]
    result = tether(client_home, "sessions", "list", check=False, timeout=30)
    assert result.returncode == 1 and "not authorised" in result.stderr


def test_attach_and_interrupt(deployment: Deployment, client_home: Path) -> None:
    deployment.pair(client_home)
    sid = tether_json(client_home, "sessions", "start", "--json", "--", "bash")["id"]
    tether(client_home, "sessions", "send", sid, "echo first-$((1+1))")
    _wait_output(client_home, sid, "first-2")
    # Attach with piped stdin: it prints the scrollback, forwards keys, and Ctrl-] detaches.
    attach = subprocess.run(
        [*TETHER, "--home", str(client_home), "sessions", "attach", sid],
        input=b"echo attached-$((2+3))\n", capture_output=True, timeout=30,
    )
    assert attach.returncode == 0, attach.stderr
    assert b"first-2" in attach.stdout
    _wait_output(client_home, sid, "attached-5")
    tether(client_home, "sessions", "send", sid, "sleep 60; echo not-interrupted")
    time.sleep(0.5)
    tether(client_home, "sessions", "interrupt", sid)
    tether(client_home, "sessions", "send", sid, "echo after-$((3+4))")
    text = _wait_output(client_home, sid, "after-7")
    assert "not-interrupted\r\n" not in text.replace("echo not-interrupted", "")
    tether(client_home, "sessions", "send", sid, "exit 3")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        [session] = tether_json(client_home, "sessions", "list", "--json")
        if session["status"] != "running":
            break
        time.sleep(0.3)
    assert session["status"] == "failed" and session["exit_code"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["relay", "--listen", "nonsense"], "bad listen address"),
        (["pair", "--scopes", "read,root"], "unknown scope 'root'"),
        (["pair", "--ttl", "soon"], "bad duration"),
        (["login", "https://example.invalid/#pair=a.b.c.d"], "refused to use a pairing link given on the command"),
        (["host", "--relay", "ftp://x"], "is not a relay URL"),
        (["sessions", "start"], "no command given"),
        (["sessions", "events", "--since", "-1"], "--since must be 0 or more"),
        (["sessions", "answer", "s_x", "ap_x", "blue"], "'blue' is not PART=ANSWER"),
        (["sessions", "answer", "s_x", "ap_x", "=blue"], "'=blue' is not PART=ANSWER"),
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], message: str) -> None:
    home = short_home("tb")
    try:
        result = tether(home, *args, check=False)
        assert result.returncode == 2, result
        assert message in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        remove(home)


def test_version_is_the_installed_distributions() -> None:
    result = subprocess.run([*TETHER, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"tether {importlib.metadata.version('tether')}\n"


def test_no_host_anywhere_says_what_to_do() -> None:
    home = short_home("tn")
    try:
        result = tether(home, "sessions", "list", check=False)
        assert result.returncode == 2
        assert "tether up" in result.stderr and "tether login" in result.stderr
        result = tether(home, "pair", check=False)
        assert result.returncode == 1 and "no host daemon is running" in result.stderr
    finally:
        remove(home)


def test_config_show_redacts_secrets_and_bad_config_names_the_line() -> None:
    home = short_home("tg")
    try:
        (home / "config.toml").write_text('[agents.builtin]\napi_key = "sk-live-123"\nmodel = "m"\n')
        shown = tether_json(home, "config", "show", "--json")
        assert shown["agents"]["builtin"]["api_key"] == "<redacted>"
        human = tether(home, "config", "show").stdout
        assert "sk-live-123" not in human and "model=m" in human
        (home / "config.toml").write_text('[agents.builtin]\nmodel = "m"\nsandbox = "open"\n')
        bad = tether(home, "config", "show", check=False)
        assert bad.returncode == 1
        assert "config.toml:3: agents.builtin.sandbox: unknown sandbox 'open'" in bad.stderr
    finally:
        remove(home)


def test_up_over_tls(tmp_path: Path) -> None:
    from tests.relay.test_tls_and_static import self_signed

    cert, key = self_signed(tmp_path)
    home, workspace, client = short_home("tu"), short_home("tw"), short_home("tc")
    port = free_port()
    up = Proc([*TETHER, "--home", str(home), "up", "--listen", f"127.0.0.1:{port}", "--workspace", str(workspace),
               "--public-url", f"https://localhost:{port}", "--tls-cert", str(cert), "--tls-key", str(key)],
              name="up-tls")
    try:
        up.wait_for("tether is up")
        link = re.search(rf"https://localhost:{port}/#pair=\S+", up.out)
        assert link, up.out
        trust = {**os.environ, "SSL_CERT_FILE": str(cert)}
        paired = subprocess.run([*TETHER, "--home", str(client), "login"], capture_output=True, text=True,
                                env={**trust, "TETHER_PAIR_LINK": link.group(0)}, timeout=60)
        assert paired.returncode == 0, paired.stderr
        hosts = subprocess.run([*TETHER, "--home", str(client), "hosts", "--json"], env=trust,
                               capture_output=True, text=True, timeout=60)
        assert json.loads(hosts.stdout)[0]["online"] is True
        # A client that does not trust the certificate is refused before anything else.
        untrusted = tether(client, "hosts", "--json", check=False)
        assert json.loads(untrusted.stdout)[0]["online"] is False
    finally:
        up.stop()
        remove(home, workspace, client)
