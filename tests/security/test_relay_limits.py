"""Attacks on what one party may cost everybody else at a real relay process (issue [6]): one
device holding every channel of a host, a stranger probing whether a host is online, request
bodies streamed at the HTTP port, and a flood that runs the relay out of file descriptors.

Attackers dial from 127.0.0.2 and up (still loopback) so that the per-address limits they trip
are not the legitimate parties', which dial from 127.0.0.1. Every loop is bounded in count and
in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import TETHER, Proc, remove, short_home, start_host, start_relay, tether_json
from tests.relay.rawws import RawSocket
from tests.security.test_relay_attacks import ATTACKER, legit_pair, relay_with, rss_kib, still_works, try_upgrade
from tests.support.deployment import Deployment
from tether.client.state import ClientState
from tether.crypto.keys import Identity
from tether.protocol.frames import CloseCode
from tether.relay.link import ChannelClosed, RelayLink

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def homes() -> Iterator[list[Path]]:
    made: list[Path] = []

    def make() -> Path:
        made.append(short_home("tl"))
        return made[-1]

    yield [make() for _ in range(4)]
    remove(*made)


def deploy(host_home: Path, workspace: Path, *relay_args: str) -> Deployment:
    relay, port = start_relay(0, *relay_args)
    try:
        host = start_host(host_home, f"ws://127.0.0.1:{port}", workspace)
    except BaseException:
        relay.stop()
        raise
    return Deployment(relay, port, host, host_home, workspace)


def sessions_list(home: Path) -> list[object]:
    """A real CLI client's request through the relay and the host (a channel of its own)."""
    sessions: list[object] = tether_json(home, "sessions", "list", "--json", timeout=30)
    return sessions


# --- item 6: one device cannot hold every channel of a host --------------------------------------

CHANNEL_CAP = 8


def test_one_device_at_its_channel_cap_leaves_the_host_to_the_others(homes: list[Path]) -> None:
    host_home, workspace, greedy_home, other_home = homes
    deployment = deploy(host_home, workspace, "--max-channels-per-device", str(CHANNEL_CAP))
    try:
        host_id = deployment.pair(greedy_home)
        deployment.pair(other_home)
        asyncio.run(_greedy_device(deployment, host_id, ClientState(greedy_home).identity(), other_home))
        assert deployment.relay.alive and deployment.host.alive
    finally:
        deployment.host.stop()
        deployment.relay.stop()
    assert "Traceback" not in deployment.relay.log


async def _greedy_device(deployment: Deployment, host_id: str, identity: Identity, other_home: Path) -> None:
    # Two connections with the same key: the cap is the key's, not one connection's.
    links = [await RelayLink.connect(deployment.relay_url, identity, "device") for _ in range(2)]
    try:
        opened, refused = [], []
        async with asyncio.timeout(30):
            for i in range(CHANNEL_CAP + 6):  # bounded: a few past the cap
                try:
                    opened.append(await links[i % 2].open(host_id))
                except ChannelClosed as exc:
                    refused.append(exc)
        print(f"one device opened {len(opened)} channels, {len(refused)} more were refused")
        assert len(opened) == CHANNEL_CAP, [str(r) for r in refused]
        assert len(refused) == 6
        for exc in refused:
            assert exc.close_code == CloseCode.TOO_MANY_CHANNELS
            assert f"this device has {CHANNEL_CAP} channels open through the relay, its limit" in exc.message
        # Another device of the same host is served end to end, by the real host, meanwhile.
        assert await asyncio.to_thread(sessions_list, other_home) == []
        # Closing one of its channels gives the device one back.
        await opened.pop().close()
        async with asyncio.timeout(10):
            while True:
                try:
                    opened.append(await links[0].open(host_id))
                    break
                except ChannelClosed as exc:  # the CLOSE may still be on its way to the relay
                    assert exc.close_code == CloseCode.TOO_MANY_CHANNELS
                    await asyncio.sleep(0.05)
    finally:
        for link in links:
            await link.close()


# --- item 12: a stranger learns nothing about a host's presence -----------------------------------


def test_a_stranger_cannot_tell_whether_a_host_is_online(homes: list[Path]) -> None:
    host_home, workspace, client_home, _ = homes
    deployment = deploy(host_home, workspace)
    try:
        host_id = deployment.pair(client_home)
        paired = ClientState(client_home).identity()
        asyncio.run(_stranger_probes(deployment, host_id, paired))
        assert sessions_list(client_home) == []  # the paired device is served meanwhile
        deployment.host.stop()
        asyncio.run(_paired_sees_offline(deployment, host_id, paired))
    finally:
        deployment.host.stop()
        deployment.relay.stop()


