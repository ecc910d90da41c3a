"""Presence (src/tether/relay/cluster/presence.py) against a real redis-server: the newest
connection of a host wins and the node that held it before never takes it back, a node that stops
refreshing loses its entries when they expire, and refreshing puts back what Redis lost (a restart
without persistence, or FLUSHALL and SCRIPT FLUSH) but never another connection's entry."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.support.redis_server import RedisServer
from tether.relay.cluster import presence as presence_module
from tether.relay.cluster.presence import TTL_MS, Holder, Presence
from tether.relay.cluster.redis_client import Client

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(60)]


async def entry(redis: Client, host_id: str) -> Holder | None:
    return Holder.decode(await redis.get(f"tether:host:{host_id}"))


async def connected(presence: Presence, host_id: str) -> Holder | None:
    """``host_id`` connects to ``presence``'s node: the entry another node had, if any."""
    presence.host_connected(host_id)
    written = await presence.write()
    assert written.error is None and written.changed == [host_id]
    return written.taken[0][1] if written.taken else None


async def gone(presence: Presence, host_id: str) -> None:
    presence.host_gone(host_id)
    assert (await presence.write()).error is None


async def test_the_newest_connection_wins_and_the_older_node_never_takes_it_back(redis: Client) -> None:
    a = Presence(redis, "node-a", "https://a.example")
    b = Presence(redis, "node-b", "https://b.example")
    await a.refresh()
    await b.refresh()

    assert await connected(a, "h1") is None  # nobody held it
    older = a.held["h1"]
    assert await a.where("h1") == older and older.node == "node-a"
    # The host connects again, to node b: it takes over, and learns who held it (to be told).
    assert await connected(b, "h1") == older
    newer = b.held["h1"]
    assert newer.node == "node-b" and newer.token != older.token
    assert await a.where("h1") == newer
    assert await a.still_holds("h1", newer) and not await a.still_holds("h1", older)

    # Node a has not heard of the takeover yet: its refresh and its goodbye leave b's entry alone.
    await a.refresh()
    assert await entry(redis, "h1") == newer
    await gone(a, "h1")
    assert await entry(redis, "h1") == newer
    await a.leave()
    assert await entry(redis, "h1") == newer
    assert not await b.node_alive("node-a") and await a.node_alive("node-b")
    assert await a.url_of("node-b") == "https://b.example"

    # A newer connection on the same node is no takeover between nodes: nobody to tell.
    assert await connected(b, "h1") is None
    assert await entry(redis, "h1") == b.held["h1"] != newer
    await b.leave()
    assert await entry(redis, "h1") is None and not await a.node_alive("node-b")


