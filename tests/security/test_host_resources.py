"""One paired device must not take the host's memory, channels, descriptors or disk from the
others. Real processes: a ``tether relay`` and a ``tether host`` (with a ``[limits]`` config
where a test needs one); the attacker is a paired device driving a raw relay link from this test,
with its own channels, handshakes and requests; another device is served meanwhile. Every loop is
bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.procs import remove, short_home, start_host, tether
from tests.support import deployment as shared
from tests.support.deployment import Deployment
from tether.client.connection import Connection, connect_local
from tether.client.sdk import Client
from tether.client.state import ClientState
from tether.protocol.e2e import E2ETransport
from tether.protocol.frames import CloseCode
from tether.protocol.rpc import RemoteError, RpcPeer
from tether.relay.link import Channel, ChannelClosed, RelayLink

pytestmark = pytest.mark.timeout(180)


@contextlib.contextmanager
def deployed(config: str | None = None) -> Iterator[Deployment]:
    """A relay and a host with this ``config.toml``; its log must have no traceback."""
    with shared.deployed(config) as deployment:
        yield deployment
    assert "Traceback" not in deployment.host.log, deployment.host.log


@contextlib.contextmanager
def paired(deployment: Deployment, *scopes: str) -> Iterator[Path]:
    home = short_home("tc")
    try:
        deployment.pair(home, *(("--scopes", ",".join(scopes)) if scopes else ()))
        yield home
    finally:
        remove(home)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@contextlib.asynccontextmanager
async def device_link(home: Path) -> AsyncIterator[tuple[RelayLink, bytes, str]]:
    """A paired device's own relay connection: (link, the host's static key, the host's id)."""
    state = ClientState(home)
    [host] = state.hosts()
    link = await RelayLink.connect(host.relay_url, state.identity(), "device")
    try:
        yield link, host.host_static, host.host_id
    finally:
        await link.close()


# Reader tasks of raw peers, kept referenced while their channels live.
_READERS: set[asyncio.Task[None]] = set()


async def raw_peer(home: Path, link: RelayLink, host_static: bytes, host_id: str) -> RpcPeer:
    """An end-to-end channel that reads everything the host sends and acknowledges nothing."""
    channel = await link.open(host_id)
    static = ClientState(home).identity().static
    peer = RpcPeer(await E2ETransport.initiate(channel, static=static, remote_static=host_static))
    task = asyncio.create_task(peer.run())
    _READERS.add(task)
    task.add_done_callback(_READERS.discard)
    return peer


async def _served_promptly(home: Path) -> float:
    """Seconds another device takes to connect, list the sessions and read the head."""
    start = time.monotonic()
    async with asyncio.timeout(10):
        client = await Client.open(home)
        try:
            await client.sessions()
            await client.info()
        finally:
            await client.close()
    return time.monotonic() - start


# --- item 5: snapshots ------------------------------------------------------------------------


async def _sessions_with_scrollback(conn: Connection, count: int) -> None:
    """``count`` finished pty sessions, each with a full scrollback (64 Ki characters)."""
    command = ["sh", "-c", "head -c 70000 /dev/zero | tr '\\0' x"]
    for _ in range(count):
        await conn.call("sessions.start", {"agent": "pty", "command": command}, timeout=10)
    async with asyncio.timeout(60):
        while any(s["status"] == "running" for s in await conn.call("sessions.list", timeout=10)):
            await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_a_read_only_device_cannot_exhaust_the_hosts_memory_with_snapshots() -> None:
    """100 sessions with scrollback make a 6.4 MB snapshot. A read-only device subscribes with
    ``since`` ahead of the head on channel after channel and never acknowledges: each
    subscription used to keep its whole snapshot (≈64 MiB a channel). Now the host reads a page
    only when the client has room for it, and holds 64 subscriptions per device at most."""
    with deployed() as deployment:
        conn = await connect_local(deployment.host_home)
        try:
            await _sessions_with_scrollback(conn, 100)
        finally:
            await conn.close()
        with paired(deployment, "read") as attacker, paired(deployment) as other:
            pid = deployment.host.popen.pid
            before = rss_mib(pid)
            accepted, refused = 0, []
            async with device_link(attacker) as (link, host_static, host_id):
                peers = [await raw_peer(attacker, link, host_static, host_id) for _ in range(6)]
                for n, peer in enumerate(peers):
                    for sub in range(1, 17):  # 16 per channel: the per-connection cap
                        try:
                            await peer.call("events.subscribe", {"sub": sub, "since": 10**12}, timeout=10)
                            accepted += 1
                        except RemoteError as exc:
                            refused.append(exc)
                    if n == 0:
                        await asyncio.sleep(1)  # let the first 16 send what their windows allow
                await asyncio.sleep(3)  # the pumps run as far as they can
                after = rss_mib(pid)
                elapsed = await _served_promptly(other)
        grown = after - before
        print(f"host RSS {before:.0f} → {after:.0f} MiB (+{grown:.1f} MiB) with {accepted} subscriptions held"
              f" unacknowledged and {len(refused)} refused; another device served in {elapsed:.2f} s")
        assert accepted == 64, accepted
        assert len(refused) == 6 * 16 - 64
        assert {e.code for e in refused} == {"limit"}
        assert "already has 64 event subscriptions on this host" in refused[0].message
        assert "limits.max_subscriptions_per_caller" in refused[0].message
        assert grown < 48, f"the host grew {grown:.0f} MiB"
        assert elapsed < 5


