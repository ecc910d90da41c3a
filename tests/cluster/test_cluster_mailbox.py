"""The cluster's mailbox (``relay/cluster/mailbox.py``) with real node processes and a real
redis-server: what a host left on one node is there for its devices on another, what they queue
reaches the host on whichever node it comes back to, and the allowlist a host publishes on one
node holds on every node. The blobs are opaque to the relay: random bytes stand in for sealed
ones (tests/relay/test_mailbox.py runs the store's own tests against Redis as well)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import start_host, tether, tether_json
from tests.support.cluster_nodes import Node, events_until, pair_across, running_nodes
from tests.support.redis_server import RedisServer
from tether.client.mailbox import queue, read_snapshot
from tether.crypto.keys import Identity
from tether.protocol.frames import CloseCode
from tether.relay.errors import MailboxRefusal
from tether.relay.link import RelayLink

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def nodes(redis_server: RedisServer) -> Iterator[list[Node]]:
    with running_nodes([redis_server.url], count=3) as started:
        yield started


@pytest.fixture
async def opened() -> AsyncIterator[list[RelayLink]]:
    links: list[RelayLink] = []
    yield links
    for link in links:
        await link.close()


async def test_a_host_away_from_every_node_is_served_by_the_cluster_s_mailbox(
    nodes: list[Node], opened: list[RelayLink]
) -> None:
    one, two, three = nodes
    host, phone, tablet = Identity.generate(), Identity.generate(), Identity.generate()

    async def connect(node: Node, identity: Identity, role: str = "device") -> RelayLink:
        link = await RelayLink.connect(node.url, identity, role)
        opened.append(link)
        return link

    # On node 1 the host publishes its allowlist and leaves each device a snapshot, then goes.
    link = await connect(one, host, "host")
    await link.publish_allowlist([phone.identity_public, tablet.identity_public])
    for_phone, for_tablet = os.urandom(3000), os.urandom(1000)
    await link.deposit(phone.identity_public, for_phone)
    await link.deposit(tablet.identity_public, for_tablet)
    host_id = link.id
    await link.close()

    # A device on node 2 reads its own snapshot (and only its own), and queues prompts.
    phone_link = await connect(two, phone)
    held = await phone_link.snapshot(host_id)
    assert held is not None and held[1] == for_phone
    stranger = await connect(two, Identity.generate())
    assert await stranger.snapshot(host_id) is None
    with pytest.raises(MailboxRefusal) as refused:
        await stranger.queue(host_id, b"not mine" * 10)
    assert refused.value.close_code == CloseCode.HOST_OFFLINE
    tablet_link = await connect(three, tablet)
    queued = [await phone_link.queue(host_id, b"first" * 20), await tablet_link.queue(host_id, b"second" * 20),
              await phone_link.queue(host_id, b"third" * 20)]
    assert queued == sorted(queued) and len(set(queued)) == 3

    # The host comes back on node 3: it takes them all, in order, from whichever node they were
    # queued on; what it acks is gone on every node.
    back = await connect(three, host, "host")
    await back.publish_allowlist([phone.identity_public, tablet.identity_public])
    items = await back.take()
    assert [(i.item, i.sealed) for i in items] == [(queued[0], b"first" * 20), (queued[1], b"second" * 20),
                                                   (queued[2], b"third" * 20)]
    assert [i.device_identity for i in items] == [phone.identity_public, tablet.identity_public,
                                                  phone.identity_public]
    await back.ack(queued[:2])
    await back.close()
    again = await connect(one, host, "host")
    await again.publish_allowlist([phone.identity_public])  # the tablet is revoked while the host is on node 1
    assert [i.item for i in await again.take()] == [queued[2]]
    await again.close()

    # The revocation holds on the other nodes: the tablet's snapshot and its prompts are gone.
    assert await tablet_link.snapshot(host_id) is None
    with pytest.raises(MailboxRefusal) as revoked:
        await tablet_link.queue(host_id, b"after revocation" * 5)
    assert revoked.value.close_code == CloseCode.HOST_OFFLINE
    held = await phone_link.snapshot(host_id)
    assert held is not None and held[1] == for_phone


async def test_a_node_s_restart_loses_nothing_of_the_mailbox(
    redis_server: RedisServer, opened: list[RelayLink]
) -> None:
    host, phone = Identity.generate(), Identity.generate()
    with running_nodes([redis_server.url], count=1) as [node]:
        link = await RelayLink.connect(node.url, host, "host")
        await link.publish_allowlist([phone.identity_public])
        await link.deposit(phone.identity_public, b"snapshot" * 100)
        await link.close()
        device = await RelayLink.connect(node.url, phone, "device")
        item = await device.queue(link.id, b"prompt" * 20)
        await device.close()
    with running_nodes([redis_server.url], count=1) as [node]:
        device = await RelayLink.connect(node.url, phone, "device")
        opened.append(device)
        held = await device.snapshot(link.id)
        assert held is not None and held[1] == b"snapshot" * 100
        back = await RelayLink.connect(node.url, host, "host")
        opened.append(back)
        assert [(i.item, i.sealed) for i in await back.take()] == [(item, b"prompt" * 20)]


async def test_an_item_queued_on_another_node_reaches_a_host_that_is_back_at_once(
    nodes: list[Node], opened: list[RelayLink]
) -> None:
    one, two, _ = nodes
    host, phone = Identity.generate(), Identity.generate()
    link = await RelayLink.connect(one.url, host, "host")
    opened.append(link)
    await link.publish_allowlist([phone.identity_public])
    assert await link.take() == []  # taken: what comes next is sent to it at once
    device = await RelayLink.connect(two.url, phone, "device")
    opened.append(device)
    # queued on node 2 while the host is on node 1 (a device that thought it away)
    item = await device.queue(link.id, b"while you were here" * 3)
    async with asyncio.timeout(10):
        pushed = await link.mailbox_items.get()
    assert pushed.item == item and pushed.sealed == b"while you were here" * 3 and pushed.req == 0
    # still in the mailbox until the host acks it, as on one relay
    assert [i.item for i in await link.take()] == [item]


async def test_a_real_host_s_snapshot_and_a_prompt_queued_for_it_cross_the_cluster(
    nodes: list[Node], homes: tuple[Path, Path, Path]
) -> None:
    """`tether host` on node 1, its device paired through node 2: the host stops (leaving each device
    its snapshot), the device reads it and queues a prompt, and the host, back on node 3, takes the
    prompt and answers it on the session (a pty that ended with the host: refused, and said why)."""
    one, two, three = nodes
    host_home, workspace, client_home = homes
    host = start_host(host_home, one.url, workspace)
    try:
        pair_across(one, two, host_home, client_home)
        session_id = tether_json(client_home, "sessions", "start", "--agent", "pty", "--json", "--", "bash")["id"]
        n = random.randrange(10**9)
        tether(client_home, "sessions", "send", session_id, f"echo away-$(({n}+1))")
        events_until(client_home, session_id, f"away-{n + 1}")
    finally:
        host.stop()  # SIGTERM: the host leaves each device its last snapshot
    held = await read_snapshot(client_home)
    assert held is not None
    _, snapshot = held
    assert [s["id"] for s in snapshot.sessions] == [session_id]
    cid = await queue(client_home, None, "sessions.send", {"id": session_id, "text": "echo queued"})

    back = start_host(host_home, three.url, workspace)
    try:
        deadline = time.monotonic() + 30
        refused: list[dict[str, Any]] = []
        while not refused and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
            out = tether(client_home, "sessions", "events", session_id, "--json").stdout
            refused = [e for e in map(json.loads, out.splitlines()) if e["type"] == "mailbox.refused"]
        assert [e["data"]["cid"] for e in refused] == [cid]
    finally:
        back.stop()
