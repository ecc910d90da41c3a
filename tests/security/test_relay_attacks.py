"""Attacks on a real relay process (``tether relay``): floods from one address, a 100 MiB frame,
a reader that never reads, slow-loris, unenrolled hosts, cross-origin pages, forged identities
and an oversized allowlist. After each, a legitimate host and device still work.

The attacker dials from 127.0.0.2 (still loopback, still this machine) so that the per-address
limits it trips are not the legitimate pair's, which dials from 127.0.0.1. Every loop is bounded
in count and in time.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.procs import TETHER, Proc, login, remove, short_home, start_host, start_relay, tether_json
from tests.relay.rawws import RawSocket, Refused, frame_header
from tether.crypto.keys import Identity
from tether.protocol.frames import (
    Auth,
    Challenge,
    Close,
    CloseCode,
    Data,
    Error,
    Hello,
    Open,
    Opened,
    Role,
    auth_message,
)
from tether.relay.enrollment import create_enroll_key
from tether.relay.link import Channel, ChannelClosed, RelayError, RelayLink

pytestmark = pytest.mark.timeout(180)

ATTACKER = "127.0.0.2"


@contextmanager
def relay_with(*args: str) -> Iterator[tuple[Proc, int]]:
    """A ``tether relay`` process with these flags; never crashed when it is stopped."""
    proc, port = start_relay(0, *args)
    try:
        yield proc, port
    finally:
        proc.stop()
    assert "Traceback" not in proc.log, proc.log


@pytest.fixture
def relay_proc() -> Iterator[tuple[Proc, int]]:
    """A relay with the shipped defaults."""
    with relay_with() as relay:
        yield relay


def rss_kib(proc: Proc) -> int:
    for line in Path(f"/proc/{proc.popen.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@asynccontextmanager
async def legit_pair(port: int) -> AsyncIterator[tuple[RelayLink, RelayLink, Channel, Channel]]:
    """A host and an allowlisted device from 127.0.0.1, with one channel open between them."""
    url = f"ws://127.0.0.1:{port}"
    host = await RelayLink.connect(url, Identity.generate(), "host")
    device = await RelayLink.connect(url, Identity.generate(), "device")
    try:
        await host.publish_allowlist([device.identity.identity_public])
        await device.watch([host.id])
        async with asyncio.timeout(10):
            while not device.presence.get(host.id):
                await device.wait_presence_change()
            device_side = await device.open(host.id)
            host_side = await host.accept()
        yield host, device, host_side, device_side
    finally:
        await device.close()
        await host.close()


async def still_works(host: RelayLink, host_side: Channel, device_side: Channel, port: int) -> None:
    """The pair's channel carries data both ways, and a new device can still connect and open one."""
    async with asyncio.timeout(10):
        await device_side.send(b"ping")
        assert await host_side.recv() == b"ping"
        await host_side.send(b"pong")
        assert await device_side.recv() == b"pong"
        newcomer = await RelayLink.connect(f"ws://127.0.0.1:{port}", Identity.generate(), "device")
        try:
            with pytest.raises(ChannelClosed) as info:  # connected and authenticated; not allowlisted
                await newcomer.open(host.id)
            assert info.value.close_code == CloseCode.HOST_OFFLINE  # what a stranger hears of any host
        finally:
            await newcomer.close()


# --- floods --------------------------------------------------------------------------------------


async def try_upgrade(port: int, source: str, held: list[RawSocket], statuses: list[int | str]) -> str:
    """One upgrade from ``source``: the socket is kept in ``held`` (status 101), or the relay's
    HTTP status or the error's name goes to ``statuses``. Returns the refusal's body, or ""."""
    try:
        held.append(await RawSocket.upgrade(port, source=source, timeout=15))
        statuses.append(101)
    except Refused as refused:
        statuses.append(refused.status)
        return refused.body
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        statuses.append(type(exc).__name__)
    return ""


