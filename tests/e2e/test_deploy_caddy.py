"""The docs/deploy.md recipe, run for real: a relay behind Caddy terminating TLS (Caddy's own
internal CA stands in for a public one), a host dialing wss:// through it, a client pairing from
the https:// link and running a command, and the web client served over HTTPS."""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import time
import urllib.request
from pathlib import Path

import pytest

from tests.procs import TETHER, Proc, free_port, remove, short_home, start_relay

pytestmark = pytest.mark.slow

CADDYFILE = """{{
	admin off
	skip_install_trust
	auto_https disable_redirects
	storage file_system {storage}
}}
https://localhost:{port} {{
	tls internal
	reverse_proxy 127.0.0.1:{upstream}
}}
"""



def _run(home: Path, env: dict[str, str], *args: str) -> str:
    import subprocess

    result = subprocess.run([*TETHER, "--home", str(home), *args], capture_output=True, text=True, timeout=60,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return result.stdout


def _need_caddy() -> None:
    if shutil.which("caddy") is None:
        if os.environ.get("CI"):
            pytest.fail("caddy is not installed, and CI must run this test (scripts/test installs it)")
        pytest.skip("caddy is not installed (scripts/test installs it)")


def _start_caddy(work: Path, port: int, upstream: int) -> tuple[Proc, dict[str, str]]:
    """Caddy terminating TLS on ``port`` for ``upstream``; returns it and the environment that
    makes a tether process trust its internal CA (what a public CA is to a real phone or host)."""
    (work / "Caddyfile").write_text(CADDYFILE.format(storage=work / "data", port=port, upstream=upstream))
    caddy = Proc(["caddy", "run", "--config", str(work / "Caddyfile"), "--adapter", "caddyfile"], name="caddy",
                 env={"HOME": str(work), "XDG_DATA_HOME": str(work), "XDG_CONFIG_HOME": str(work)})
    root = work / "data" / "pki" / "authorities" / "local" / "root.crt"
    caddy.wait_for("certificate obtained successfully|serving initial configuration", timeout=30)
    deadline = time.monotonic() + 15
    while not root.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return caddy, {"SSL_CERT_FILE": str(root)}


def _run_in_bash(client_home: Path, trust: dict[str, str], command: str, expected: str) -> None:
    sid = json.loads(_run(client_home, trust, "sessions", "start", "--json", "--", "bash"))["id"]
    _run(client_home, trust, "sessions", "send", sid, command)
    text = ""
    for _ in range(60):
        lines = _run(client_home, trust, "sessions", "events", sid, "--json").splitlines()
        text = "".join(json.loads(x)["data"].get("data", "") for x in lines if '"session.output"' in x)
        if expected in text:
            return
        time.sleep(0.3)
    raise AssertionError(f"{expected!r} not in {text!r}")


def test_relay_behind_caddy_over_https() -> None:
    _need_caddy()
    work, host_home, client_home, workspace = short_home("tk"), short_home("th"), short_home("tc"), short_home("tw")
    port = free_port()
    relay, upstream = start_relay(0, "--public-url", f"https://localhost:{port}")
    caddy: Proc | None = None
    host: Proc | None = None
    try:
        caddy, trust = _start_caddy(work, port, upstream)
        host = Proc([*TETHER, "--home", str(host_home), "host", "--relay", f"wss://localhost:{port}",
                     "--workspace", str(workspace)], name="host", env=trust)
        host.wait_for("connected to relay")
        offer = json.loads(_run(host_home, trust, "pair", "--json"))
        assert offer["link"].startswith(f"https://localhost:{port}/#pair=")
        _run(client_home, {**trust, "TETHER_PAIR_LINK": offer["link"]}, "login")
        _run_in_bash(client_home, trust, "echo proxied-$((20+22))", "proxied-42")
        context = ssl.create_default_context(cafile=trust["SSL_CERT_FILE"])
        with urllib.request.urlopen(f"https://localhost:{port}/", context=context, timeout=10) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
    finally:
        for proc in (host, caddy, relay):
            if proc is not None:
                proc.stop()
        remove(work, host_home, client_home, workspace)


def test_tether_up_behind_an_https_tunnel() -> None:
    """Recipe 3: `tether up` on the desktop, an HTTPS proxy/tunnel in front of it (Caddy here, in
    the role Tailscale Serve plays on a tailnet), and --public-url naming the tunnel's URL."""
    _need_caddy()
    work, home, client_home, workspace = short_home("tk"), short_home("tu"), short_home("tc"), short_home("tw")
    port, upstream = free_port(), free_port()
    up = Proc([*TETHER, "--home", str(home), "up", "--listen", f"127.0.0.1:{upstream}", "--workspace", str(workspace),
               "--public-url", f"https://localhost:{port}"], name="up")
    caddy: Proc | None = None
    try:
        up.wait_for("tether is up")
        link = re.search(rf"https://localhost:{port}/#pair=\S+", up.out)
        assert link, up.out
        caddy, trust = _start_caddy(work, port, upstream)
        _run(client_home, {**trust, "TETHER_PAIR_LINK": link.group(0)}, "login")
        _run_in_bash(client_home, trust, "echo tunnel-$((40+2))", "tunnel-42")
    finally:
        if caddy is not None:
            caddy.stop()
        up.stop()
        remove(work, home, client_home, workspace)
