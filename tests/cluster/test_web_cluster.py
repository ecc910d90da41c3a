"""The web client in cluster mode, behind the docs/cluster.md recipe run for real: redis-server,
two relay nodes, Caddy in front of them (tests/support/cluster_lb.py), a host on node 1 (through
its own route, /node-1), and the phone page opened at the load balancer's origin in Chromium at a
phone's size. The balanced route tries node 2 first (``lb_policy first``), so the page's socket
lands on the node that does not hold the host: pairing crosses nodes, and the first channel too,
until node 2's REDIRECT steers the page to node 1 (``/node-1``, same origin). Node metrics (each
node's own port) then show that nothing crosses nodes any more."""

from __future__ import annotations

import json
import random
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.procs import Proc, login, remove, short_home, start_host, tether_json
from tests.support.cluster_lb import ClusterBehindLb, LbNode, need_caddy
from tests.support.redis_server import RedisServer
from tests.web.pages import TIMEOUT, type_line, until, wait_terminal

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(180)]

SENT = 'tether_relay_cluster_records_total{direction="sent"}'
LOCAL = 'tether_relay_channels{path="local"}'
TO_OTHER = 'tether_relay_channels{path="to_other_node"}'
FROM_OTHER = 'tether_relay_channels{path="from_other_node"}'
HOSTS = 'tether_relay_connections{role="host"}'


@dataclass
class Setup:
    lb: ClusterBehindLb
    host: Proc
    host_home: Path

    def node(self, n: int) -> LbNode:
        return self.lb.node(n)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Setup]:
    """Redis, 2 nodes behind Caddy (the balanced route: node 2 first), a host on node 1."""
    need_caddy()
    host_home, workspace = short_home("th"), short_home("tw")
    with RedisServer() as redis, ClusterBehindLb(redis.url, 2, policy="first", order=[2, 1]) as lb:
        # The Python SDK through a node's route: a relay URL with a path (websocket_url keeps it
        # and appends /ws).
        host = start_host(host_home, f"{lb.url}/node-1", workspace)
        try:
            until(lambda: lb.node(1).metrics()[HOSTS] == 1, what="the host on node 1")
            assert lb.node(2).metrics()[HOSTS] == 0
            yield Setup(lb, host, host_home)
        finally:
            host.stop()
            remove(host_home, workspace)


def pair_at_lb(page: Any, setup: Setup, name: str) -> str:
    """Pair the page from the host's link, opened at the load balancer's own origin (the public
    URL); returns the host's id."""
    link = str(tether_json(setup.host_home, "pair", "--json")["link"])
    lb = setup.lb
    # The host dials its node's route, so that is the link's relay; a person opens the cluster's
    # public URL.
    assert link.startswith(f"{lb.origin}/node-1/#pair="), link
    fragment = link.split("#", 1)[1]
    host_id = fragment.removeprefix("pair=").split(".")[0]
    page.goto(f"{lb.origin}/#{fragment}")
    page.wait_for_selector("#pair-host-id", timeout=TIMEOUT)
    assert page.text_content("#pair-host-id") == host_id
    page.fill("#device-name", name)
    page.click("#pair-button")
    page.wait_for_selector(f'a.host[data-host="{host_id}"]', timeout=TIMEOUT)
    return host_id


def stored_node_url(page: Any, host_id: str) -> str | None:
    """The host's node_url in IndexedDB (what a reload starts from)."""
    return page.evaluate(  # type: ignore[no-any-return]
        "async (id) => (await (await import('/store.js')).store.getHost(id))?.node_url ?? null", host_id)


def remember(page: Any, host_id: str, url: str) -> None:
    """Make the page's stored host record name ``url`` as its node (a reload reads it)."""
    page.evaluate("""async ([id, url]) => {
      const { store } = await import('/store.js');
      const host = await store.getHost(id);
      await store.putHost({ ...host, node_url: url });
    }""", [host_id, url])


def settled(setup: Setup, timeout: float = 15) -> tuple[dict[str, float], dict[str, float]]:
    """Node metrics once no channel crosses nodes and the page's one channel is within node 1."""
    def check() -> tuple[dict[str, float], dict[str, float]] | None:
        one, two = setup.node(1).metrics(), setup.node(2).metrics()
        ok = (one[LOCAL] == 1 and one[FROM_OTHER] == 0 and one[TO_OTHER] == 0
              and two[LOCAL] == 0 and two[TO_OTHER] == 0 and two[FROM_OTHER] == 0)
        return (one, two) if ok else None

    return until(check, timeout=timeout, what="the page's channel within node 1, none across nodes",  # type: ignore[no-any-return]
                 seen=lambda: [{k: v for k, v in setup.node(n).metrics().items() if "channels" in k} for n in (1, 2)])


