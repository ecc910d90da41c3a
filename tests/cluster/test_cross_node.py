"""Cluster mode with real processes: relay nodes sharing a real redis-server, a host on one node
and its device on another."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import start_host, tether, tether_json
from tests.support.cluster_nodes import Node, events_until, hosts_file, metrics, pair_across, running_nodes
from tests.support.redis_server import RedisServer
from tether import Client
from tether.client.state import ClientState
from tether.crypto.keys import Identity
from tether.protocol.frames import CloseCode
from tether.relay.link import RelayLink

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def nodes(redis_server: RedisServer) -> Iterator[list[Node]]:
    with running_nodes([redis_server.url]) as started:
        yield started


async def test_a_device_on_another_node_pairs_works_across_nodes_then_is_steered_to_the_host_s_node(
    nodes: list[Node], homes: tuple[Path, Path, Path]
) -> None:
    one, two = nodes
    host_home, workspace, client_home = homes
    host = start_host(host_home, one.url, workspace)
    try:
        host_id = pair_across(one, two, host_home, client_home)
        [entry] = hosts_file(client_home)
        assert entry["host_id"] == host_id and entry["relay_url"] == two.origin and not entry.get("node_url")
        sent_before = metrics(two)['tether_relay_cluster_records_total{direction="sent"}']
        assert sent_before > 0  # the pairing went through the bus

        # The first command's channel opens across nodes; node 2 says which node holds the host,
        # and the client goes there.
        session_id = tether_json(client_home, "sessions", "start", "--agent", "pty", "--json", "--", "bash")["id"]
        [entry] = hosts_file(client_home)
        assert entry["node_url"] == one.origin
        n = random.randrange(10**9)
        tether(client_home, "sessions", "send", session_id, f"echo cross-$(({n}+1))")
        events = events_until(client_home, session_id, f"cross-{n + 1}")
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

        # From now on the client's channel is within node 1: nothing crosses nodes.
        sent = metrics(two)['tether_relay_cluster_records_total{direction="sent"}']
        async with await Client.open(client_home) as client:
            assert [s["id"] for s in await client.sessions()] == [session_id]
            first, second = metrics(one), metrics(two)
        assert first['tether_relay_channels{path="local"}'] == 1
        assert first['tether_relay_channels{path="from_other_node"}'] == 0
        assert second['tether_relay_channels{path="to_other_node"}'] == 0
        assert second['tether_relay_connections{role="device"}'] == 0
        assert metrics(two)['tether_relay_cluster_records_total{direction="sent"}'] == sent

        # The host moves to node 2: the node the client remembers sends it on, and it follows.
        host.stop()
        host = start_host(host_home, two.url, workspace)
        assert [s["id"] for s in tether_json(client_home, "sessions", "list", "--json")] == [session_id]
        [entry] = hosts_file(client_home)
        assert entry["node_url"] == two.origin
    finally:
        host.stop()


def test_a_host_on_no_node_is_offline_from_every_node(nodes: list[Node], homes: tuple[Path, Path, Path]) -> None:
    one, two = nodes
    host_home, workspace, client_home = homes
    host = start_host(host_home, one.url, workspace)
    pair_across(one, two, host_home, client_home)
    host.stop()
    result = tether(client_home, "sessions", "list", "--json", check=False, timeout=60)
    assert result.returncode != 0
    assert "offline" in result.stderr, result.stderr


async def _watch(url: str, identity: Identity, host_id: str, want: bool, timeout: float = 15) -> float:
    """Watch ``host_id`` at ``url`` until it shows ``want``; how long that took."""
    link = await RelayLink.connect(url, identity, "device")
    started = time.monotonic()
    try:
        await link.watch([host_id])
        async with asyncio.timeout(timeout):
            while link.presence.get(host_id) is not want:
                await link.wait_presence_change()
        return time.monotonic() - started
    finally:
        await link.close()


async def test_a_host_on_another_node_is_online_for_its_devices_only_and_its_changes_reach_them(
    nodes: list[Node], homes: tuple[Path, Path, Path]
) -> None:
    one, two = nodes
    host_home, workspace, client_home = homes
    host = start_host(host_home, one.url, workspace)
    try:
        pair_across(one, two, host_home, client_home)
        state = ClientState(client_home)
        [paired] = state.hosts()
        [entry] = tether_json(client_home, "hosts", "--json")  # asked at node 2
        assert entry["online"] is True
        # A stranger watching through node 2 learns nothing: offline, as from the host's own node.
        stranger = Identity.generate()
        await _watch(two.url, stranger, paired.host_id, want=False)
        await _watch(one.url, stranger, paired.host_id, want=False)

        # The host leaves: the device watching through node 2 hears it; and when it comes back
        # on node 2 itself, and then on node 1 again.
        watcher = await RelayLink.connect(two.url, state.identity(), "device")
        try:
            await watcher.watch([paired.host_id])

            async def shows(want: bool) -> None:
                async with asyncio.timeout(15):
                    while watcher.presence.get(paired.host_id) is not want:
                        await watcher.wait_presence_change()

            await shows(True)
            host.stop()
            await shows(False)
            host = start_host(host_home, two.url, workspace)
            await shows(True)
            host.stop()
            await shows(False)
            host = start_host(host_home, one.url, workspace)
            await shows(True)
            # Revoked on the host (node 1): the device watching on node 2 sees it offline.
            [device] = tether_json(host_home, "devices", "list", "--json")
            await asyncio.to_thread(tether, host_home, "devices", "revoke", device["id"])
            await shows(False)
        finally:
            await watcher.close()
    finally:
        host.stop()


async def test_a_host_connected_to_two_nodes_keeps_the_newer_connection(nodes: list[Node]) -> None:
    """A reconnect race: the host's new connection lands on node 2 while node 1 still holds the
    old one. The newer wins, node 1 closes the older (REPLACED), and devices reach the newer."""
    one, two = nodes
    host = Identity.generate()
    older = await RelayLink.connect(one.url, host, "host")
    newer = await RelayLink.connect(two.url, host, "host")
    try:
        async with asyncio.timeout(10):
            await older.wait_closed()
        assert older.close_code == CloseCode.REPLACED
        assert not newer.closed
        device = Identity.generate()
        await newer.publish_allowlist([device.identity_public])
        await asyncio.sleep(0.3)  # node 2 applies it
        link = await RelayLink.connect(one.url, device, "device")  # through the node the host left
        try:
            async with asyncio.timeout(10):
                await link.open(older.id)
                accepted = await newer.accept()
            assert accepted.peer_identity == device.identity_public
        finally:
            await link.close()
    finally:
        await older.close()
        await newer.close()
