"""Fixtures for cluster-mode tests: real ``redis-server`` processes on 127.0.0.1 (see
tests/support/redis_server.py), always stopped and their directories removed afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import remove, short_home
from tests.support import cluster_nodes
from tests.support.redis_server import RedisCluster, RedisServer
from tests.web.conftest import browser, page  # noqa: F401 (the browser tests' fixtures, for the web client here)
from tether.relay.cluster.redis_client import Client, connect


@pytest.fixture(autouse=True)
def _node_logs() -> None:
    """Each test's nodes, from its start: their logs go into the report of a test that fails."""
    cluster_nodes.STARTED.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.failed and report.when == "call" and cluster_nodes.STARTED:
        report.sections.append(("relay node logs", cluster_nodes.log_tails()))
    return report


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """One Redis on a free port, persistence off."""
    with RedisServer() as server:
        yield server


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Client]:
    """A client of ``redis_server`` as a node has one (``redis_client.connect``)."""
    client = await connect([redis_server.url])
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def redis_servers() -> Iterator[Callable[..., RedisServer]]:
    """Start more servers (``redis_servers(args=[...])``); all are closed at the end."""
    started: list[RedisServer] = []

    def make(**kwargs: Any) -> RedisServer:
        server = RedisServer(**kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()


@pytest.fixture
def redis_cluster() -> Iterator[RedisCluster]:
    """A Redis Cluster of 3 masters, no replicas, ``cluster_state:ok`` (takes about 2 s: a fresh
    master waits 2 s before it declares the cluster writable)."""
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture
def homes() -> Iterator[tuple[Path, Path, Path]]:
    """A host's home, its workspace and a client's home (short paths: unix sockets live there)."""
    made = (short_home("th"), short_home("tw"), short_home("tc"))
    yield made
    remove(*made)