# --- item 6: channels ---------------------------------------------------------------------------


async def _close_of(channel: Channel, timeout: float) -> ChannelClosed | None:
    """How the host closed ``channel`` (None: still open after ``timeout``)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await channel.recv()
    except ChannelClosed as closed:
        return closed
    except TimeoutError:
        return None


async def test_channels_that_never_handshake_are_closed_and_capped_per_device() -> None:
    """A paired device opens 300 channels and never sends a handshake: beyond 32 the host closes
    them at once (TOO_MANY_CHANNELS, naming the limit); the 32 it holds are closed when the
    handshake timeout (3 s here) passes, with one log line each and no traceback. Another
    device is served throughout, and the attacker can connect properly afterwards."""
    timeout = 3  # more than opening 300 channels takes on a busy machine, so the 32 are the first
    with deployed(f"[limits]\nhandshake_timeout = {timeout}\n") as deployment:
        with paired(deployment, "read") as attacker, paired(deployment) as other:
            async with device_link(attacker) as (link, host_static, host_id):
                start = time.monotonic()
                channels = [await link.open(host_id) for _ in range(300)]
                opened = time.monotonic() - start
                elapsed = await _served_promptly(other)
                closes = await asyncio.gather(*(_close_of(ch, timeout + 6) for ch in channels))
                took = time.monotonic() - start
                assert all(closes), f"{closes.count(None)} channels still open after {took:.1f} s"
                codes = [c.close_code for c in closes if c is not None]
                assert codes.count(CloseCode.TOO_MANY_CHANNELS) == 300 - 32
                assert codes.count(CloseCode.PROTOCOL_ERROR) == 32
                crowded = next(c for c in closes if c and c.close_code == CloseCode.TOO_MANY_CHANNELS)
                assert "already has 32 channels open to the host" in crowded.reason
                assert "limits.max_channels_per_caller" in crowded.reason
                late = next(c for c in closes if c and c.close_code == CloseCode.PROTOCOL_ERROR)
                assert f"no handshake within {timeout} s" in late.reason
                # Its places are free again: the same device connects properly.
                peer = await raw_peer(attacker, link, host_static, host_id)
                assert (await peer.call("host.info", timeout=10))["role"] == "host"
            print(f"300 silent channels opened in {opened:.1f} s: 268 refused at once, 32 closed after the"
                  f" {timeout} s handshake timeout, all within {took:.1f} s; another device served in {elapsed:.2f} s")
            assert opened < timeout
            assert elapsed < 5
            assert took < timeout + 4
            assert deployment.host.log.count(f"no handshake within {timeout} s") == 32
            assert deployment.host.log.count("channels open, the most one may") == 1


# --- item 13: input, sessions, retention ---------------------------------------------------


async def _inputs_in_the_log(client: Client, session: str) -> int:
    count, since = 0, 0
    while True:
        page = await client.call("events.read", {"since": since, "limit": 2000, "session": session})
        count += sum(1 for e in page["events"] if e["type"] == "session.input")
        since = page["cursor"]
        if since >= page["head"]:
            return count


async def test_input_the_program_does_not_take_is_not_logged() -> None:
    """A program that never reads its input: the host takes about 1 MiB for it, then refuses
    sends with ``input_full``; those leave nothing in the log (40 sends of 1 MiB used to be 40
    events, +47 MiB, with 32 of them refused)."""
    with deployed() as deployment, paired(deployment) as device:
        client = await Client.open(device)
        try:
            session = await client.start_session(["sleep", "60"])
            text = "x" * (1024 * 1024 - 1024)
            delivered, refused = 0, []
            for _ in range(12):
                try:
                    await client.send(session, text)
                    delivered += 1
                except RemoteError as exc:
                    refused.append(exc)
            logged = await _inputs_in_the_log(client, session)
            db = deployment.host_home / "host" / "state.db"
            size = sum(f.stat().st_size for f in db.parent.glob("state.db*")) >> 20
            print(f"12 sends of 1 MiB to a program that does not read: {delivered} delivered, {len(refused)}"
                  f" refused with input_full; {logged} input events logged; database {size} MiB")
            # The kernel's terminal takes a little of it too (how much depends on when the echo of the
            # first bytes is read), so one to a few sends get through before the host's megabyte is full.
            assert 1 <= delivered <= 6 and len(refused) == 12 - delivered
            assert {e.code for e in refused} == {"input_full"}
            assert "the program is not reading its input" in refused[0].message
            assert logged == delivered
            assert size < 2 * delivered + 4  # what was delivered (logged, and in the WAL), not what was refused
            await client.interrupt(session)  # the host still answers this device
        finally:
            await client.close()


async def _wait_ended(client: Client, session: str) -> None:
    async with asyncio.timeout(10):
        while (await client.session(session))["status"] == "running":
            await asyncio.sleep(0.1)


async def test_live_sessions_are_capped_per_device_and_per_host() -> None:
    config = "[limits]\nmax_sessions = 5\nmax_sessions_per_caller = 2\n"
    with deployed(config) as deployment, paired(deployment) as greedy_home, paired(deployment) as other_home:
        greedy, other = await Client.open(greedy_home), await Client.open(other_home)
        owner = await connect_local(deployment.host_home)
        try:
            mine = [await greedy.start_session(["sleep", "60"]) for _ in range(2)]
            for _ in range(2):  # refused every time
                with pytest.raises(RemoteError) as info:
                    await greedy.start_session(["sleep", "60"])
                assert info.value.code == "limit"
                assert "already runs 2 live sessions, the most one device or token may" in info.value.message
                assert f"limits.max_sessions_per_caller in {deployment.host_home / 'config.toml'}" in info.value.message
            # What a person sees from the CLI: the message and the key to change, no traceback.
            cli = tether(greedy_home, "sessions", "start", "--", "sleep", "60", check=False)
            assert cli.returncode != 0
            assert "limits.max_sessions_per_caller" in cli.stdout + cli.stderr
            assert "Traceback" not in cli.stdout + cli.stderr
            # Another device, and the owner, still start sessions, up to the host's cap.
            await other.start_session(["sleep", "60"])
            for _ in range(2):
                await owner.call("sessions.start", {"agent": "pty", "command": ["sleep", "60"]}, timeout=10)
            with pytest.raises(RemoteError) as info:
                await owner.call("sessions.start", {"agent": "pty", "command": ["sleep", "60"]}, timeout=10)
            assert info.value.code == "limit"
            assert "this host already runs 5 live sessions, the most it allows (limits.max_sessions in" in (
                info.value.message)
            # A session that ends frees its place.
            await greedy.interrupt(mine[0])
            await _wait_ended(greedy, mine[0])
            await greedy.start_session(["sleep", "60"])
        finally:
            await greedy.close()
            await other.close()
            await owner.close()


async def test_retention_drops_old_events_and_a_client_behind_resumes_from_a_snapshot() -> None:
    """Sessions that ended more than ``event_retention_days`` ago are forgotten (here 0.00001
    days, 0.86 s) when the host starts and every hour after. A client whose cursor is behind
    what was dropped gets a snapshot, then the events after it: no gap, no duplicate."""
    with deployed("[limits]\nevent_retention_days = 0.00001\n") as deployment, paired(deployment) as device:
        client = await Client.open(device)
        try:
            behind = (await client.info())["head"]
            old = await client.start_session(["sh", "-c", "echo old output"])
            await _wait_ended(client, old)
            before = await client.call("events.read", {"since": 0})
            assert any(e["session"] == old for e in before["events"])
        finally:
            await client.close()
        await asyncio.sleep(1.2)
        deployment.host.stop()
        deployment.host = start_host(deployment.host_home, deployment.relay_url, deployment.workspace)
        deployment.host.wait_for(r"retention: \d+ old events dropped")
        client = await Client.open(device)
        try:
            page = await client.call("events.read", {"since": 0})
            assert page["floor"] >= before["head"]
            assert not any(e["session"] == old for e in page["events"])
            assert not any(s["id"] == old for s in await client.sessions())
            events = client.events(behind)
            async with asyncio.timeout(15):
                first = await anext(events)
                assert first["type"] == "snapshot" and first["seq"] >= page["floor"]
                assert old not in [s["id"] for s in first["sessions"]]
                new = await client.start_session(["sh", "-c", "echo new output"])
                started = await anext(events)
                assert (started["session"], started["type"]) == (new, "session.started")
                assert started["seq"] > first["seq"]
        finally:
            await client.close()