async def _refusal(link: RelayLink, host_id: str, offer_id: str | None) -> tuple[int, str]:
    with pytest.raises(ChannelClosed) as info:
        await link.open(host_id, offer_id=offer_id)
    return info.value.close_code, info.value.message


async def _stranger_probes(deployment: Deployment, host_id: str, paired: Identity) -> None:
    url = deployment.relay_url
    stranger = await RelayLink.connect(url, Identity.generate(), "device")
    # A host that was online and left, and a host id nobody ever used.
    gone = await RelayLink.connect(url, Identity.generate(), "host")
    await gone.close()
    offline_ids = [gone.id, Identity.generate().id]
    seer = await RelayLink.connect(url, paired, "device")
    try:
        async with asyncio.timeout(20):
            for offer_id in (None, os.urandom(8).hex()):  # plain OPEN, and one with a made-up offer
                online = await _refusal(stranger, host_id, offer_id)
                for offline_id in offline_ids:
                    assert await _refusal(stranger, offline_id, offer_id) == online
                print(f"online and offline hosts alike (offer {offer_id}): {online}")
                assert online[0] == CloseCode.HOST_OFFLINE
            # WATCH shows presence only to devices the host allows
            await stranger.watch([host_id, *offline_ids])
            await seer.watch([host_id])
            while len(stranger.presence) < 3 or host_id not in seer.presence:
                await asyncio.gather(stranger.wait_presence_change(), seer.wait_presence_change())
        assert stranger.presence == dict.fromkeys([host_id, *offline_ids], False)
        assert seer.presence[host_id] is True
    finally:
        await seer.close()
        await stranger.close()


async def _paired_sees_offline(deployment: Deployment, host_id: str, paired: Identity) -> None:
    link = await RelayLink.connect(deployment.relay_url, paired, "device")
    try:
        async with asyncio.timeout(10):
            code, message = await _refusal(link, host_id, None)
        assert code == CloseCode.HOST_OFFLINE and "offline" in message
    finally:
        await link.close()


# --- item 14: request bodies are refused, never read ---------------------------------------------

BODY_SHAPES = {
    "GET with Content-Length": b"GET / HTTP/1.1\r\nHost: relay\r\nContent-Length: 10737418240\r\n\r\n",
    "POST to /ws": b"POST /ws HTTP/1.1\r\nHost: relay\r\nContent-Length: 10737418240\r\n\r\n",
    "chunked": b"GET /healthz HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: chunked\r\n\r\n",
}