async def test_a_thousand_connections_from_one_address(relay_proc: tuple[Proc, int]) -> None:
    relay, port = relay_proc
    statuses: list[int | str] = []
    held: list[RawSocket] = []
    gate = asyncio.Semaphore(100)

    async def attempt() -> None:
        async with gate:
            body = await try_upgrade(port, ATTACKER, held, statuses)
            assert not body or "too many" in body

    async with legit_pair(port) as (host, _device, host_side, device_side):
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with asyncio.timeout(90):
            await asyncio.gather(*(attempt() for _ in range(1000)))
        elapsed = loop.time() - start
        try:
            assert len(statuses) == 1000
            assert statuses.count(101) == 256, statuses  # the default cap, held open
            assert statuses.count(429) == 1000 - 256, {s for s in statuses if s not in (101, 429)}
            await still_works(host, host_side, device_side, port)
            assert relay.alive
        finally:
            for sock in held:
                sock.abort()
    assert "too many connections from 127.0.0.2: at most 256 at once" in relay.log
    print(f"1,000 upgrades from one address in {elapsed:.1f} s: 256 admitted, 744 refused with 429")


# --- huge frames ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["one frame", "fragments", "before auth"])
async def test_a_100_mib_frame_is_cut_off_early(relay_proc: tuple[Proc, int], shape: str) -> None:
    relay, port = relay_proc
    total = 100 << 20
    chunk = bytes(1 << 20)
    async with legit_pair(port) as (host, _device, host_side, device_side):
        before = rss_kib(relay)
        sock = await RawSocket.upgrade(port, source=ATTACKER)
        if shape != "before auth":
            await sock.authenticate(Identity.generate())
        sent = 0
        try:
            async with asyncio.timeout(60):
                if shape == "fragments":
                    # 64 KiB continuation frames, never a final one: the limit is per message
                    piece = bytes(65_536)
                    sock.writer.write(frame_header(len(piece), opcode=0x2, fin=False) + piece)
                    sent += len(piece)
                    while sent < total:
                        sock.writer.write(frame_header(len(piece), opcode=0x0, fin=False) + piece)
                        sent += len(piece)
                        if sent % len(chunk) == 0:
                            await sock.writer.drain()
                else:
                    sock.writer.write(frame_header(total))
                    while sent < total:
                        sock.writer.write(chunk)
                        sent += len(chunk)
                        await sock.writer.drain()
        except (ConnectionError, OSError):
            pass  # the relay hung up on us: what we want
        closed = await sock.closed_by_peer(15)
        after = rss_kib(relay)
        sock.abort()
        print(f"{shape}: attacker wrote {sent >> 20} MiB before the relay hung up; relay RSS {before} → {after} KiB")
        assert closed, "the relay must close the connection"
        assert sent < total, "the relay must hang up before 100 MiB arrived"
        assert after - before < 16 << 10, f"the relay's RSS grew {after - before} KiB"
        await still_works(host, host_side, device_side, port)


# --- a reader that never reads -------------------------------------------------------------------


async def test_a_client_that_never_reads_loses_its_channel_only(relay_proc: tuple[Proc, int]) -> None:
    """The in-process version with RelayLinks is tests/relay/test_server.py::
    test_slow_reader_is_closed_while_other_channel_stays_fast; this one stops reading its socket."""
    _, port = relay_proc
    async with legit_pair(port) as (host, _device, host_side, device_side):
        sloth_identity = Identity.generate()
        sloth = await RawSocket.upgrade(port, source=ATTACKER)
        await sloth.authenticate(sloth_identity)
        await host.publish_allowlist([_device.identity.identity_public, sloth_identity.identity_public])
        await sloth.send(Open(7, host.id).encode())
        async with asyncio.timeout(10):
            while True:  # the PRESENCE/OPENED frames before the sloth stops reading
                frame = await sloth.recv_frame()
                if isinstance(frame, Opened):
                    break
            flooded = await host.accept()
        payload = os.urandom(60_000)
        sent = 0
        with pytest.raises(ChannelClosed) as info:
            async with asyncio.timeout(60):
                while sent < 1000:  # at most 60 MB; loopback buffers plus the 1 MiB queue are far less
                    await flooded.send(payload)
                    sent += 1
                    if sent % 50 == 0:
                        await asyncio.sleep(0.01)
                        await device_side.send(b"%d" % sent)  # the other channel keeps flowing
                        assert await host_side.recv() == b"%d" % sent
                raise AssertionError("the relay never closed the channel of a reader that never reads")
        assert info.value.close_code == CloseCode.TOO_SLOW
        print(f"the channel closed TOO_SLOW after {sent * 60_000 >> 20} MiB unread")
        await still_works(host, host_side, device_side, port)
        sloth.abort()


