"""Bundles of inherited devices: made, signed, verified, installed and watched (no SSH here)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import msgspec
import pytest

from tether.agents.policy import Approval, Policy, Sandbox
from tether.crypto.keys import Identity
from tether.host.inheritance import (
    BUNDLE_FILE,
    Inheritance,
    InheritanceError,
    SignedBundle,
    install_bundle,
    load_bundle,
    make_bundle,
    verify_bundle,
)
from tether.host.store import Device


def _device(name: str, scopes: list[str], *, revoked: bool = False) -> tuple[Device, Identity]:
    ident = Identity.generate()
    device = Device(ident.id, name, ident.identity_public, ident.static_public, scopes, None, time.time(), None,
                    time.time() if revoked else None)
    return device, ident


DESKTOP = Identity.generate()
REMOTE = Identity.generate()
PHONE, _ = _device("phone", ["read", "prompt", "approve"])
LAPTOP, _ = _device("laptop", ["read"])
GONE, _ = _device("old", ["read"], revoked=True)
POLICY = {"builtin": Policy(Approval.ON_REQUEST, Sandbox.WORKSPACE_WRITE)}


def _bundle(devices: list[Device] | None = None, **kw: object) -> bytes:
    return make_bundle(
        DESKTOP, parent_name="desktop", host_id=REMOTE.id,
        devices=[PHONE, LAPTOP, GONE] if devices is None else devices, policy=POLICY, **kw,  # type: ignore[arg-type]
    )


def test_round_trip_keeps_grants_and_drops_revoked_devices() -> None:
    bundle = verify_bundle(_bundle(), host_id=REMOTE.id)
    assert [d.id for d in bundle.devices] == [PHONE.id, LAPTOP.id]
    assert bundle.devices[0].scopes == ["read", "prompt", "approve"]
    assert bundle.device_by_static(PHONE.static_public) == bundle.devices[0]
    assert bundle.device_by_static(GONE.static_public) is None
    assert bundle.allowlist() == [PHONE.identity_public, LAPTOP.identity_public]
    assert bundle.parent_id == DESKTOP.id


def test_policy_is_a_ceiling() -> None:
    bundle = verify_bundle(_bundle(), host_id=REMOTE.id)
    loose = Policy(Approval.NEVER, Sandbox.FULL_ACCESS)
    assert bundle.cap("builtin", loose) == POLICY["builtin"]
    strict = Policy(Approval.UNTRUSTED, Sandbox.READ_ONLY)
    assert bundle.cap("builtin", strict) == strict
    # An agent the desktop has no policy for gets the strictest.
    assert bundle.cap("codex", loose) == strict


def _tamper(data: bytes, change: dict[str, object]) -> bytes:
    signed = msgspec.json.decode(data, type=SignedBundle)
    body = json.loads(signed.body)
    body.update(change)
    return msgspec.json.encode(SignedBundle(json.dumps(body).encode(), signed.signature))


def test_refusals_are_clear() -> None:
    data = _bundle()
    with pytest.raises(InheritanceError, match="bad signature"):
        verify_bundle(_tamper(data, {"issued_at": 1.0}), host_id=REMOTE.id)
    with pytest.raises(InheritanceError, match="not this host"):
        verify_bundle(data, host_id=Identity.generate().id)
    with pytest.raises(InheritanceError, match="not the one this host inherits from"):
        verify_bundle(data, host_id=REMOTE.id, parent_identity=Identity.generate().identity_public)
    with pytest.raises(InheritanceError, match="not valid JSON"):
        verify_bundle(b"{nope", host_id=REMOTE.id)
    with pytest.raises(InheritanceError, match="malformed"):
        verify_bundle(b'{"body": "", "signature": 3}', host_id=REMOTE.id)
    with pytest.raises(InheritanceError, match="expired"):
        verify_bundle(_bundle(expires_at=time.time() - 1), host_id=REMOTE.id)
    # Signed by another key that claims to be the desktop.
    forged = make_bundle(Identity.generate(), parent_name="desktop", host_id=REMOTE.id, devices=[PHONE], policy={})
    forged = _tamper(forged, {"parent_id": DESKTOP.id})
    with pytest.raises(InheritanceError, match="does not match its key"):
        verify_bundle(forged, host_id=REMOTE.id)


def test_install_pins_the_desktop_and_refuses_old_or_foreign_bundles(tmp_path: Path) -> None:
    assert load_bundle(tmp_path, REMOTE.id) is None
    first = _bundle(issued_at=100.0)
    install_bundle(tmp_path, first, host_id=REMOTE.id)
    assert (tmp_path / "host" / BUNDLE_FILE).stat().st_mode & 0o777 == 0o600
    with pytest.raises(InheritanceError, match="older"):
        install_bundle(tmp_path, _bundle([PHONE], issued_at=50.0), host_id=REMOTE.id)
    # An older bundle that grants the same (two desktop runs at once) changes nothing, quietly.
    assert install_bundle(tmp_path, _bundle(issued_at=50.0), host_id=REMOTE.id).issued_at == 100.0
    other = make_bundle(Identity.generate(), parent_name="evil", host_id=REMOTE.id, devices=[PHONE], policy={})
    with pytest.raises(InheritanceError, match="not the one this host inherits from"):
        install_bundle(tmp_path, other, host_id=REMOTE.id)
    newer = install_bundle(tmp_path, _bundle([PHONE], issued_at=200.0), host_id=REMOTE.id)
    assert [d.id for d in newer.devices] == [PHONE.id]
    loaded = load_bundle(tmp_path, REMOTE.id)
    assert loaded is not None and loaded.issued_at == 200.0


async def test_watch_reports_revoked_devices_and_fails_closed(tmp_path: Path) -> None:
    install_bundle(tmp_path, _bundle(issued_at=100.0), host_id=REMOTE.id)
    inh = Inheritance(tmp_path, REMOTE.id)
    assert inh.load() == set()
    assert inh.device_by_static(LAPTOP.static_public) is not None
    changes: asyncio.Queue[set[str]] = asyncio.Queue()

    async def on_change(removed: set[str]) -> None:
        await changes.put(removed)

    task = asyncio.create_task(inh.watch(on_change, interval=0.02))
    try:
        install_bundle(tmp_path, _bundle([PHONE], issued_at=200.0), host_id=REMOTE.id)
        assert await asyncio.wait_for(changes.get(), 5) == {LAPTOP.id}
        assert inh.device_by_static(LAPTOP.static_public) is None
        assert inh.allowlist() == [PHONE.identity_public]
        # A damaged bundle inherits nothing.
        (tmp_path / "host" / BUNDLE_FILE).write_bytes(_tamper(_bundle(issued_at=300.0), {"issued_at": 400.0}))
        assert await asyncio.wait_for(changes.get(), 5) == {PHONE.id}
        assert inh.allowlist() == []
    finally:
        task.cancel()
