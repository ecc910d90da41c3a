"""Batches of records between relay nodes, over Redis sharded pub/sub (SPUBLISH/SSUBSCRIBE: on
Redis Cluster a node's channel lives on one shard, on a single server it is plain pub/sub).

Each node listens on its own channel. What is sent to a node within one event-loop pass goes out
as one message (ARCHITECTURE §9: forwarded in batches), in order; at most ``MAX_PENDING`` bytes
may wait for a node, past that ``send`` says no and the caller closes the channel. Redis drops a
subscriber that falls behind (``client-output-buffer-limit pubsub``), and anything published to
it meanwhile is lost: the node is told (``trouble``), closes its cross-node channels with a
retryable code — the clients resume from their cursors — and subscribes again. Batches to each
node are numbered, so that a loss Redis did not report (a client that reconnects by itself, say)
is found all the same: the receiver closes the channels it shares with the sender (``gap``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable

from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterPubSub
from redis.exceptions import PubSubError

from tether.lograte import LogLimiter
from tether.relay.cluster.records import NUMBER, BusError, Record, batch_prefix, decode_batch
from tether.relay.cluster.redis_client import TROUBLE, Client

log = logging.getLogger("tether.relay.cluster")

# bytes waiting for one node before send() refuses more; one Redis message holds at most
# MAX_MESSAGE of them
MAX_PENDING = 16 << 20
MAX_MESSAGE = 1 << 20
_RETRY = (0.1, 0.2, 0.5, 1.0, 2.0)
# pub/sub reply types: records, and the end of this node's subscription
_MESSAGES = frozenset({"smessage", "message"})
_UNSUBSCRIBED = frozenset({"sunsubscribe", "unsubscribe"})


def channel_of(node: str) -> str:
    return f"tether:bus:{node}"


class Bus:
    """This node's end of the bus; see the module's docstring."""

    def __init__(
        self,
        redis: Client,
        node_id: str,
        deliver: Callable[[str, list[Record]], None],
        trouble: Callable[[str], None],
        healed: Callable[[], None],
        lost: Callable[[str], None],
        gap: Callable[[str], None],
    ) -> None:
        self.redis = redis
        self.node_id = node_id
        self._deliver = deliver
        self._trouble = trouble
        self._healed = healed
        self._lost = lost
        self._gap = gap
        self._prefix = batch_prefix(node_id, secrets.randbits(64))  # the epoch: drawn at start
        self._sent: dict[str, int] = {}  # node → the number of the last batch sent to it
        self._received: dict[str, tuple[int, int]] = {}  # node → (epoch, number) of its last batch here
        self._out: dict[str, list[bytes]] = {}
        self._pending: dict[str, int] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        #: the subscription is live: records sent to this node arrive
        self.subscribed = False
        # for /metrics
        self.records_sent = self.records_received = self.messages_sent = self.messages_received = 0
        self.dropped_subscriptions = 0
        self.gaps = 0  # batches found missing
        self._quiet = LogLimiter(log)

    async def start(self) -> None:
        """Subscribe (raises one of ``TROUBLE`` if Redis cannot be reached) and listen from now on."""
        pubsub = await self._subscribe()
        self.subscribed = True
        self._listener = asyncio.get_running_loop().create_task(self._listen(pubsub))

    async def close(self) -> None:
        for task in (self._listener, self._flusher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._listener = self._flusher = None

    # --- sending ---

    def send(self, node: str, record: Record) -> bool:
        """Queue ``record`` for ``node``; False when too much already waits for it."""
        pending = self._pending.get(node, 0)
        data = record.encode()
        if pending + len(data) > MAX_PENDING:
            return False
        out = self._out.get(node)
        if out is None:
            out = self._out[node] = []
        out.append(data)
        self._pending[node] = pending + len(data)
        self.records_sent += 1
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return True

    def touch(self, node: str) -> None:
        """Send ``node`` an empty batch: if one before it was lost, the gap shows now rather than
        with the next record, which may never come."""
        self._out.setdefault(node, [])
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._out:
                out, self._out = self._out, {}
                for node, records in out.items():
                    try:
                        await self._publish(node, records)
                    finally:
                        left = self._pending.get(node, 0) - sum(map(len, records))
                        if left > 0:
                            self._pending[node] = left
                        else:
                            self._pending.pop(node, None)
        finally:
            self._flusher = None

    async def _publish(self, node: str, records: list[bytes]) -> None:
        channel = channel_of(node)
        batches: list[list[bytes]] = [[]]
        size = 0
        for record in records:
            if size + len(record) > MAX_MESSAGE and batches[-1]:
                batches.append([])
                size = 0
            batches[-1].append(record)
            size += len(record)
        for batch in batches:
            # numbered as sent: one that fails or finds nobody is a gap to the receiver too
            number = self._sent[node] = self._sent.get(node, 0) + 1
            message = b"".join([self._prefix, NUMBER.pack(number), *batch])
            self.messages_sent += 1
            try:
                receivers = await self.redis.spublish(channel, message)
            except TROUBLE as exc:
                self._trouble(f"cannot publish to Redis: {exc}")
                return
            if not receivers:  # nobody listens there: the node is gone
                self._lost(node)
                return

    # --- receiving ---

    async def _subscribe(self) -> PubSub | ClusterPubSub:
        pubsub = self.redis.pubsub()
        try:
            await pubsub.ssubscribe(channel_of(self.node_id))
        except BaseException:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            raise
        return pubsub

    async def _next(self, pubsub: PubSub | ClusterPubSub) -> dict[str, object] | None:
        if isinstance(pubsub, ClusterPubSub):
            message = await pubsub.get_sharded_message(timeout=1.0)
        else:
            message = await pubsub.get_message(timeout=1.0)
        if not isinstance(message, dict):
            return None
        if message.get("type") in _UNSUBSCRIBED:
            # Redis Cluster unsubscribes a shard channel whose slot moved to another master
            # (resharding) and says nothing more: SPUBLISH to this node then reaches nobody
            raise PubSubError("Redis unsubscribed this node's channel (its slot moved)")
        return message if message.get("type") in _MESSAGES else None

    async def _listen(self, pubsub: PubSub | ClusterPubSub) -> None:
        while True:
            try:
                while True:
                    message = await self._next(pubsub)
                    if message is not None:
                        self._on_message(message)
            except Exception as exc:  # the listener outlives anything redis-py may raise
                if not isinstance(exc, TROUBLE):
                    self._quiet.log(logging.ERROR, "listen", "the bus's subscription failed: %r", exc)
                self.subscribed = False
                self.dropped_subscriptions += 1
                self._trouble(f"lost the subscription to Redis: {exc}")
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            pubsub = await self._resubscribe()
            # what came before is closed (trouble): each node's numbers count from here
            self._received.clear()
            self.subscribed = True
            self._healed()

    async def _resubscribe(self) -> PubSub | ClusterPubSub:
        attempt = 0
        while True:
            await asyncio.sleep(_RETRY[min(attempt, len(_RETRY) - 1)])
            attempt += 1
            try:
                return await self._subscribe()
            except Exception as exc:  # as in _listen: whatever it was, try again
                self._quiet.log(logging.WARNING, "resubscribe", "cannot subscribe to Redis yet: %r", exc)

    def _on_message(self, message: dict[str, object]) -> None:
        data = message.get("data")
        if not isinstance(data, bytes):
            return
        try:
            batch = decode_batch(data)
        except BusError as exc:
            self._quiet.log(logging.WARNING, "batch", "dropped a malformed batch from the bus: %s", exc)
            return
        sender = batch.sender
        last = self._received.get(sender)
        self._received[sender] = (batch.epoch, batch.sequence)
        # a node seen for the first time, or started again (a new epoch), has no channels here yet
        if last is not None and last[0] == batch.epoch and batch.sequence != last[1] + 1:
            self.gaps += 1
            self._gap(sender)
        self.messages_received += 1
        self.records_received += len(batch.records)
        self._deliver(sender, batch.records)
