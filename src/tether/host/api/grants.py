"""devices.*, pairing.create, tokens.*, audit.list and host.rotate_keys: who may use this host."""

from __future__ import annotations

import time
from typing import Any

from tether.crypto.tokens import format_expiry
from tether.host.api.core import Caller, Forbidden, NotFound, handles
from tether.host.push import subscriptions
from tether.protocol import schemas
from tether.protocol.scopes import parse_scopes

_MANAGE_HINT = "devices.list and tokens.list show those within this caller's scopes and workspace"


class GrantMethods(Caller):
    """devices.*, pairing.create, tokens.*, audit.list and host.rotate_keys: who may use this host."""

    @handles("devices.list")
    async def _devices_list(self, _: schemas.Empty) -> list[dict[str, Any]]:
        devices = await self.host.store.list_devices(include_revoked=True)
        push = await self.host.db.run(subscriptions.states, write=False)
        return [{**d.to_public(), "push": push.get(d.id)} for d in devices if self._manages(d)]

    async def _manages_device(self, device_id: str) -> bool:
        """A device beyond this caller's grant is refused exactly like an unknown one (the listing
        hides it too), so a restricted admin can neither cut off nor probe wider devices."""
        device = await self.host.store.get_device(device_id)
        return device is not None and self._manages(device)

    @handles("devices.rename")
    async def _devices_rename(self, params: schemas.DeviceRename) -> dict[str, Any]:
        if not await self._manages_device(params.id) or not await self.host.store.rename_device(params.id, params.name):
            raise NotFound(f"no device {params.id!r} this caller may manage", hint=_MANAGE_HINT)
        return {"ok": True}

    @handles("devices.revoke")
    async def _devices_revoke(self, params: schemas.DeviceRef) -> dict[str, Any]:
        if not await self._manages_device(params.id) or not await self.host.revoke_device(params.id):
            raise NotFound(f"no device {params.id!r} this caller may manage", hint=_MANAGE_HINT)
        return {"ok": True}

    @handles("host.rotate_keys")
    async def _rotate_keys(self, params: schemas.RotateKeys) -> dict[str, Any]:
        # Every paired device must learn the new key: a device could lock out all that are away.
        self._owner_only("rotate the host's key")
        return await self.host.rotate_keys(params.grace)

    @handles("pairing.create")
    async def _pairing_create(self, params: schemas.PairingCreate) -> dict[str, Any]:
        scopes = parse_scopes(params.scopes)
        self._within_grant(
            scopes, "cannot grant scopes this caller does not have",
            hint="a device can only pair others with a subset of its own scopes",
        )
        workspace = self._narrowed_workspace(params.workspace)
        return await self.host.create_pairing_offer(scopes, params.ttl, workspace)

    @handles("tokens.create")
    async def _tokens_create(self, params: schemas.TokenCreate) -> dict[str, Any]:
        scopes = parse_scopes(params.scopes)
        self._within_grant(
            scopes, "cannot create a token with scopes this caller does not have",
            hint="a token can only get a subset of its creator's scopes",
        )
        workspace = self._narrowed_workspace(params.workspace)
        expires_at = time.time() + params.ttl
        if self.principal.expires_at is not None and expires_at > self.principal.expires_at:
            raise Forbidden(
                "a token cannot create a token that outlives it "
                f"(this one expires on {format_expiry(self.principal.expires_at)})",
                hint="ask for a shorter --ttl",
            )
        return await self.host.create_token(
            scopes, workspace=workspace, expires_at=expires_at, name=params.name, created_by=self.principal.id
        )

    @handles("tokens.list")
    async def _tokens_list(self, _: schemas.Empty) -> list[dict[str, Any]]:
        return [t.to_public() for t in await self.host.store.list_tokens() if self._manages(t)]

    @handles("tokens.revoke")
    async def _tokens_revoke(self, params: schemas.TokenRef) -> dict[str, Any]:
        token = await self.host.store.get_token(params.id)
        if token is None or not self._manages(token) or not await self.host.revoke_token(params.id, by=self):
            raise NotFound(f"no token {params.id!r} this caller may manage that is not revoked already",
                           hint=_MANAGE_HINT)
        return {"ok": True}

    @handles("audit.list")
    async def _audit_list(self, params: schemas.AuditList) -> dict[str, Any]:
        entries = await self.host.audit.list(since=params.since, after=params.after, limit=params.limit)
        cursor = entries[-1]["id"] if entries else params.after
        if self.principal.workspace is not None:
            # What was done to other workspaces' sessions (their ids) is theirs, like their events.
            await self._judge_sessions(e["session"] for e in entries)
            entries = [e for e in entries if e["session"] is None or self._sees.get(e["session"], False)]
        return {"entries": entries, "cursor": cursor}
