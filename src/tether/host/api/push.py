"""push.*: a device's browser subscribes to this host's Web Push (or stops)."""

from __future__ import annotations

import functools
from typing import Any

from tether.host.api.core import Caller, Forbidden, handles, log
from tether.host.push import subscriptions
from tether.protocol import schemas


class PushMethods(Caller):
    """push.subscribe, push.unsubscribe: for the calling device's own browser only."""

    def _device(self) -> str:
        if self.principal.kind != "device":
            raise Forbidden("only a paired device's browser takes pushes",
                            hint="pair the browser (tether pair) and subscribe from its Settings")
        return self.principal.id

    @handles("push.subscribe")
    async def _push_subscribe(self, params: schemas.PushSubscribe) -> dict[str, Any]:
        device = self._device()
        if self.host.push_key is None:
            raise Forbidden("this host sends no pushes: [push] enabled is false in its config.toml",
                            hint="the host's owner can set enabled = true under [push]")
        subscriptions.check(params.endpoint, params.keys.p256dh, params.keys.auth,
                            allowed=self.host.config.push.allow_endpoints)
        sub = subscriptions.Subscription(device, params.endpoint, params.keys.p256dh, params.keys.auth)
        await self.host.db.run(functools.partial(subscriptions.save, sub=sub))
        log.info("%s subscribed to pushes", self.principal.describe())
        return {"ok": True}

    @handles("push.unsubscribe")
    async def _push_unsubscribe(self, _: schemas.Empty) -> dict[str, Any]:
        removed = await self.host.db.run(functools.partial(subscriptions.remove, device_id=self._device()))
        return {"removed": removed}
