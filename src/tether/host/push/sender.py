"""Sends Web Push for the host (RFC 8030, payloads sealed with RFC 8291, signed with RFC 8292).

The sender follows the event log; each event worth a push (:mod:`.notices`) goes to every device
whose browser subscribed and that may see the session (scope ``read``, its workspace). Neither
the relay nor the push service can read a payload: pywebpush seals it to the browser's keys.

Each device has its own outbox, sent in order by its own task, so a slow or hanging push
endpoint delays only that device; an outbox holds at most OUTBOX pushes (the oldest go first).
Every delivery's result is recorded for ``devices.list``; a push service that says the
subscription is gone (404, 410) has it removed at once. A host that cannot reach a push service
keeps working and says so in its log once per service.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import logging
import time
from urllib.parse import urlsplit

import httpx
from py_vapid import Vapid02
from pywebpush import WebPusher

from tether.crypto.encoding import b64u_encode
from tether.host import projection
from tether.host.db import Database
from tether.host.eventlog import Batch, EventLog
from tether.host.push import subscriptions
from tether.host.push.notices import Notice, notice_for
from tether.host.push.subscriptions import Subscription
from tether.host.workspaces import within
from tether.protocol.scopes import Scope

log = logging.getLogger(__name__)

OUTBOX = 32  # pushes waiting per device
TIMEOUT = 10.0  # seconds for one push service request
JWT_LIFETIME = 12 * 3600  # a VAPID token's validity (RFC 8292 allows at most 24 h)


class PushSender:
    def __init__(
        self, db: Database, log: EventLog, key: Vapid02, *, host_id: str, host_name: str, subject: str,
        timeout: float = TIMEOUT,
    ) -> None:
        self.db = db
        self.log = log
        self.key = key
        self.host_id = host_id
        self.host_name = host_name
        self.subject = subject
        self._outboxes: dict[str, collections.deque[tuple[Subscription, Notice, str]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._unreachable: set[str] = set()  # push services already said unreachable in the log
        self._http = httpx.AsyncClient(follow_redirects=False, timeout=timeout)

    async def run(self) -> None:
        """Follow the log from now on (a host that was down sends nothing old)."""
        subscription = self.log.subscribe(self.log.head)
        try:
            async for page in subscription:
                if isinstance(page, Batch):  # a snapshot means it fell far behind: those are old news
                    for event in page.events:
                        notice = notice_for(event, self.host_id)
                        if notice is not None:
                            await self._dispatch(notice)
        finally:
            subscription.close()

    async def close(self) -> None:
        for task in self._workers.values():
            task.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        await self._http.aclose()

    async def _dispatch(self, notice: Notice) -> None:
        session = await self.db.run(lambda c: projection.get_session(c, notice.session), write=False)
        if session is None:
            return
        title = str(session.get("title") or " ".join(session.get("command") or []) or notice.session)
        for sub, scopes, workspace in await self.db.run(subscriptions.active, write=False):
            if Scope.READ in scopes and within(session.get("workspace"), workspace):
                self._enqueue(sub, notice, title)

    def _enqueue(self, sub: Subscription, notice: Notice, title: str) -> None:
        outbox = self._outboxes.setdefault(sub.device_id, collections.deque(maxlen=OUTBOX))
        outbox.append((sub, notice, title))
        worker = self._workers.get(sub.device_id)
        if worker is None or worker.done():
            self._workers[sub.device_id] = asyncio.create_task(self._drain(sub.device_id),
                                                               name=f"tether-push-{sub.device_id}")

    async def _drain(self, device_id: str) -> None:
        outbox = self._outboxes[device_id]
        while outbox:
            sub, notice, title = outbox.popleft()
            # Revoked or unsubscribed since it was queued: what waits is not sent.
            if not await self.db.run(functools.partial(subscriptions.is_active, device_id=device_id), write=False):
                outbox.clear()
                return
            result, gone = await self.send(sub, notice, title)
            await self.db.run(functools.partial(subscriptions.record, device_id=device_id, result=result, gone=gone))
            if gone:
                outbox.clear()
                log.info("push: device %s's subscription is gone (the push service said so); removed", device_id)

    async def send(self, sub: Subscription, notice: Notice, title: str) -> tuple[str, bool]:
        """One push; its result as recorded, and whether the subscription is gone."""
        body = notice.payload(host_id=self.host_id, host_name=self.host_name, title=title)
        sealed = WebPusher(sub.info()).encode(body, "aes128gcm")["body"]
        service = urlsplit(sub.endpoint)
        origin = f"{service.scheme}://{service.netloc}"
        headers = {
            **self.key.sign({"sub": self.subject, "aud": origin, "exp": int(time.time()) + JWT_LIFETIME}),
            "Content-Encoding": "aes128gcm",
            "TTL": str(notice.ttl),
            "Urgency": notice.urgency,
            # A push still waiting for the phone is replaced by a later one of the same tag (its close).
            "Topic": b64u_encode(hashlib.sha256(notice.tag.encode()).digest()[:24]),
        }
        try:
            response = await self._http.post(sub.endpoint, content=sealed, headers=headers)
        except httpx.HTTPError as exc:
            if origin not in self._unreachable:
                self._unreachable.add(origin)
                log.warning("push: cannot reach the push service %s (%s); this host keeps working, and its"
                            " pushes go again when the service answers", origin, type(exc).__name__)
            return "unreachable", False
        self._unreachable.discard(origin)
        if response.status_code in (404, 410):
            return "gone", True
        if 200 <= response.status_code < 300:
            return "accepted", False
        return f"rejected (HTTP {response.status_code})", False