# --- slow-loris ----------------------------------------------------------------------------------


async def test_slow_loris() -> None:
    with relay_with("--handshake-timeout", "1", "--idle-timeout", "1") as (relay, port):
        await _slow_loris(relay, port)


async def _slow_loris(relay: Proc, port: int) -> None:
    async with legit_pair(port) as (host, _device, host_side, device_side):
        loop = asyncio.get_running_loop()
        start = loop.time()
        partial = []
        for _ in range(50):
            sock = await RawSocket.connect(port, source=ATTACKER)
            sock.writer.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: web")  # never finished
            partial.append(sock)
        idle = await RawSocket.upgrade(port, source=ATTACKER)
        await idle.authenticate(Identity.generate())  # then nothing: no channel, no watch
        closed = await asyncio.gather(*(sock.closed_by_peer(5) for sock in partial))
        assert all(closed), "every half-sent request is dropped"
        assert loop.time() - start < 4
        async with asyncio.timeout(5):
            frame = await idle.recv_frame()
        assert isinstance(frame, Error) and frame.code == CloseCode.IDLE_TIMEOUT, frame
        # it never answers the close frame either: the relay hangs up after close_timeout (5 s)
        assert await idle.closed_by_peer(10)
        for sock in (*partial, idle):
            sock.abort()
        await asyncio.sleep(1.5)  # past both timeouts: the pair holds a channel, so it stays
        await still_works(host, host_side, device_side, port)
    assert "the connection sat idle with no channel open" in relay.log


# --- closed admission ----------------------------------------------------------------------------


def test_a_host_without_the_enrollment_key_is_refused() -> None:
    work, host_home, client_home, workspace = short_home("tk"), short_home("th"), short_home("tc"), short_home("tw")
    key, other = work / "relay.key", work / "other.key"
    relay, port = start_relay(0, "--enroll-key", str(key), "--create-enroll-key")
    procs = [relay]
    try:
        assert "created enrollment key" in relay.log and key.stat().st_mode & 0o077 == 0
        url = f"ws://127.0.0.1:{port}"
        args = [*TETHER, "--home", str(host_home), "host", "--relay", url, "--workspace", str(workspace)]
        stranger = Proc(args, name="host")
        procs.append(stranger)
        stranger.wait_for(r"this relay only admits enrolled hosts: pass --enroll-key")
        assert "connected to relay" not in stranger.log
        stranger.stop()
        create_enroll_key(other)  # another relay's key
        impostor = Proc([*args, "--enroll-key", str(other)], name="host")
        procs.append(impostor)
        impostor.wait_for(r"is not this relay's")
        assert "connected to relay" not in impostor.log
        impostor.stop()
        enrolled = start_host(host_home, url, workspace, "--enroll-key", str(key))
        procs.append(enrolled)
        # devices need nothing: pair a CLI client and see the host online through this relay
        offer = tether_json(host_home, "pair", "--json")
        login(client_home, offer["link"], "--json")
        [seen] = tether_json(client_home, "hosts", "--json")
        assert seen["online"] is True
        assert key.read_text().strip() not in relay.log + enrolled.log  # the key is never logged
    finally:
        for proc in procs:
            proc.stop()
        remove(work, host_home, client_home, workspace)


