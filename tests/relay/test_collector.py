"""``tether relay``'s garbage-collector setting (src/tether/relay/collector.py): a process filling
up with long-lived objects, as a relay taking thousands of hosts does, no longer walks every live
object again and again; and ``/metrics`` counts the full collections."""

from __future__ import annotations

import asyncio
import gc
import urllib.request
from collections.abc import Iterator

import pytest

from tether.relay.collector import collect_less_often
from tether.relay.server import RelayServer


@pytest.fixture
def thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def full_collections_while_filling_up() -> int:
    """Keep 600,000 small containers (about 60 per connection for 10,000 connections), a few
    short-lived ones allocated beside each, and count the full collections that ran meanwhile."""
    full = 0

    def count(phase: str, info: dict[str, int]) -> None:
        nonlocal full
        if phase == "stop" and info["generation"] == 2:
            full += 1

    kept: list[list[int]] = []
    gc.collect()
    gc.callbacks.append(count)
    try:
        for i in range(600_000):
            kept.append([i])
            _ = [[i], [i]]  # garbage at once, as most of what a relay allocates
    finally:
        gc.callbacks.remove(count)
    return full


def test_a_process_filling_up_with_connections_is_not_walked_again_and_again(thresholds: None) -> None:
    gc.set_threshold(700, 10, 10)  # CPython's default
    before = full_collections_while_filling_up()
    collect_less_often()
    after = full_collections_while_filling_up()
    assert gc.get_threshold()[:2] == (700, 10)  # the young generations keep their thresholds
    assert before >= 4  # the old objects grew by a quarter again and again
    assert after <= 1


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


async def test_metrics_count_the_collections_by_generation() -> None:
    server = RelayServer()
    port = await server.start("127.0.0.1", 0)
    try:
        gc.collect()
        text = await asyncio.to_thread(get, f"http://127.0.0.1:{port}/metrics")
    finally:
        await server.close()
    counts = {line.split()[0]: int(line.split()[1]) for line in text.splitlines()
              if line.startswith("python_gc_collections_total")}
    assert set(counts) == {f'python_gc_collections_total{{generation="{n}"}}' for n in range(3)}
    assert counts['python_gc_collections_total{generation="2"}'] >= 1  # the gc.collect() above
