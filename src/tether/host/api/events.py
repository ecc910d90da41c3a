"""events.*: reading the event log, and subscriptions with flow control."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec

from tether.errors import TetherError
from tether.host.api.core import Caller, handles
from tether.host.api.flow import MAX_SUBSCRIPTIONS, Window, chunk_events
from tether.protocol import schemas

if TYPE_CHECKING:
    from tether.host.eventlog import Subscription

READ_PAGE_BYTES = 1024 * 1024  # events.read answers about this much at most


class EventMethods(Caller):
    """events.*: reading the event log, and subscriptions with flow control."""

    @handles("events.read")
    async def _read_events(self, params: schemas.ReadEvents) -> dict[str, Any]:
        """A page of the log (for scripts that want what exists now, without following)."""
        head = self.host.log.head
        events = await self.host.log.read(params.since, params.limit, READ_PAGE_BYTES)
        cursor = events[-1].seq if events else max(params.since, head)
        page: list[dict[str, Any]] = []
        size = 0
        for e in await self._visible(events):
            # A page stays well under the message limit (an output event can be 64 Ki characters):
            # the caller goes on from the cursor.
            if size >= READ_PAGE_BYTES:
                cursor = e.seq - 1  # seqs have no gaps: everything before it was scanned
                break
            if params.session is None or e.session == params.session:
                wire = e.to_wire()
                size += len(msgspec.json.encode(wire))
                page.append(wire)
        # Retention may have dropped what came before the floor: a caller behind it missed events.
        return {"events": page, "cursor": cursor, "head": head, "floor": self.host.log.floor}

    @handles("events.subscribe")
    async def _subscribe(self, params: schemas.Subscribe) -> dict[str, Any]:
        sub_id = params.sub
        if sub_id in self._subs:
            raise TetherError(f"subscription {sub_id} already exists on this connection", code="bad_params")
        if len(self._subs) >= MAX_SUBSCRIPTIONS:
            raise TetherError("too many subscriptions on one connection", code="limit")
        limit = self.host.config.limits.max_subscriptions_per_caller
        if self.principal.kind != "local" and self.host.subscriptions_of(self.principal.id) >= limit:
            raise TetherError(
                f"{self.principal.describe()} already has {limit} event subscriptions on this host, the most"
                f" one device or token may ({self.host.config.limit_key('max_subscriptions_per_caller')})",
                hint="unsubscribe or close some of its connections, or ask the host's owner to raise the limit",
                code="limit",
            )
        subscription = self.host.log.subscribe(params.since, session=params.session)
        self._windows[sub_id] = Window()
        self._subs[sub_id] = asyncio.create_task(self._pump(sub_id, subscription))
        return {"sub": sub_id, "head": self.host.log.head}

    async def _pump(self, sub_id: int, subscription: Subscription) -> None:
        from tether.host.eventlog import Snapshot

        window = self._windows[sub_id]
        try:
            while True:
                # The next step is read only once the client has room for it: a client that does
                # not acknowledge leaves the host holding its cursor, not a snapshot or a batch.
                await window.wait_for_room()
                try:
                    item = await anext(subscription)
                except StopAsyncIteration:
                    return
                if isinstance(item, Snapshot):
                    # A page of many sessions with scrollback is still sent in parts like events.
                    parts = chunk_events([s for s in item.sessions if self._sees_session(s)])
                    for i, part in enumerate(parts):
                        await window.wait_for_room()
                        last = item.last and i == len(parts) - 1
                        params = {"sub": sub_id, "seq": item.seq, "sessions": part, "last": last}
                        window.sent(await self.peer.notify("snapshot", params))
                    continue
                shown = await self._visible(item)
                if not shown:
                    continue  # all of another workspace: not even an empty notification
                for chunk in chunk_events([e.to_wire() for e in shown]):
                    await window.wait_for_room()
                    window.sent(await self.peer.notify("events", {"sub": sub_id, "events": chunk}))
        except TetherError:
            pass  # the connection went away; the client resumes from its cursor
        finally:
            self._windows.pop(sub_id, None)

    @handles("events.unsubscribe")
    async def _unsubscribe(self, params: schemas.Unsubscribe) -> dict[str, Any]:
        task = self._subs.pop(params.sub, None)
        if task is not None:
            task.cancel()
        return {"ok": task is not None}
