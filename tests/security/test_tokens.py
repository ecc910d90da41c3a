"""Access tokens through real processes (relay, host, CLI, SDK): scopes hold, no escalation,
revocation and expiry take effect at once, every action and refusal is audited, and the token
never appears in the host's log or the client's."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.procs import TETHER, tether, tether_json
from tests.security.conftest import audit_entries
from tests.support.deployment import Deployment
from tether.client.connection import connect_local, connect_token
from tether.client.sdk import Client
from tether.crypto.tokens import parse_token
from tether.errors import TetherError
from tether.protocol.methods import METHOD_SCOPES
from tether.protocol.scopes import Scope

pytestmark = pytest.mark.slow

SCRIPT = """
import asyncio, json, sys
import tether

async def main():
    client = tether.Client.from_token(sys.argv[1])
    try:
        print(json.dumps({"sessions": await client.sessions()}), flush=True)
        sid = await client.start_session(["bash"])
        print(json.dumps({"started": sid}), flush=True)
        sys.stdin.readline()  # the host revokes the token now
        try:
            await client.sessions()
            print(json.dumps({"after": "still works"}), flush=True)
        except tether.errors.TetherError as exc:
            print(json.dumps({"after": str(exc), "code": exc.code}), flush=True)
    finally:
        await client.close()