async def test_entries_live_for_the_ttl_and_a_node_that_stops_refreshing_loses_them(
    redis: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = Presence(redis, "node-live", "https://live.example")
    await connected(live, "h-live")
    await live.refresh()
    for key in ("tether:host:h-live", "tether:node:node-live"):
        assert 0 < await redis.pttl(key) <= TTL_MS

    monkeypatch.setattr(presence_module, "TTL_MS", 300)  # a dead node's entries go in 0.3 s
    dead = Presence(redis, "node-dead", "https://dead.example")
    await dead.refresh()
    await connected(dead, "h-dead")
    assert await live.node_alive("node-dead") and await live.where("h-dead") == dead.held["h-dead"]
    # node-dead stops here (no refresh, no goodbye); node-live keeps refreshing.
    for _ in range(4):
        await asyncio.sleep(0.15)
        await live.refresh()
    assert not await live.node_alive("node-dead")
    assert await live.where("h-dead") is None
    assert await live.node_alive("node-live") and await live.where("h-live") == live.held["h-live"]


async def test_refresh_puts_back_what_redis_lost_but_never_another_connection_s_entry(
    redis: Client, redis_server: RedisServer
) -> None:
    a = Presence(redis, "node-a", "https://a.example")
    b = Presence(redis, "node-b", "https://b.example")
    for host_id in ("h1", "h2"):
        await connected(a, host_id)
    await connected(b, "h3")
    allowed = frozenset({b"d" * 32, b"e" * 32})
    a.publish_allowlist("h2", allowed)
    assert (await a.write()).error is None
    await a.refresh()
    mine = dict(a.held)

    # Redis forgets everything, its script cache too (as after a restart without persistence).
    redis_server.execute("FLUSHALL")
    redis_server.execute("SCRIPT", "FLUSH")
    assert await a.where("h1") is None and not await b.node_alive("node-a")
    await a.refresh()
    assert await a.node_alive("node-a") and await a.url_of("node-a") == "https://a.example"
    assert {h: await entry(redis, h) for h in ("h1", "h2")} == mine
    assert await redis.smembers("tether:allow:h2") == allowed  # and its allowlist
    assert 0 < await redis.pttl("tether:allow:h2") <= TTL_MS
    assert await entry(redis, "h3") is None  # b's entry is b's to put back
    await b.refresh()
    assert await entry(redis, "h3") == b.held["h3"]

    # h1 connects to node b meanwhile: a, not yet told, refreshes, and b's entry stays.
    assert await connected(b, "h1") == mine["h1"]
    await a.refresh()
    assert await entry(redis, "h1") == b.held["h1"]
    assert await entry(redis, "h2") == mine["h2"]

    # Node a is told of the takeover (a TAKEOVER record) and lets its connection go.
    a.held.pop("h1")
    # A real restart (empty, no scripts) with the same client: a command may first meet the
    # connection from before; the next refresh puts everything back.
    await asyncio.to_thread(redis_server.restart)
    for node in (a, b):
        for _attempt in range(3):
            try:
                await node.refresh()
                break
            except (RedisError, OSError):
                continue
    assert await entry(redis, "h2") == mine["h2"] and await entry(redis, "h3") == b.held["h3"]
    assert await entry(redis, "h1") == b.held["h1"]


async def test_what_queues_meanwhile_goes_in_one_round_trip_in_order(
    redis: Client, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node taking thousands of hosts at once (a failover) writes them as one pipeline: each
    host's entry, its allowlist replaced as a whole, a host gone meanwhile removed, the hosts
    another node held reported (that node is to close them), scripts loaded again if Redis forgot
    them."""
    a = Presence(redis, "node-a", "https://a.example")
    b = Presence(redis, "node-b", "https://b.example")
    assert await connected(b, "h0") is None
    elsewhere = b.held["h0"]
    rounds: list[int] = []
    real = a._pipeline

    async def counted(ops: list[tuple[int, str, Holder | frozenset[bytes], float]]) -> list[object]:
        rounds.append(len(ops))
        return await real(ops)

    monkeypatch.setattr(a, "_pipeline", counted)
    for i in range(300):
        a.host_connected(f"h{i}")
    k, j, m = b"k" * 32, b"j" * 32, b"m" * 32
    a.publish_allowlist("h1", frozenset({k, j}))
    a.publish_allowlist("h1", frozenset({m}))
    a.publish_allowlist("h3", frozenset({k}))
    a.publish_allowlist("h3", frozenset())
    a.host_gone("h2")
    redis_server.execute("SCRIPT", "FLUSH")  # as after a restart: the script calls go once more
    written = await a.write()

    assert written.error is None
    assert written.changed == [f"h{i}" for i in range(300)]
    assert written.taken == [("h0", elsewhere, a.held["h0"])]
    assert rounds == [305, 5]
    assert await redis.smembers("tether:allow:h1") == {m}
    assert not await redis.exists("tether:allow:h3")
    assert await entry(redis, "h2") is None
    assert all([await entry(redis, f"h{i}") == a.held[f"h{i}"] for i in range(300) if i != 2])
    assert not a.pending and (await a.write()).changed == []


async def test_a_refresh_chunk_that_fails_does_not_stop_the_others(
    redis: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(presence_module, "CHUNK", 10)
    a = Presence(redis, "node-a", "https://a.example")
    for i in range(30):
        a.host_connected(f"h{i}")
    assert (await a.write()).error is None
    await a.refresh()  # (loads the script, so that each chunk below is one call)
    await redis.delete(*[f"tether:host:h{i}" for i in range(30)])  # lost: the refresh puts them back
    chunks: list[int] = []
    real = a._refresh_hosts

    async def first_times_out(held: list[tuple[str, Holder]]) -> None:
        chunks.append(len(held))
        if len(chunks) == 1:
            raise RedisTimeoutError("Timeout reading from 127.0.0.1")
        await real(held)

    monkeypatch.setattr(a, "_refresh_hosts", first_times_out)
    with pytest.raises(RedisTimeoutError):
        await a.refresh()
    assert chunks == [10, 10, 10]
    assert [await entry(redis, f"h{i}") for i in range(30)] == [None] * 10 + [a.held[f"h{i}"] for i in range(10, 30)]


async def test_lookups_asked_together_go_in_one_round_trip(redis: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Devices reopening their channels after a node died ask where hundreds of hosts are at once:
    what is asked while a lookup is out goes in the next round trip, and each asker gets its own
    host's answer (a host asked twice, and hosts nobody holds, included). A round trip that fails
    fails its askers, not the lookups after it."""
    a = Presence(redis, "node-a", "https://a.example")
    b = Presence(redis, "node-b", "https://b.example")
    for i in range(0, 200, 2):
        await connected(a if i % 4 else b, f"h{i}")  # even hosts are held, odd ones are not
    held = {**a.held, **b.held}
    batches: list[int] = []
    real = a.where_many

    async def counted(host_ids: list[str]) -> list[Holder | None]:
        batches.append(len(host_ids))
        if len(batches) == 2:  # the second round trip fails, slowly
            await asyncio.sleep(0.2)
            raise RedisTimeoutError("Timeout reading from socket")
        return await real(host_ids)

    monkeypatch.setattr(a, "where_many", counted)
    asked = [f"h{i}" for i in range(200)] + ["h4", "h5"]
    answers = await asyncio.gather(*(a.where(h) for h in asked))
    assert answers == [held.get(h) for h in asked]
    assert sum(1 for x in answers if x is not None) == 101  # the 100 held, h4 twice
    assert batches == [200]

    failing = asyncio.gather(a.where("h0"), a.where("h1"), return_exceptions=True)
    await asyncio.sleep(0.05)  # that round trip is out
    assert await asyncio.gather(a.where("h2"), a.where("h6")) == [held["h2"], held["h6"]]
    assert [type(x) for x in await failing] == [RedisTimeoutError, RedisTimeoutError]
    assert batches == [200, 2, 2]
    assert await a.where("h8") == held["h8"]  # alone: a GET of its own
    assert batches == [200, 2, 2]


async def test_an_allowlist_of_thousands_of_devices_is_stored_whole_and_put_back_whole(redis: Client) -> None:
    """The keys go to Redis as one argument and the script adds them a thousand at a time (Lua's
    stack is bounded): all 2,500 are members, none of the keys left out is, and a refresh that
    finds the list lost writes it again in full."""
    a = Presence(redis, "node-a", "https://a.example")
    keys = [i.to_bytes(2, "big") * 16 for i in range(2600)]
    listed, left_out = frozenset(keys[:2500]), keys[2500:]
    a.host_connected("h1")
    a.publish_allowlist("h1", listed)
    assert (await a.write()).error is None
    assert await redis.smembers("tether:allow:h1") == listed
    assert await a.allowed("h1", [keys[0], keys[2499], *left_out[:3]]) == [True, True, False, False, False]

    await redis.delete("tether:allow:h1")  # as after a restart
    await a.refresh()
    assert await redis.smembers("tether:allow:h1") == listed
    assert 0 < await redis.pttl("tether:allow:h1") <= TTL_MS


async def test_how_long_each_host_waited_for_its_entry_is_counted_once_and_a_failed_write_forgets_it(
    redis: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``write_seconds``: from a host's admission until the write that put its entry in Redis;
    allowlists and hosts gone are not counted, nor a host whose write failed (the refresh writes
    it), and nothing of it is kept."""
    a = Presence(redis, "node-a", "https://a.example")
    a.host_connected("h1")
    a.publish_allowlist("h1", frozenset({b"k" * 32}))
    await asyncio.sleep(1.0)
    a.host_connected("h2")
    assert (await a.write()).error is None
    waits = a.write_seconds
    assert waits.count == 2 and 1.0 <= waits.sum < 10
    # h2 waited one round trip, h1 a second more
    assert 'tether_relay_cluster_presence_write_seconds_bucket{le="0.5"} 1' in waits.lines()
    assert 'tether_relay_cluster_presence_write_seconds_bucket{le="+Inf"} 2' in waits.lines()

    a.host_gone("h2")
    assert (await a.write()).error is None and waits.count == 2

    async def fails(ops: list[tuple[int, str, Holder | frozenset[bytes], float]]) -> list[object]:
        raise RedisError("connection reset")

    monkeypatch.setattr(a, "_pipeline", fails)
    a.host_connected("h3")
    assert (await a.write()).error is not None
    assert waits.count == 2 and not a.pending  # its wait went with the write: none is kept
