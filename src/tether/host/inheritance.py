"""Inherited devices: a remote host started by ``tether ssh`` accepts the desktop host's devices
(ARCHITECTURE §8).

The desktop host signs a **bundle** with its Ed25519 identity key: its live devices with their
grants (identity key, static key, scopes, workspace), its agent policy as a ceiling, its own
identity and static keys, the remote host id the bundle is for, and when it was issued. ``tether
ssh`` writes it through the SSH connection to ``<remote home>/host/inherited.json`` (0600).

The remote host trusts the first desktop key it sees (written over SSH by someone who controls
that account), pins it in ``host/parent.json``, and from then on accepts only bundles signed by
that key, for its own host id, and not older than the one it has. The bundle file is the whole
truth: revoking a device on the desktop re-pushes a bundle without it, and the remote daemon,
which polls the file, drops the device and closes its channels. A bundle that fails to verify
leaves *no* inherited device (fail closed: a damaged revocation must not keep a revoked phone in).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import msgspec

from tether.agents.policy import Approval, Policy, Sandbox
from tether.crypto.encoding import b64u_encode
from tether.crypto.keys import KEY_LEN, Identity, derive_id, verify_signature
from tether.errors import TetherError
from tether.home import write_private
from tether.host.store import Device
from tether.protocol.scopes import parse_scopes

log = logging.getLogger("tether.host.inheritance")

BUNDLE_FILE = "inherited.json"
PARENT_FILE = "parent.json"
BUNDLE_VERSION = 1
# Domain separation: a bundle signature can never be mistaken for a relay admission signature.
SIGNATURE_CONTEXT = b"tether-inheritance-v1\x00"
# A bundle is a few hundred bytes per device; a relay allowlist holds at most 10,000 keys.
MAX_BUNDLE_BYTES = 8 * 1024 * 1024
MAX_DEVICES = 10_000
# The daemon polls the bundle file (portable, no inotify); a revocation lands within this.
POLL_SECONDS = 0.25  # a stat; a revocation reaches live channels within this


class InheritanceError(TetherError):
    code = "inheritance"


class InheritedDevice(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    name: str
    identity_public: bytes
    static_public: bytes
    scopes: list[str]
    workspace: str | None = None


class AgentCeiling(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    approval: str
    sandbox: str


class BundleBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int
    parent_id: str
    parent_name: str
    parent_identity: bytes
    parent_static: bytes
    host_id: str  # the remote host this bundle is for: it cannot be replayed to another one
    issued_at: float
    devices: list[InheritedDevice]
    policy: dict[str, AgentCeiling]
    expires_at: float | None = None


class SignedBundle(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    body: bytes  # the JSON of a BundleBody, signed exactly as stored
    signature: bytes


class Parent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The desktop host a remote host inherits from (pinned on first use)."""

    id: str
    name: str
    identity_public: bytes
    pinned_at: float


_APPROVALS = list(Approval)  # declared strictest first
_SANDBOXES = list(Sandbox)


@dataclass(frozen=True)
class Bundle:
    """A verified bundle."""

    body: BundleBody
    raw: bytes

    @property
    def parent_id(self) -> str:
        return self.body.parent_id

    @property
    def parent_identity(self) -> bytes:
        return self.body.parent_identity

    @property
    def issued_at(self) -> float:
        return self.body.issued_at

    @property
    def devices(self) -> list[Device]:
        """The inherited devices as the host's own :class:`Device` records (never revoked:
        a revoked device is simply absent)."""
        return [
            Device(d.id, d.name, d.identity_public, d.static_public, list(d.scopes), d.workspace,
                   self.body.issued_at, None, None)
            for d in self.body.devices
        ]

    def device_by_static(self, static_public: bytes) -> Device | None:
        for device in self.devices:
            if device.static_public == static_public:
                return device
        return None

    def allowlist(self) -> list[bytes]:
        """Identity keys to publish to the relay beside the host's own."""
        return [d.identity_public for d in self.body.devices]

    def cap(self, agent: str, policy: Policy) -> Policy:
        """``policy`` made no looser than the desktop's policy for ``agent``. An agent the
        desktop has no entry for is capped at the strictest policy."""
        ceiling = self.body.policy.get(agent)
        if ceiling is None:
            return Policy(_APPROVALS[0], _SANDBOXES[0])
        return policy.within(Policy(Approval(ceiling.approval), Sandbox(ceiling.sandbox)))

    def expired(self, now: float | None = None) -> bool:
        expires_at = self.body.expires_at
        return expires_at is not None and (time.time() if now is None else now) >= expires_at


# -- making and checking -------------------------------------------------------------------