# --- Origin --------------------------------------------------------------------------------------


@pytest.mark.parametrize("public_url", [None, "https://relay.example.com"])
def test_a_cross_origin_browser_upgrade_is_refused(public_url: str | None) -> None:
    relay, port = start_relay(0, *(["--public-url", public_url] if public_url else []))
    url = f"ws://127.0.0.1:{port}/ws"
    own = public_url or f"http://127.0.0.1:{port}"

    async def main() -> None:
        for evil in ("https://evil.example", "null", f"http://127.0.0.1:{port + 1}"):
            with pytest.raises(InvalidStatus) as info:
                await connect(url, origin=evil)  # type: ignore[arg-type]
            assert info.value.response.status_code == 403
        ws = await connect(url, origin=own)  # type: ignore[arg-type]
        await ws.close()
        link = await RelayLink.connect(url, Identity.generate(), "device")  # no Origin: a program
        await link.close()

    try:
        asyncio.run(main())
        assert "cross-origin upgrade from 'https://evil.example'" in relay.log
    finally:
        relay.stop()


# --- forged identities ---------------------------------------------------------------------------


async def test_a_forged_identity_is_refused_and_the_real_one_keeps_its_place(relay_proc: tuple[Proc, int]) -> None:
    relay, port = relay_proc
    async with legit_pair(port) as (host, device, host_side, device_side):
        captured: bytes | None = None
        for claimed, role in ((host.identity, Role.HOST), (device.identity, Role.DEVICE)):
            for attempt in ("another key", "replayed"):
                sock = await RawSocket.upgrade(port, source=ATTACKER)
                await sock.send(Hello(role, claimed.identity_public).encode())
                challenge = await sock.recv_frame()
                assert isinstance(challenge, Challenge)
                if attempt == "another key":
                    signature = Identity.generate().sign(auth_message(role, challenge.nonce))
                else:
                    # a signature the real party made, for another connection's nonce
                    captured = claimed.sign(auth_message(role, os.urandom(32)))
                    signature = captured
                await sock.send(Auth(signature).encode())
                async with asyncio.timeout(5):
                    frame = await sock.recv_frame()
                assert isinstance(frame, Error) and frame.code == CloseCode.AUTH_FAILED, (role, attempt, frame)
                async with asyncio.timeout(5):
                    opcode, payload = await sock.recv()
                assert opcode == 0x8 and payload[:2] == (1008).to_bytes(2, "big")  # then the close frame
                sock.abort()
        assert captured is not None
        assert device.presence.get(host.id) is True and not host.closed and not device.closed
        await still_works(host, host_side, device_side, port)
        # and the forger never got the host's traffic: nothing arrived but what the pair sent
    assert relay.log.count("could not verify this identity key") >= 4


# --- oversized allowlist -------------------------------------------------------------------------


async def test_an_oversized_allowlist_closes_only_that_host(relay_proc: tuple[Proc, int]) -> None:
    _, port = relay_proc
    async with legit_pair(port) as (host, _device, host_side, device_side):
        greedy = await RelayLink.connect(f"ws://127.0.0.1:{port}", Identity.generate(), "host")
        try:
            await greedy.publish_allowlist([os.urandom(32) for _ in range(10_001)])
        except RelayError:
            pass  # closed while still sending chunks
        async with asyncio.timeout(10):
            await greedy.wait_closed()
        assert "more than 10000 keys" in greedy.close_reason
        await still_works(host, host_side, device_side, port)


def test_frames_used_here_still_round_trip() -> None:
    # guards the raw attacker above against drifting from the wire format
    assert Close(1, CloseCode.TOO_SLOW).encode()[0] == 0x31
    assert Data(1, b"x").encode()[0] == 0x30