def _stream_body(port: int, head: bytes, seconds: float) -> tuple[int, bytes, float]:
    """Send ``head`` then zeros until the relay hangs up (the write fails), for at most
    ``seconds`` or 4 GiB, while reading its answer; (bytes the kernel took, the answer, seconds
    until the relay hung up).

    Plain blocking sockets, a thread each way: the relay closes with the body unread, so the
    kernel resets the connection, and only a reader that is already waiting sees the answer
    first (an asyncio stream raises the write's reset on read and drops what it had).
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=seconds, source_address=(ATTACKER, 0))
    answer = bytearray()

    def read() -> None:
        with contextlib.suppress(OSError):  # the reset after the answer, or the timeout
            while block := sock.recv(4096):
                answer.extend(block)

    reader = threading.Thread(target=read)
    reader.start()
    chunk = bytes(1 << 20)
    sent = 0
    start = time.monotonic()
    with contextlib.suppress(OSError):
        sock.sendall(head)
        while sent < 4 << 30 and time.monotonic() - start < seconds:
            sent += sock.send(chunk)
    hung_up = time.monotonic() - start
    reader.join(seconds)
    sock.close()
    return sent, bytes(answer), hung_up


@pytest.mark.parametrize("shape", list(BODY_SHAPES))
async def test_a_request_body_is_answered_400_and_not_read(shape: str) -> None:
    with relay_with() as (relay, port):
        async with legit_pair(port) as (host, _device, host_side, device_side):
            before = rss_kib(relay)
            sent, answer, hung_up = await asyncio.to_thread(_stream_body, port, BODY_SHAPES[shape], 5)
            after = rss_kib(relay)
            print(
                f"{shape}: the client got {sent / 2**20:.1f} MiB into its socket before the relay answered and "
                f"hung up after {hung_up:.2f} s; relay RSS {before} → {after} KiB"
            )
            assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
            assert b"without a body" in answer
            assert hung_up < 2
            assert sent < 64 << 20, "the relay must not read the body"
            assert after - before < 16 << 10
            # other methods, without a body, are refused too; a page and the WebSocket still work
            for request, status in (
                (b"PUT /healthz HTTP/1.1\r\nHost: relay\r\n\r\n", b"405"),
                (b"HEAD /healthz HTTP/1.1\r\nHost: relay\r\n\r\n", b"200"),
                (b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n", b"200"),
            ):
                sock = await RawSocket.connect(port, source=ATTACKER)
                sock.writer.write(request)
                async with asyncio.timeout(5):
                    head = await sock.reader.readuntil(b"\r\n\r\n")
                sock.abort()
                assert head.split(b" ")[1] == status, (request, head)
            await still_works(host, host_side, device_side, port)


# --- item 9: out of file descriptors -------------------------------------------------------------

OPEN_FILES = 256


def start_relay_with_open_files(limit: int) -> tuple[Proc, int]:
    """``tether relay`` whose soft and hard RLIMIT_NOFILE are both ``limit`` (it cannot raise it)."""
    code = (
        "import resource, runpy, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit})); "
        "sys.argv = ['tether', *sys.argv[1:]]; runpy.run_module('tether', run_name='__main__')"
    )
    assert TETHER[1:] == ["-m", "tether"]
    proc = Proc([sys.executable, "-c", code, "relay", "--listen", "127.0.0.1:0"], name="relay")
    match = proc.wait_for(r"relay listening on 127\.0\.0\.1:(\d+)")
    return proc, int(match.group(1))


def open_fds(proc: Proc) -> int:
    return len(os.listdir(f"/proc/{proc.popen.pid}/fd"))


@pytest.mark.slow
async def test_a_flood_past_the_descriptor_limit_gets_503_and_a_short_log() -> None:
    relay, port = start_relay_with_open_files(OPEN_FILES)
    figures = re.search(r"open files: at most (\d+) per process; at most (\d+) connections at once", relay.log)
    try:
        assert figures is not None and int(figures.group(1)) == OPEN_FILES, relay.log
        cap = int(figures.group(2))
        assert OPEN_FILES // 2 < cap < OPEN_FILES - 32
        await _flood(relay, port, cap)
        assert relay.alive
    finally:
        relay.stop()
    assert "Traceback" not in relay.log


async def _flood(relay: Proc, port: int, cap: int) -> None:
    attempts = 2 * cap
    statuses: list[int | str] = []
    held: list[RawSocket] = []
    peak = [0]
    gate = asyncio.Semaphore(64)

    async def attempt(i: int) -> None:
        # eight addresses, each far inside its own limit of 256 connections
        async with gate:
            body = await try_upgrade(port, f"127.0.0.{2 + i % 8}", held, statuses)
            assert not body or "retry in a few seconds" in body
            peak[0] = max(peak[0], open_fds(relay))

    async with legit_pair(port) as (host, _device, host_side, device_side):
        log_before = relay.log_path.stat().st_size
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            async with asyncio.timeout(60):
                await asyncio.gather(*(attempt(i) for i in range(attempts)))
                # sockets that never send a request are answered at once too
                silent = [await RawSocket.connect(port, source=f"127.0.0.{10 + i % 4}") for i in range(40)]
                answers = await asyncio.gather(*(sock.reader.read(200) for sock in silent))
                for sock in silent:
                    sock.abort()
            elapsed = loop.time() - start
            assert all(a.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 5" in a for a in answers), answers[:3]
            admitted, unavailable = statuses.count(101), statuses.count(503)
            assert admitted + unavailable == attempts, {s for s in statuses if s not in (101, 503)}
            assert cap - 8 <= admitted <= cap - 2, admitted  # the pair holds two; the cap is not overshot
            # the pair keeps talking while the relay is full
            async with asyncio.timeout(10):
                await device_side.send(b"during")
                assert await host_side.recv() == b"during"
        finally:
            for sock in held:
                sock.abort()
        log_bytes = relay.log_path.stat().st_size - log_before
        print(
            f"{attempts} upgrades + 40 silent sockets from 12 addresses in {elapsed:.1f} s with {OPEN_FILES} "
            f"descriptors: {admitted} admitted, {unavailable} + 40 answered 503; peak {peak[0]} descriptors "
            f"in use; the relay logged {log_bytes} bytes"
        )
        assert peak[0] < OPEN_FILES
        assert log_bytes < 32 << 10
        assert "Too many open files" not in relay.log
        # once the flood is gone a new device connects (still_works opens a new one)
        async with asyncio.timeout(10):
            while open_fds(relay) > 40:
                await asyncio.sleep(0.05)
        await still_works(host, host_side, device_side, port)