def run_in_terminal(page: Any, setup: Setup, host_id: str) -> None:
    """Start a terminal on the page and see a command's output in it."""
    page.goto(f"{setup.lb.origin}/#/host/{host_id}/new")
    page.fill("#new-command", "bash --norc -i")
    page.click("#start-session")
    n = random.randrange(10**9)
    type_line(page, f"echo web-cluster-$(({n}+1))")
    wait_terminal(page, f"web-cluster-{n + 1}")


@pytest.mark.browser
def test_a_phone_paired_through_the_load_balancer_is_steered_to_the_host_s_node(page: Any, cluster: Setup) -> None:
    lb = cluster.lb
    node_url = f"{lb.origin}/node-1"
    sent_before = cluster.node(2).metrics()[SENT]
    host_id = pair_at_lb(page, cluster, "phone-in-a-cluster")
    # The balanced route sent the page's socket to node 2: pairing went across the bus.
    assert cluster.node(2).metrics()[SENT] > sent_before

    # Its host connection opens through node 2 too; node 2 says node 1 holds the host (REDIRECT),
    # the page reconnects the host there and keeps that with it.
    until(lambda: stored_node_url(page, host_id) == node_url, what="node_url remembered",
          seen=lambda: stored_node_url(page, host_id))
    assert page.evaluate("(id) => window.tether.host(id).relay_url", host_id) == lb.origin
    assert page.evaluate("(id) => window.tether.conns.get(id).relay.relayUrl", host_id) == node_url
    # Presence is a node's own: node 1 sees the host, so the hosts screen says online.
    page.wait_for_selector(f'a.host[data-host="{host_id}"][data-online="1"]', timeout=TIMEOUT)

    # The channel through node 2 was closed when the one at node 1 opened (well within the 10 s a
    # host gives a channel that never completes its handshake).
    settled(cluster, timeout=4)
    sent = {n: cluster.node(n).metrics()[SENT] for n in (1, 2)}
    run_in_terminal(page, cluster, host_id)
    # A terminal started and driven from the page, and not one record between the nodes.
    one, two = settled(cluster)
    assert {1: one[SENT], 2: two[SENT]} == sent

    # Next time the page starts at the node it remembered: no OPEN crosses nodes, not even once.
    page.goto(f"{lb.origin}/#/")
    page.reload()
    page.wait_for_selector(f'a.host[data-host="{host_id}"][data-online="1"]', timeout=TIMEOUT)
    until(lambda: page.evaluate("(id) => window.tether.conns.get(id)?.state", host_id) == "connected",
          what="the host connected again")
    one, two = settled(cluster)
    assert {1: one[SENT], 2: two[SENT]} == sent
    assert not page.errors


@pytest.mark.browser
def test_a_remembered_node_that_fails_is_dropped_and_the_page_is_steered_again(page: Any, cluster: Setup) -> None:
    lb = cluster.lb
    host_id = pair_at_lb(page, cluster, "phone-with-a-stale-node")
    node_url = f"{lb.origin}/node-1"
    until(lambda: stored_node_url(page, host_id) == node_url, what="node_url remembered")
    # What the page may follow: its own origin only (connect-src 'self'), whatever the scheme says.
    dialable = page.evaluate("""async (o) => {
      const { pageMayDial } = await import('/connection.js');
      const ws = o.replace('http:', 'ws:');
      return [o + '/node-1', ws + '/node-1/ws', o.replace('http:', 'https:') + '/node-1',
              'http://127.0.0.2' + o.slice(o.lastIndexOf(':')) + '/node-1', 'wss://evil.example/node-1']
        .map((u) => pageMayDial(u));
    }""", lb.origin)
    assert dialable == [True, True, False, False, False]

    # The host held by another node than the one remembered (as after it reconnected elsewhere):
    # that node reaches it across the bus and says where it is; the page goes there.
    remember(page, host_id, f"{lb.origin}/node-2")
    page.reload()
    page.wait_for_selector(f'a.host[data-host="{host_id}"]', timeout=TIMEOUT)
    until(lambda: stored_node_url(page, host_id) == node_url, what="steered from node 2 to node 1",
          seen=lambda: stored_node_url(page, host_id))
    settled(cluster, timeout=4)

    # A node the cluster no longer has (Caddy has no /node-9: node 2 answers it 404).
    gone = f"{lb.origin}/node-9"
    remember(page, host_id, gone)
    dialed: list[str] = []
    page.on("websocket", lambda ws: dialed.append(ws.url))
    page.reload()
    page.wait_for_selector(f'a.host[data-host="{host_id}"]', timeout=TIMEOUT)
    # Tried first, failed, forgotten; home again, and steered to node 1 again.
    until(lambda: stored_node_url(page, host_id) == node_url, timeout=30, what="steered again",
          seen=lambda: stored_node_url(page, host_id))
    ws = lb.url
    assert dialed.index(f"{ws}/node-9/ws") < dialed.index(f"{ws}/node-1/ws"), dialed
    assert f"{ws}/ws" in dialed, dialed
    assert gone not in page.evaluate("[...window.tether.relays.keys()]")
    page.wait_for_selector(f'a.host[data-host="{host_id}"][data-online="1"]', timeout=TIMEOUT)
    settled(cluster)
    run_in_terminal(page, cluster, host_id)
    assert not page.errors