asyncio.run(main())
"""


def _create(deployment: Deployment, scopes: str, *extra: str) -> dict[str, Any]:
    created: dict[str, Any] = tether_json(
        deployment.host_home, "tokens", "create", "--scopes", scopes, "--json", *extra
    )
    return created


def _as_token(token: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*TETHER, "--home", "/nonexistent-tether-home", *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, "TETHER_TOKEN": token},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"tether {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def _assert_never_shown(token: str, *texts: str) -> None:
    secret = token[len("tth_") :]
    for text in texts:
        assert secret[:24] not in text and secret[-24:] not in text


def test_token_round_trip_through_the_sdk_in_a_script(deployment: Deployment, tmp_path: Path) -> None:
    created = _create(deployment, "read,prompt", "--name", "ci-script")
    assert set(created) >= {"id", "token", "expires_at"}
    assert 29 * 86400 < created["expires_at"] - time.time() <= 30 * 86400 + 5
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), created["token"]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=str(tmp_path),
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert json.loads(proc.stdout.readline()) == {"sessions": []}
        sid = json.loads(proc.stdout.readline())["started"]
        [session] = tether_json(deployment.host_home, "sessions", "list", "--json")
        assert session["id"] == sid
        tether(deployment.host_home, "tokens", "revoke", created["id"])
        proc.stdin.write("go\n")
        proc.stdin.flush()
        after = json.loads(proc.stdout.readline())
        assert "revoked" in after["after"], after
        assert proc.wait(30) == 0
        stderr = proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
    [listed] = tether_json(deployment.host_home, "tokens", "list", "--json")
    assert listed["id"] == created["id"] and listed["status"] == "revoked" and listed["name"] == "ci-script"
    assert "token" not in listed and "seed" not in json.dumps(listed)
    entries = [(e["actor"]["id"], e["method"], e["result"]) for e in audit_entries(deployment)]
    for expected in [
        ("local", "tokens.create", "ok"),
        (created["id"], "channel.open", "ok"),
        (created["id"], "sessions.list", "ok"),
        (created["id"], "sessions.start", "ok"),
        ("local", "tokens.revoke", "ok"),
    ]:
        assert expected in entries, (expected, entries)
    _assert_never_shown(created["token"], deployment.host.log, stderr, json.dumps(audit_entries(deployment)))
    db = (deployment.host_home / "host" / "state.db").read_bytes()
    assert parse_token(created["token"]).seed not in db, "the host never stores the secret"


async def test_revoked_token_live_channel_closes_within_a_second(
    deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = _create(deployment, "read")
    token = parse_token(created["token"])
    conn = await connect_token(token)
    owner = await connect_local(deployment.host_home)
    try:
        await conn.subscribe(0)
        start = time.monotonic()
        await owner.call("tokens.revoke", {"id": created["id"]})
        while not conn.closed and time.monotonic() - start < 1.0:
            await asyncio.sleep(0.01)
        assert conn.closed, "the revoked token's channel is still open after 1 s"
        with pytest.raises(TetherError) as info:
            await conn.call("host.info")
        assert "revoked" in info.value.message
        with pytest.raises(TetherError) as again:
            await connect_token(token)
        assert "revoked" in again.value.message and "tether tokens create" in (again.value.hint or "")
    finally:
        await conn.close()
        await owner.close()
    _assert_never_shown(created["token"], caplog.text, deployment.host.log)


async def test_expired_token_is_refused_and_its_live_channel_ends(deployment: Deployment) -> None:
    owner = await connect_local(deployment.host_home)
    try:
        # The host accepts a TTL of a few seconds (the CLI asks for a minute at least).
        created = await owner.call("tokens.create", {"scopes": ["read"], "ttl": 2, "name": "short"})
    finally:
        await owner.close()
    token = parse_token(created["token"])
    conn = await connect_token(token)
    try:
        assert (await conn.call("host.info"))["scopes"] == ["read"]
        await asyncio.sleep(max(0.0, created["expires_at"] - time.time()) + 1.0)
        assert conn.closed, "an expired token's live channel is closed by the host"
    finally:
        await conn.close()
    with pytest.raises(TetherError) as info:
        await connect_token(token)
    assert "this token expired on" in info.value.message
    result = _as_token(created["token"], "sessions", "list", check=False)
    assert result.returncode == 1 and "this token expired on" in result.stderr and "Traceback" not in result.stderr
    [listed] = tether_json(deployment.host_home, "tokens", "list", "--json")
    assert listed["status"] == "expired"


@pytest.mark.parametrize("scopes", ["read", "prompt"])
async def test_each_scope_is_refused_every_method_it_lacks(deployment: Deployment, scopes: str) -> None:
    created = _create(deployment, scopes, "--name", f"only-{scopes}")
    held = {Scope(scopes)}
    async with Client.from_token(created["token"]) as client:
        refused = []
        for method, needed in METHOD_SCOPES.items():
            if needed in held:
                continue
            with pytest.raises(TetherError) as info:
                await client.call(method, {})
            assert info.value.code == "forbidden", (method, info.value)
            assert f"lacks the {needed.value!r} scope" in info.value.message
            assert "tether tokens create" in (info.value.hint or "")
            refused.append(method)
    assert refused
    entries = audit_entries(deployment)
    audited = {e["method"] for e in entries if e["actor"]["id"] == created["id"] and e["result"] == "forbidden"}
    assert audited == set(refused)


async def test_no_escalation_through_tokens_or_pairing(deployment: Deployment, client_home: Path) -> None:
    deployment.pair(client_home, "--scopes", "read")  # within the admin token's grant: it may revoke it
    [device] = tether_json(deployment.host_home, "devices", "list", "--json")
    reader = _create(deployment, "read", "--name", "reader")
    prompter = _create(deployment, "prompt", "--name", "prompter")
    admin = _create(deployment, "read,admin", "--name", "ci-admin", "--ttl", "1h")
    async with Client.from_token(reader["token"]) as client:
        with pytest.raises(TetherError) as info:
            await client.call("tokens.create", {"scopes": ["admin"]})
        assert info.value.code == "forbidden"
    async with Client.from_token(prompter["token"]) as client:
        with pytest.raises(TetherError) as info:
            await client.call("pairing.create", {"scopes": ["read"]})
        assert info.value.code == "forbidden"
    async with Client.from_token(admin["token"]) as client:
        # admin, but never wider than itself: no scope it lacks, no longer life, no other workspace.
        for params, needle in [
            ({"scopes": ["prompt"]}, "scopes this caller does not have: prompt"),
            ({"scopes": ["read"], "ttl": 7200}, "outlives it"),
        ]:
            with pytest.raises(TetherError) as info:
                await client.call("tokens.create", params)
            assert info.value.code == "forbidden" and needle in info.value.message
        with pytest.raises(TetherError) as info:
            await client.call("tokens.create", {"scopes": ["read"], "ttl": 60, "workspace": "/"})
        assert info.value.code == "workspace"
        child = await client.call("tokens.create", {"scopes": ["read"], "ttl": 60, "name": "child"})
        assert child["scopes"] == ["read"]
        # devices and tokens administration works for an admin token, on those within its grant
        # (the prompt token is wider than read,admin: not listed).
        assert [d["id"] for d in await client.call("devices.list")] == [device["id"]]
        assert {t["name"] for t in await client.call("tokens.list")} == {"reader", "ci-admin", "child"}
        await client.call("tokens.revoke", {"id": reader["id"]})
        offer = await client.call("pairing.create", {"scopes": ["read"], "ttl": 60})
        assert offer["scopes"] == ["read"]
        with pytest.raises(TetherError) as info:
            await client.call("pairing.create", {"scopes": ["read", "prompt"], "ttl": 60})
        assert info.value.code == "forbidden" and "cannot grant scopes" in info.value.message
        await client.call("devices.rename", {"id": device["id"], "name": "renamed-by-token"})
        await client.call("devices.revoke", {"id": device["id"]})
        entries = (await client.call("audit.list", {}))["entries"]
    results = {(e["actor"]["name"], e["method"], e["result"]) for e in entries}
    for expected in [
        ("reader", "tokens.create", "forbidden"),
        ("prompter", "pairing.create", "forbidden"),
        ("ci-admin", "tokens.create", "forbidden"),
        ("ci-admin", "tokens.create", "workspace"),
        ("ci-admin", "tokens.create", "ok"),
        ("ci-admin", "tokens.revoke", "ok"),
        ("ci-admin", "pairing.create", "ok"),
        ("ci-admin", "pairing.create", "forbidden"),
        ("ci-admin", "devices.revoke", "ok"),
        ("test-client", "pair.complete", "ok"),
    ]:
        assert expected in results, expected
    [device] = tether_json(deployment.host_home, "devices", "list", "--json")
    assert device["name"] == "renamed-by-token" and device["revoked"]
    result = tether(client_home, "sessions", "list", check=False, timeout=30)
    assert result.returncode == 1 and "not authorised" in result.stderr
    _assert_never_shown(child["token"], deployment.host.log)


def test_cli_tokens_and_audit(deployment: Deployment) -> None:
    human = tether(deployment.host_home, "tokens", "create", "--scopes", "read", "--name", "cli")
    token = human.stdout.strip()
    assert parse_token(token) and "shown only this once" in human.stderr
    listed = tether(deployment.host_home, "tokens", "list").stdout
    assert "cli" in listed and "active" in listed and token not in listed
    assert _as_token(token, "sessions", "list", "--json").stdout.strip() == "[]"
    status = json.loads(_as_token(token, "status", "--json").stdout)
    assert status["hosts"][0]["online"] is True
    assert json.loads(_as_token(token, "hosts", "--json").stdout)[0]["id"] == parse_token(token).host_id
    # --token is refused (command lines are visible to other local users), without echoing the token;
    # a mistyped token is a usage error before any network use.
    flag = subprocess.run([*TETHER, "--token", token, "sessions", "list", "--json"], capture_output=True, text=True,
                          timeout=60)
    assert flag.returncode == 2 and "TETHER_TOKEN" in flag.stderr and flag.stdout == "", flag
    assert token[4:] not in flag.stderr
    typo = token[:50] + ("a" if token[50] != "a" else "b") + token[51:]
    bad = _as_token(typo, "sessions", "list", check=False)
    assert bad.returncode == 2 and "mistyped or damaged" in bad.stderr and typo[4:] not in bad.stderr
    for args, message in [
        (["tokens", "create", "--scopes", "read", "--ttl", "10s"], "out of range"),
        (["tokens", "create", "--scopes", "read", "--ttl", "400d"], "out of range"),
        (["tokens", "create", "--scopes", "root"], "unknown scope"),
        (["audit", "--since", "yesterday"], "bad time"),
    ]:
        result = tether(deployment.host_home, *args, check=False)
        assert result.returncode == 2 and message in result.stderr, result
    refused = _as_token(token, "audit", check=False)
    assert refused.returncode == 1 and "lacks the 'admin' scope" in refused.stderr
    recent = tether_json(deployment.host_home, "audit", "--since", "10m", "--json")
    assert recent and all(e["ts"] >= time.time() - 600 for e in recent)
    assert tether_json(deployment.host_home, "audit", "--since", "2999-01-01", "--json") == []
    text = tether(deployment.host_home, "audit").stdout
    assert "token 'cli'" in text and "audit.list" in text and "forbidden" in text
    _assert_never_shown(token, deployment.host.log, text)