def make_bundle(
    identity: Identity,
    *,
    parent_name: str,
    host_id: str,
    devices: Iterable[Device],
    policy: Mapping[str, Policy],
    issued_at: float | None = None,
    expires_at: float | None = None,
) -> bytes:
    """A signed bundle for remote host ``host_id``, from the desktop's live devices and policy."""
    body = BundleBody(
        version=BUNDLE_VERSION,
        parent_id=identity.id,
        parent_name=parent_name,
        parent_identity=identity.identity_public,
        parent_static=identity.static_public,
        host_id=host_id,
        issued_at=time.time() if issued_at is None else issued_at,
        expires_at=expires_at,
        devices=[
            InheritedDevice(d.id, d.name, d.identity_public, d.static_public, list(d.scopes), d.workspace)
            for d in devices
            if not d.revoked
        ],
        policy={agent: AgentCeiling(p.approval.value, p.sandbox.value) for agent, p in policy.items()},
    )
    encoded = msgspec.json.encode(body)
    return msgspec.json.encode(SignedBundle(encoded, identity.sign(SIGNATURE_CONTEXT + encoded)))


def verify_bundle(
    data: bytes,
    *,
    host_id: str,
    parent_identity: bytes | None = None,
    now: float | None = None,
) -> Bundle:
    """Check a bundle's format, signature, target host and expiry. With ``parent_identity`` the
    signer must be that key; otherwise the key in the bundle is checked against itself only."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise InheritanceError("the inherited-devices bundle is too large")
    try:
        signed = msgspec.json.decode(data, type=SignedBundle)
        body = msgspec.json.decode(signed.body, type=BundleBody)
    except msgspec.ValidationError as exc:
        raise InheritanceError(f"the inherited-devices bundle is malformed: {exc}") from None
    except msgspec.DecodeError:
        raise InheritanceError("the inherited-devices bundle is not valid JSON") from None
    if body.version != BUNDLE_VERSION:
        raise InheritanceError(
            f"the inherited-devices bundle has version {body.version}; this tether reads {BUNDLE_VERSION}",
            hint="run `tether ssh` again from a desktop with the same tether version",
        )
    if len(body.parent_identity) != KEY_LEN or derive_id(body.parent_identity) != body.parent_id:
        raise InheritanceError("the inherited-devices bundle names a desktop id that does not match its key")
    if not verify_signature(body.parent_identity, signed.signature, SIGNATURE_CONTEXT + signed.body):
        raise InheritanceError("the inherited-devices bundle has a bad signature")
    if parent_identity is not None and body.parent_identity != parent_identity:
        raise InheritanceError(
            f"the inherited-devices bundle was signed by desktop host {body.parent_id}, not the one this host "
            "inherits from",
            hint=f"to move this host to another desktop, remove {PARENT_FILE} in its host directory first",
        )
    if body.host_id != host_id:
        raise InheritanceError(f"the inherited-devices bundle is for host {body.host_id}, not this host ({host_id})")
    if len(body.devices) > MAX_DEVICES:
        raise InheritanceError(f"the inherited-devices bundle lists more than {MAX_DEVICES} devices")
    for d in body.devices:
        if len(d.identity_public) != KEY_LEN or len(d.static_public) != KEY_LEN:
            raise InheritanceError(f"inherited device {d.id!r} has a key of the wrong length")
        if derive_id(d.identity_public) != d.id:
            raise InheritanceError(f"inherited device {d.id!r} has an id that does not match its key")
        try:
            parse_scopes(d.scopes)
        except TetherError as exc:
            raise InheritanceError(f"inherited device {d.id!r}: {exc.message}") from None
    for agent, ceiling in body.policy.items():
        try:
            Approval(ceiling.approval)
            Sandbox(ceiling.sandbox)
        except ValueError:
            raise InheritanceError(f"the inherited policy for agent {agent!r} is not a known policy") from None
    bundle = Bundle(body, data)
    if bundle.expired(now):
        raise InheritanceError(
            "the inherited-devices bundle has expired", hint="run `tether ssh refresh` on the desktop"
        )
    return bundle


# -- files in the remote host's home -------------------------------------------------------


def _host_dir(home: Path) -> Path:
    return home / "host"


def load_parent(home: Path) -> Parent | None:
    path = _host_dir(home) / PARENT_FILE
    try:
        return msgspec.json.decode(path.read_bytes(), type=Parent)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        raise InheritanceError(
            f"{path} is damaged", hint="remove it and run `tether ssh` again from the desktop"
        ) from None


def install_bundle(home: Path, data: bytes, *, host_id: str) -> Bundle:
    """Verify ``data`` and make it this host's bundle (atomically, 0600). The first bundle pins
    its signer as the parent; a bundle older than the installed one is refused (a replayed old
    bundle could bring back a revoked device) unless it grants exactly the same."""
    parent = load_parent(home)
    bundle = verify_bundle(data, host_id=host_id, parent_identity=parent.identity_public if parent else None)
    current = _read_bundle_file(home)
    old: Bundle | None = None
    if current is not None and parent is not None:
        with contextlib.suppress(InheritanceError):  # a damaged old bundle is simply replaced
            old = verify_bundle(current, host_id=host_id, parent_identity=parent.identity_public, now=0)
    if old is not None and bundle.issued_at < old.issued_at:
        if (old.body.devices, old.body.policy) == (bundle.body.devices, bundle.body.policy):
            return old  # two desktop runs at once: the older says the same, nothing to change
        raise InheritanceError(
            "this inherited-devices bundle is older than the one the host has",
            hint="the desktop's clock may have gone back; run `tether ssh refresh` again",
        )
    if parent is None:
        pinned = Parent(bundle.parent_id, bundle.body.parent_name, bundle.parent_identity, time.time())
        write_private(_host_dir(home) / PARENT_FILE, msgspec.json.encode(pinned))
    write_private(_host_dir(home) / BUNDLE_FILE, data)
    return bundle


def _read_bundle_file(home: Path) -> bytes | None:
    try:
        return (_host_dir(home) / BUNDLE_FILE).read_bytes()
    except FileNotFoundError:
        return None


def load_bundle(home: Path, host_id: str) -> Bundle | None:
    """The host's verified bundle; None when it inherits nothing. :class:`InheritanceError` when
    the file is there but does not verify against the pinned desktop key."""
    data = _read_bundle_file(home)
    if data is None:
        return None
    parent = load_parent(home)
    if parent is None:
        raise InheritanceError(
            f"{_host_dir(home) / BUNDLE_FILE} exists without {PARENT_FILE}",
            hint="run `tether ssh` again from the desktop",
        )
    return verify_bundle(data, host_id=host_id, parent_identity=parent.identity_public)


# -- what the daemon uses ------------------------------------------------------------------


class Inheritance:
    """The inherited devices a host daemon accepts, kept current from the bundle file.

    ``device_by_static`` and ``allowlist`` answer from the last bundle that verified; when the
    file changes, :meth:`watch` reloads it and reports the ids of devices that left, so the
    daemon can re-publish its allowlist and close their channels.
    """

    def __init__(self, home: Path, host_id: str) -> None:
        self.home = home
        self.host_id = host_id
        self.bundle: Bundle | None = None
        self._stamp: tuple[int, int, int] | None = None

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(_host_dir(self.home) / BUNDLE_FILE)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def load(self) -> set[str]:
        """(Re)read the bundle; returns the ids of devices no longer inherited. A bundle that
        does not verify is logged and inherits nothing."""
        before = {d.id for d in self.bundle.body.devices} if self.bundle else set()
        self._stamp = self._file_stamp()
        try:
            self.bundle = load_bundle(self.home, self.host_id)
        except InheritanceError as exc:
            log.error("ignoring inherited devices: %s", exc.message)
            self.bundle = None
        if self.bundle is not None and self.bundle.expired():
            log.error("ignoring inherited devices: the bundle expired")
            self.bundle = None
        after = {d.id for d in self.bundle.body.devices} if self.bundle else set()
        if self.bundle is not None:
            log.info("inheriting %d device(s) from desktop host %s (%s)", len(after),
                     self.bundle.body.parent_name, self.bundle.parent_id)
        return before - after

    def changed(self) -> bool:
        return self._file_stamp() != self._stamp

    def device_by_static(self, static_public: bytes) -> Device | None:
        return self.bundle.device_by_static(static_public) if self.bundle else None

    def allowlist(self) -> list[bytes]:
        return self.bundle.allowlist() if self.bundle else []

    def cap(self, agent: str, policy: Policy) -> Policy:
        return self.bundle.cap(agent, policy) if self.bundle else policy

    def describe(self) -> dict[str, object] | None:
        """For ``host.info``: where this host's devices come from."""
        if self.bundle is None:
            return None
        return {
            "parent_id": self.bundle.parent_id,
            "parent_name": self.bundle.body.parent_name,
            "parent_identity": b64u_encode(self.bundle.parent_identity),
            "issued_at": self.bundle.issued_at,
            "devices": len(self.bundle.body.devices),
        }

    async def watch(self, on_change: Callable[[set[str]], Awaitable[None]], interval: float = POLL_SECONDS) -> None:
        """Poll the bundle file; after each change call ``on_change(removed device ids)``."""
        while True:
            await asyncio.sleep(interval)
            if self.changed():
                removed = self.load()
                await on_change(removed)
