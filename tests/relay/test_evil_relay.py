"""The man-in-the-middle relay used by security tests does exactly what each mode says."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.evil_relay import EvilRelay, Mode
from tether.crypto.keys import Identity
from tether.relay.link import RelayLink
from tether.relay.server import RelayServer

from .test_server import Links, wait_presence

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
PAYLOADS = [b"p1-handshake", b"p2-handshake", b"p3" * 20, b"p4" * 20, b"p5" * 20]


def flipped(payload: bytes) -> bytes:
    i = len(payload) // 2
    return payload[:i] + bytes([payload[i] ^ 1]) + payload[i + 1 :]


EXPECTED: dict[str, list[bytes]] = {
    "pass": PAYLOADS,
    "flip": [*PAYLOADS[:2], flipped(PAYLOADS[2]), *PAYLOADS[3:]],
    "replay": [*PAYLOADS[:3], PAYLOADS[2], *PAYLOADS[3:]],
    "reorder": [*PAYLOADS[:2], PAYLOADS[3], PAYLOADS[2], PAYLOADS[4]],
    "drop": [*PAYLOADS[:2], *PAYLOADS[3:]],
}


async def exchange_through(evil_url: str, relay_url: str, links: Links) -> tuple[list[bytes], list[bytes]]:
    """A device behind the evil relay sends PAYLOADS to a host; the host sends them back.

    Returns (what the host received, what the device received)."""
    host = await links(relay_url, Identity.generate(), "host")
    device = await links(evil_url)
    await host.publish_allowlist([device.identity.identity_public])
    await device.watch([host.id])
    await wait_presence(device, host.id, True)
    async with asyncio.timeout(10):
        device_side = await device.open(host.id)
        host_side = await host.accept()
        for payload in PAYLOADS:
            await device_side.send(payload)
            await host_side.send(payload)
        await device_side.send(b"end")
        await host_side.send(b"end")
        at_host = await _until_end(host_side.recv)
        at_device = await _until_end(device_side.recv)
    return at_host, at_device


async def _until_end(recv: object) -> list[bytes]:
    got: list[bytes] = []
    while (payload := await recv()) != b"end":  # type: ignore[operator]
        got.append(payload)
    return got


@pytest.mark.parametrize("mode", ["pass", "flip", "replay", "reorder", "drop"])
async def test_each_mode_tampers_client_to_relay_data(relay: tuple[RelayServer, str], links: Links, mode: Mode) -> None:
    evil = EvilRelay(relay[1] + "/ws", mode)
    port = await evil.start()
    try:
        at_host, at_device = await exchange_through(f"ws://127.0.0.1:{port}", relay[1], links)
    finally:
        await evil.close()
    assert at_host == EXPECTED[mode]
    assert at_device == PAYLOADS  # relay→client is left alone by default
    assert evil.tampered == (0 if mode == "pass" else 1)


async def test_down_direction_and_after(relay: tuple[RelayServer, str], links: Links) -> None:
    evil = EvilRelay(relay[1] + "/ws", "drop", after=0, direction="down")
    port = await evil.start()
    try:
        at_host, at_device = await exchange_through(f"ws://127.0.0.1:{port}", relay[1], links)
    finally:
        await evil.close()
    assert at_host == PAYLOADS
    assert at_device == PAYLOADS[1:]


async def test_runs_as_a_process(relay: tuple[RelayServer, str], links: Links) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.evil_relay",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        relay[1] + "/ws",
        "--mode",
        "replay",
        "--after",
        "2",
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(15):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("PORT "), line
        port = int(line.split()[1])
        at_host, _ = await exchange_through(f"ws://127.0.0.1:{port}", relay[1], links)
        assert at_host == EXPECTED["replay"]
    finally:
        proc.terminate()
        async with asyncio.timeout(10):
            await proc.wait()
    assert proc.returncode == 0


async def test_a_link_through_the_evil_relay_is_still_authenticated(
    relay: tuple[RelayServer, str],
) -> None:
    evil = EvilRelay(relay[1] + "/ws", "pass")
    port = await evil.start()
    try:
        ident = Identity.generate()
        link = await RelayLink.connect(f"ws://127.0.0.1:{port}", ident, "host")
        assert link.id == ident.id  # the evil relay forwards admission untouched
        await link.close()
    finally:
        await evil.close()