def test_the_cli_behind_the_load_balancer_follows_a_redirect_to_a_node_s_path(cluster: Setup) -> None:
    """The Python SDK's side of the same recipe: paired at the public URL, steered to the node's
    route (a relay URL with a path), remembered in hosts.json."""
    lb = cluster.lb
    client_home = short_home("tc")
    try:
        link = str(tether_json(cluster.host_home, "pair", "--json")["link"])
        login(client_home, f"{lb.origin}/#{link.split('#', 1)[1]}", "--name", "cli-in-a-cluster", "--json")
        [entry] = json.loads((client_home / "client" / "hosts.json").read_text())["hosts"]
        assert entry["relay_url"] == lb.origin and not entry.get("node_url")
        assert isinstance(tether_json(client_home, "sessions", "list", "--json"), list)
        [entry] = json.loads((client_home / "client" / "hosts.json").read_text())["hosts"]
        assert entry["node_url"] == f"{lb.origin}/node-1"
        sent = {n: cluster.node(n).metrics()[SENT] for n in (1, 2)}
        assert isinstance(tether_json(client_home, "sessions", "list", "--json"), list)
        assert {n: cluster.node(n).metrics()[SENT] for n in (1, 2)} == sent  # straight to node 1
    finally:
        remove(client_home)


def test_the_load_balancer_sends_everything_to_the_nodes_alive() -> None:
    """The recipe's balanced route when a node dies: requests that reached for it are tried on
    another node (lb_try_duration), not answered 502; its own route says it is gone."""
    need_caddy()
    with RedisServer() as redis, ClusterBehindLb(redis.url, 2, policy="first", order=[2, 1]) as lb:
        assert lb.node(2).metrics()[HOSTS] == 0
        lb.node(2).proc.stop(signal.SIGKILL)
        for _ in range(10):  # the first ones find node 2 dead and go on to node 1
            with urllib.request.urlopen(f"{lb.origin}/healthz", timeout=10) as response:
                assert (response.status, response.read()) == (200, b"ok\n")
            with urllib.request.urlopen(f"{lb.origin}/", timeout=10) as response:
                assert response.status == 200 and b"<html" in response.read().lower()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{lb.origin}/node-2/healthz", timeout=10)
        assert refused.value.code == 502
        # /metrics is not the internet's: through Caddy (X-Forwarded-For) it is not found.
        with pytest.raises(urllib.error.HTTPError) as hidden:
            urllib.request.urlopen(f"{lb.origin}/node-1/metrics", timeout=10)
        assert hidden.value.code == 404
        assert HOSTS in lb.node(1).metrics()
        # The Python SDK through the balanced route, as a host would dial the public URL.
        host_home, workspace = short_home("th"), short_home("tw")
        try:
            host = start_host(host_home, lb.url, workspace)
            host.stop()
        finally:
            remove(host_home, workspace)
        # Redis away: the node alive says so, and stays in the balancer (200), since it still
        # serves every channel within itself.
        redis.stop()

        def health() -> str:
            with urllib.request.urlopen(f"{lb.origin}/healthz", timeout=10) as response:
                assert response.status == 200
                return response.read().decode()

        until(lambda: health().startswith("degraded: cluster: "), timeout=20, what="degraded", seen=health)
        with urllib.request.urlopen(f"{lb.origin}/", timeout=10) as response:
            assert response.status == 200
