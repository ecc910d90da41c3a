"""Pairing secrets never reach a log: a verbose relay and a verbose host (real processes) create
offers, pair a device, refuse a link used twice and an expired one; the offers' secrets are then
searched, in every spelling, in both logs, in every CLI output but `tether pair`'s own, and in the
client's files. A search that never fails proves nothing, so it must first find the secret in
the `pair` output."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.procs import Proc, login, remove, short_home, start_host, start_relay, tether
from tether.protocol.pairing_link import parse_link

pytestmark = pytest.mark.slow


def _spellings(secret: bytes) -> list[bytes]:
    """The secret as it may be written: the link's base64url, standard base64, hex, base32, a
    bytes repr, the raw bytes (as the host's database holds it) — and any 12-character run of the
    base64 spellings, 16 of hex or 8 bytes of spaced hex, so a truncated secret counts too (each
    about 2^-64 by chance)."""
    b64u = base64.urlsafe_b64encode(secret)
    b64 = base64.b64encode(secret)
    whole = [secret, b64u, b64u.rstrip(b"="), b64, secret.hex().encode(), secret.hex().upper().encode(),
             base64.b32encode(secret), base64.b32encode(secret).lower(), repr(secret)[2:-1].encode()]
    runs = [text[i : i + 12] for text in (b64u.rstrip(b"="), b64.rstrip(b"=")) for i in range(len(text) - 11)]
    hexes = (secret.hex().encode(), secret.hex().upper().encode())
    runs += [text[i : i + 16] for text in hexes for i in range(len(text) - 15)]
    # websockets' debug log shows frames as spaced hex ("47 f0 21 ..."): any 8 bytes of it.
    spaced = secret.hex(" ").encode()
    runs += [spaced[i : i + 23] for i in range(0, len(spaced) - 22, 3)]
    return whole + runs


def _found(secrets: list[bytes], data: bytes) -> list[bytes]:
    return [spelling for secret in secrets for spelling in _spellings(secret) if spelling in data]


def test_pairing_secrets_never_reach_a_log() -> None:
    host_home, workspace, device, thief, late = (short_home(p) for p in ("sh", "sw", "sd", "st", "sl"))
    relay, port = start_relay(0, "--verbose")
    procs: list[Proc] = [relay]
    outputs: dict[str, subprocess.CompletedProcess[str]] = {}
    try:
        host = start_host(host_home, f"ws://127.0.0.1:{port}", workspace, "--verbose")
        procs.append(host)
        pool = ThreadPoolExecutor(4)

        def run_all(**calls: Callable[[], subprocess.CompletedProcess[str]]) -> None:
            futures = {name: pool.submit(call) for name, call in calls.items()}
            outputs.update({name: future.result() for name, future in futures.items()})

        # Two offers: one to be used (then used again), one left to expire.
        run_all(
            pair_used=lambda: tether(host_home, "pair", "--json"),
            pair_expiring=lambda: tether(host_home, "pair", "--ttl", "1s", "--json"),
        )
        used = parse_link(_json(outputs["pair_used"])["link"])
        expiring_offer = _json(outputs["pair_expiring"])
        expiring = parse_link(expiring_offer["link"])
        secrets = [used.secret, expiring.secret]
        assert used.secret != expiring.secret

        run_all(login=lambda: login(device, used.format(), "--name", "phone", "--json"))
        assert _json(outputs["login"])["host_id"] == used.host_id
        time.sleep(max(0.0, expiring_offer["expires_at"] - time.time() + 0.3))
        run_all(
            # --debug: a refusal with a traceback must not carry the link either.
            reused=lambda: tether(thief, "--debug", "login", "-", check=False, timeout=30, input=used.format()),
            expired=lambda: login(late, expiring.format(), check=False, timeout=30),
            audit=lambda: tether(host_home, "audit", "--json"),
        )
        pool.shutdown()
        for refused in ("reused", "expired"):
            assert outputs[refused].returncode == 1, outputs[refused]
            assert "no longer valid" in outputs[refused].stderr, outputs[refused].stderr
        entries = json.loads(outputs["audit"].stdout)
        assert [e["result"] for e in entries if e["method"] == "pair.complete"][:1] == ["ok"]
        assert "paired device 'phone'" in host.log
        assert "DEBUG" in host.log and "DEBUG" in relay.log  # verbose really was on
    finally:
        for proc in procs:
            proc.stop()
        remove(host_home, workspace, thief, late)

    try:
        # The search works: both secrets are in `tether pair`'s output, where they belong.
        for secret, name in zip(secrets, ("pair_used", "pair_expiring"), strict=True):
            assert _found([secret], outputs[name].stdout.encode())
        places: dict[str, bytes] = {}
        for proc in procs:
            places[f"{proc.name} log"] = proc.log_path.read_bytes()
            places[f"{proc.name} stdout"] = proc.out_path.read_bytes()
        for name, result in outputs.items():
            if not name.startswith("pair_"):
                places[f"`{name}` stdout"] = result.stdout.encode()
                places[f"`{name}` stderr"] = result.stderr.encode()
        for path in device.rglob("*"):
            if path.is_file():
                places[f"client file {path.relative_to(device)}"] = path.read_bytes()
        assert len(places["host log"]) > 1000 and len(places["relay log"]) > 1000
        leaks = {name: _found(secrets, data) for name, data in places.items()}
        assert not any(leaks.values()), {name: hits[:3] for name, hits in leaks.items() if hits}
    finally:
        remove(device)
        for proc in procs:
            proc.log_path.unlink(missing_ok=True)
            proc.out_path.unlink(missing_ok=True)


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    value = json.loads(result.stdout)
    assert isinstance(value, dict)
    return value
