"""Relay benchmark (acceptance of issues [1] and [10]): tether relay vs. a bare websockets forwarder.

    .venv/bin/python bench/relay.py                # full run (about 2-4 minutes on 2 cores)
    .venv/bin/python bench/relay.py --quick        # smoke run, < 30 s
    .venv/bin/python bench/relay.py --json out.json
    .venv/bin/python bench/relay.py --profile      # cProfile the relay process under 1 KiB load
    .venv/bin/python bench/relay.py --profile --profile-system tether-raw --profile-size 64

What runs where (every process is separate, all traffic on 127.0.0.1):

* the relay: ``python -m tether relay --listen 127.0.0.1:0 --exempt-loopback`` (default RelayLimits,
  as shipped, except that the per-address limits skip loopback: every load process is on it);
* the baseline: ``bench/bare_forwarder.py`` (websockets, compression off, no auth, no crypto);
* the load: worker processes (multiprocessing, spawn): a sender and a receiver process for
  throughput, an echo process and a pinger process for latency, two processes holding the idle
  connections; the catch-up client runs in this process against a real ``tether host`` process.

Three systems are measured in the same run (throughput and latency):

* ``bare``: the bare forwarder; each end sends and receives the payload with one ``ws.send`` /
  ``ws.recv`` per message;
* ``tether-raw`` ("relay only, same endpoints"): each end authenticates and opens its channel
  with ``RelayLink`` (the real relay protocol), then writes and reads DATA frames on the link's
  websocket itself: one ``ws.send`` / ``ws.recv`` per message, an opaque payload of the same size
  as bare's, no E2E transport. The relay never decrypts, so to it this is what ciphertext looks
  like; the endpoints do what bare's do, and the ratio is about the two relays. At 64 KiB both
  send one 65,536-byte payload per message: one WebSocket message to bare, one DATA frame (5-byte
  header + 65,536) to tether, under the relay's 70,000-byte max frame. The latency echo host
  is one task on its one connection (``RawMux``: the protocol puts all of a host's channels on
  it); bare's is a connection and a task per channel;
* ``tether`` ("end to end"): as shipped for users: Noise IK + AES-GCM ``E2ETransport`` over a
  ``RelayLink`` channel. A 64 KiB message is 2 DATA frames (65,535 + 35 bytes: a Noise message
  is at most 65,535 bytes).

See docs/benchmarks.md for the method, the caveats and the results of a full run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import json
import multiprocessing as mp
import os
import platform
import random
import re
import shutil
import signal
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KIB = 1024
ACK = struct.Struct(">Q")
WINDOW_BYTES = int(os.environ.get("BENCH_WINDOW_KIB", "2048")) * KIB
CONNECT_CONCURRENCY = 50  # handshakes in flight per process (the listen backlog is 100)

RAW = "tether-raw"  # the tether relay with bare-like endpoints (relay only); see the docstring
SYSTEMS = ("bare", RAW, "tether")
_DATA_TYPE = 0x30  # FrameType.DATA (checked in RawEnd)

TARGETS = {
    # issue [1], end to end (tether endpoints encrypt)
    "throughput_ratio_1k": 0.8,  # tether msgs/s ÷ bare msgs/s at 1 KiB, at least
    "added_p99_1ch_ms": 1.0,  # tether p99 − bare p99 at 1 channel, at most
    "rss_per_idle_conn_kib": 20.0,  # at most
    "catchup_10k_s": 0.5,  # 10,000 missed events delivered, at most
    # issue [10], the relay only (tether-raw: the same endpoints as bare)
    "relay_only_ratio_1k": 1.0,  # tether-raw msgs/s ÷ bare msgs/s at 1 KiB, at least
    "relay_only_ratio_64k": 0.9,  # the same at 64 KiB, at least
    "relay_only_added_p99_busy_ms": 2.0,  # tether-raw p99 − bare p99 at 1,000 busy channels, at most
}


@dataclass(frozen=True)
class Sizes:
    tput: dict[int, int]  # payload bytes -> timed messages
    tput_repeats: int
    lat_pings_1ch: int
    lat_channels: int
    lat_rate: float  # pings/s across all channels (open loop)
    lat_seconds: float
    idle_conns: int
    idle_procs: int
    catchup_events: int
    catchup_repeats: int


FULL = Sizes(
    tput={1 * KIB: 100_000, 64 * KIB: 10_000},
    tput_repeats=3,
    lat_pings_1ch=5_000,
    lat_channels=1_000,
    lat_rate=2_000.0,
    lat_seconds=6.0,
    idle_conns=10_000,
    idle_procs=2,
    catchup_events=10_000,
    catchup_repeats=5,
)
QUICK = Sizes(
    tput={1 * KIB: 10_000, 64 * KIB: 500},
    tput_repeats=1,
    lat_pings_1ch=300,
    lat_channels=100,
    lat_rate=500.0,
    lat_seconds=1.0,
    idle_conns=600,
    idle_procs=2,
    catchup_events=2_000,
    catchup_repeats=1,
)


# ---------------------------------------------------------------------------------------
# machine facts and /proc


def machine_facts() -> dict[str, Any]:
    import cryptography
    import websockets

    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    mem = ""
    with contextlib.suppress(OSError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "websockets": websockets.__version__,
        "cryptography": cryptography.__version__,
        "tether_commit": commit,
    }


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


_TICK = os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """CPU time all cores spent busy (not idle, not iowait) since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICK


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


# ---------------------------------------------------------------------------------------
# the servers under test (subprocesses)


class Server:
    """``tether relay`` or the bare forwarder, in its own process and session.

    ``listen``: the address to listen on (an ephemeral port unless given); ``args``: more
    ``tether relay`` options (bench/cluster.py: ``--cluster``, ``--node-id``…); ``home``: the
    relay's ``--home`` (default: the user's, as before); ``launcher``: how Python runs tether
    (bench/churn.py: a ``-c`` that changes one thing first)."""

    def __init__(self, kind: str, *, profile: Path | None = None, listen: str = "127.0.0.1:0",
                 args: Sequence[str] = (), home: Path | None = None,
                 launcher: Sequence[str] = ("-m", "tether")) -> None:
        self.kind = kind
        self.log_path = Path(tempfile.mkstemp(prefix=f"bench-{kind}-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        host = listen.rsplit(":", 1)[0]
        if kind == "tether":
            prefix = [sys.executable]
            if profile is not None:
                prefix += ["-m", "cProfile", "-o", str(profile)]
            home_args = ["--home", str(home)] if home is not None else []
            # Every load process dials from 127.0.0.1: 10,000 idle connections and 1,000 devices
            # would trip the per-address limits (256 at once, 20/s), which are for the public.
            cmd = [*prefix, *launcher, *home_args, "relay", "--listen", listen, "--exempt-loopback", *args]
            pattern = rf"relay listening on {re.escape(host)}:(\d+)"
        else:
            cmd = [sys.executable, str(HERE / "bare_forwarder.py"), "--listen", listen, *args]
            pattern = rf"bare listening on {re.escape(host)}:(\d+)"
        self.popen = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log, start_new_session=True
        )
        self.pid = self.popen.pid
        self.port = int(_wait_for(self.log_path, pattern, self.popen, 20).group(1))
        self.url = f"ws://{host}:{self.port}" + ("/ws" if kind == "tether" else "")

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the process group (``sig``, then SIGKILL after 15 s); SIGKILL: a crash."""
        stop_group(self.popen, sig, 15)
        self._log.close()
        with contextlib.suppress(OSError):
            self.log_path.unlink()


def _wait_for(path: Path, pattern: str, popen: subprocess.Popen[bytes], timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    regex = re.compile(pattern)
    while time.monotonic() < deadline:
        match = regex.search(path.read_text(errors="replace"))
        if match:
            return match
        if popen.poll() is not None:
            raise RuntimeError(f"process exited ({popen.returncode}):\n{path.read_text(errors='replace')}")
        time.sleep(0.05)
    raise RuntimeError(f"no {pattern!r} within {timeout} s:\n{path.read_text(errors='replace')}")


# ---------------------------------------------------------------------------------------
# endpoints: one message pipe, bare or tether, with the same interface


def _seed(base: bytes, label: str) -> bytes:
    return hashlib.sha256(base + label.encode()).digest()


class BareEnd:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.send = ws.send
        self.recv = ws.recv

    async def close(self) -> None:
        await self.ws.close()


class TetherEnd:
    """An E2E (Noise IK, AES-GCM) transport over one relay channel; ``link`` is closed with it
    when this end owns it."""

    def __init__(self, transport: Any, link: Any | None) -> None:
        self.transport = transport
        self.link = link
        self.send = transport.send
        self.recv = transport.recv

    async def close(self) -> None:
        if self.link is not None:
            await self.link.close()
        else:
            await self.transport.close()


class _Wire:
    """The websocket of a link from :func:`_handover_link`. Every attribute is the websocket's,
    but the link's reader iterates over this object, and :meth:`take` parks that reader (the
    connection stays open) so that a :class:`RawEnd` or :class:`RawMux` reads the websocket."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._take: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._parked = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ws, name)

    async def __aiter__(self) -> Any:
        take = self._take
        while not take.done():
            recv = asyncio.ensure_future(self.ws.recv())
            await asyncio.wait((recv, take), return_when=asyncio.FIRST_COMPLETED)
            if not recv.done():
                recv.cancel()  # websockets: a cancelled recv() loses no message
            try:
                message = await recv
            except asyncio.CancelledError:
                break
            yield message
        self._parked.set()
        await self.ws.wait_closed()  # then the link's reader ends as if the connection closed

    async def take(self, timeout: float = 10.0) -> None:
        """Park the link's reader; from now on only the caller reads the websocket."""
        if not self._take.done():
            self._take.set_result(None)
        async with asyncio.timeout(timeout):
            await self._parked.wait()


@functools.cache
def _handover_link() -> Any:
    """A RelayLink whose websocket can be taken over once authenticated (``link.wire.take()``)."""
    from tether.relay.link import RelayLink

    class HandoverLink(RelayLink):
        def __init__(self, ws: Any, *args: Any, **kwargs: Any) -> None:
            self.wire = _Wire(ws)
            super().__init__(self.wire, *args, **kwargs)

    return HandoverLink


class RawEnd:
    """tether-raw: one channel's DATA frames, written and read on the link's websocket by this end
    as BareEnd does (one ``ws.send``, one ``ws.recv`` per message; the frame for a payload sent
    again is made once, as bare sends the same bytes object). No E2E transport, no RelayLink on
    the data path. ``channel``: the device's channel id; None on a host, which takes it from the
    first DATA frame. ``pending``: payloads the link's reader took before it was parked. The
    relay's control frames (INCOMING on a host) are skipped; a CLOSE fails the bench."""

    def __init__(self, link: Any, channel: int | None, pending: Sequence[bytes] = ()) -> None:
        from tether.protocol.frames import DATA_HEADER_LEN, FrameType

        assert FrameType.DATA == _DATA_TYPE and DATA_HEADER_LEN == 5
        self.link = link
        self._ws_send = link.wire.ws.send
        self._ws_recv = link.wire.ws.recv
        self._pending = list(pending)
        self.channel = channel
        self._header = b"" if channel is None else _data_header(channel)
        self._last: Any = None
        self._frame = b""

    def send(self, payload: bytes | memoryview) -> Awaitable[None]:
        # not a coroutine itself: ``await end.send(x)`` awaits websockets' send directly, as bare's
        if payload is not self._last:
            assert self._header, "no channel yet"
            self._last, self._frame = payload, self._header + payload
        return self._ws_send(self._frame)

    async def recv(self) -> bytes | memoryview:
        if self._pending:
            return self._pending.pop(0)
        recv = self._ws_recv
        message = await recv()
        while message[0] != _DATA_TYPE:
            _control_frame(message)
            message = await recv()
        if self.channel is None:
            self.channel = struct.unpack_from(">I", message, 1)[0]
            self._header = _data_header(self.channel)
        return memoryview(message)[5:]

    async def close(self) -> None:
        await self.link.close()


class RawMux:
    """tether-raw echo host: every channel of one host link. ``recv`` gives whole DATA frames and
    ``send`` sends one back as it is: its header names the host-side channel, so the relay takes it
    back to the device that sent it."""

    def __init__(self, link: Any) -> None:
        self.link = link
        self.send = link.wire.ws.send
        self._ws_recv = link.wire.ws.recv

    async def recv(self) -> bytes:
        message: bytes = await self._ws_recv()
        while message[0] != _DATA_TYPE:
            _control_frame(message)
            message = await self._ws_recv()
        return message

    async def close(self) -> None:
        await self.link.close()


def _data_header(channel: int) -> bytes:
    from tether.protocol.frames import encode_data

    return encode_data(channel, b"")


def _control_frame(message: bytes) -> None:
    """A frame other than DATA at a RawEnd/RawMux: INCOMING (a channel opened) is expected."""
    from tether.protocol.frames import Close, Incoming, decode_frame

    frame = decode_frame(message)
    if not isinstance(frame, Incoming):
        raise RuntimeError(f"the relay sent {frame!r}" if isinstance(frame, Close) else
                           f"unexpected {type(frame).__name__.upper()} frame")


async def bare_connect(url: str, pair: str, side: str) -> BareEnd:
    from websockets.asyncio.client import connect

    ws = await connect(f"{url}/{pair}/{side}", compression=None, max_size=1 << 20, open_timeout=30)
    return BareEnd(ws)


async def tether_device(url: str, seed: bytes, host_seed: bytes, *, deadline: float,
                        raw: bool = False) -> TetherEnd | RawEnd:
    """A device link with one channel to the host and the IK handshake done; ``raw``: no
    handshake, a :class:`RawEnd` on the channel."""
    from tether.crypto.keys import Identity
    from tether.protocol.e2e import E2ETransport
    from tether.protocol.frames import CloseCode
    from tether.relay.link import ChannelClosed, RelayLink

    me, host = Identity.from_seed(seed), Identity.from_seed(host_seed)
    link = await (_handover_link() if raw else RelayLink).connect(url, me, "device", open_timeout=30)
    loop = asyncio.get_running_loop()
    while True:  # the host may not have published its allowlist yet
        try:
            channel = await link.open(host.id)
            break
        except ChannelClosed as err:
            if err.close_code in (CloseCode.HOST_OFFLINE, CloseCode.NOT_ALLOWED) and loop.time() < deadline:
                await asyncio.sleep(0.05)
                continue
            raise
    if raw:
        await link.wire.take()
        pending = list(channel._inbox)  # none in this bench: the host speaks second
        channel._inbox.clear()
        return RawEnd(link, channel.id, pending)
    transport = await E2ETransport.initiate(channel, static=me.static, remote_static=host.static_public)
    return TetherEnd(transport, link)


async def tether_host(url: str, host_seed: bytes, device_seeds: list[bytes], *, raw: bool = False) -> Any:
    """A host link with the devices on its allowlist. ``raw``: its websocket is taken over first
    (``link.wire``), so no channel opens while the link's reader still runs."""
    from tether.crypto.keys import Identity
    from tether.relay.link import RelayLink

    host = Identity.from_seed(host_seed)
    link = await (_handover_link() if raw else RelayLink).connect(url, host, "host", open_timeout=30)
    if raw:
        await link.wire.take()
    await link.publish_allowlist([Identity.from_seed(s).identity_public for s in device_seeds])
    return link


async def tether_accept(link: Any, host_seed: bytes) -> TetherEnd:
    from tether.crypto.keys import Identity
    from tether.protocol.e2e import E2ETransport

    channel = await link.accept()
    transport = await E2ETransport.accept(channel, static=Identity.from_seed(host_seed).static)
    return TetherEnd(transport, None)


async def _bounded_gather(n: int, make: Callable[[int], Awaitable[Any]], limit: int = CONNECT_CONCURRENCY) -> list[Any]:
    """Run ``make(i)`` for i < n with at most ``limit`` in flight (a gradual ramp)."""
    sem = asyncio.Semaphore(limit)

    async def one(i: int) -> Any:
        async with sem:
            return await make(i)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


# ---------------------------------------------------------------------------------------
# worker processes


def _worker(name: str, kwargs: dict[str, Any], out: Any,
            func: Callable[..., Awaitable[Any]] | None = None, fast_exit: bool | None = None,
            loop: str = "asyncio") -> None:
    """Entry point of every worker process: run one coroutine (``func``, or the one registered
    as ``name``) on ``loop`` ("asyncio", or "uvloop": bench/cluster.py's simulated clients), put
    (name, result or error)."""
    func = func or _WORKERS[name]
    try:
        if loop == "uvloop":
            import uvloop  # the bench extra: pip install -e '.[test,bench]'

            result = uvloop.run(func(**kwargs))
        else:
            result = asyncio.run(func(**kwargs))
        out.put((name, "ok", result))
    except BaseException as exc:  # report, never hang the orchestrator
        out.put((name, "error", f"{type(exc).__name__}: {exc}"))
    if fast_exit is None:
        fast_exit = name == "idle"
    if fast_exit:
        # thousands of sockets: let the kernel close them rather than a graceful close each
        out.close()
        out.join_thread()
        os._exit(0)


def _window(size: int) -> tuple[int, int]:
    """(max unacknowledged messages, ack every k messages): WINDOW_BYTES in flight. Most of it
    sits in loopback socket buffers; the relay's own queue for the channel (closed TOO_SLOW over
    1 MiB) stays far below its bound. The receiving link's inbox holds 4096 frames."""
    window = max(8, min(3000, WINDOW_BYTES // max(size, 1)))
    return window, max(1, window // 8)


def _cpus(pids: Sequence[int]) -> list[float]:
    return [cpu_seconds(pid) for pid in pids]


async def w_tput_sender(
    system: str, url: str, size: int, warm: int, n: int, tag: str, relay_pids: list[int], timeout: float,
    device_url: str | None = None,
) -> dict[str, Any]:
    """Sends warm + n messages with a window; the timed part starts at message ``warm``. The
    sender is the host (on ``url``); ``relay_pids``: the processes whose CPU is read at the
    start and the end of the timed part (the relay, or a cluster's nodes and Redis)."""
    async with asyncio.timeout(timeout):
        base = tag.encode()
        if system == "bare":
            end: BareEnd | TetherEnd | RawEnd = await bare_connect(url, tag, "a")
        elif system == RAW:
            end = RawEnd(await tether_host(url, _seed(base, "host"), [_seed(base, "dev")], raw=True), None)
        else:
            link = await tether_host(url, _seed(base, "host"), [_seed(base, "dev")])
            end = await tether_accept(link, _seed(base, "host"))
            end.link = link
        window, _ = _window(size)
        total = warm + n
        go = await end.recv()
        assert go == b"go", go
        acked = 0
        progress = asyncio.Event()

        async def read_acks() -> None:
            nonlocal acked
            while acked < total:
                acked = ACK.unpack(await end.recv())[0]
                progress.set()

        reader = asyncio.create_task(read_acks())
        payload = os.urandom(size)
        send = end.send
        t0 = 0
        cpu0 = busy0 = 0.0
        relay_cpu0: list[float] = []
        sent = 0
        while sent < total:
            if sent == warm:
                t0 = time.monotonic_ns()
                cpu0 = time.process_time()
                relay_cpu0 = _cpus(relay_pids)
                busy0 = busy_seconds()
            while sent - acked >= window:
                progress.clear()
                await progress.wait()
            await send(payload)
            sent += 1
        await reader
        cpu1 = time.process_time()
        await end.close()
    return {"t0": t0, "cpu": cpu1 - cpu0, "relay_cpu0": relay_cpu0, "busy0": busy0}


async def w_tput_receiver(
    system: str, url: str, size: int, warm: int, n: int, tag: str, relay_pids: list[int], timeout: float,
    device_url: str | None = None,
) -> dict[str, Any]:
    """The device (on ``device_url``, default ``url``): receives and acknowledges."""
    async with asyncio.timeout(timeout):
        loop = asyncio.get_running_loop()
        if system == "bare":
            end: BareEnd | TetherEnd | RawEnd = await bare_connect(url, tag, "b")
        else:
            base = tag.encode()
            end = await tether_device(device_url or url, _seed(base, "dev"), _seed(base, "host"),
                                      deadline=loop.time() + 20, raw=system == RAW)
        _, ack_every = _window(size)
        total = warm + n
        await end.send(b"go")
        recv, send = end.recv, end.send
        got = 0
        nbytes = 0
        cpu0 = 0.0
        while got < total:
            message = await recv()
            got += 1
            if got == warm:
                cpu0 = time.process_time()
            if got > warm:
                nbytes += len(message)
            if got % ack_every == 0 or got == total:
                await send(ACK.pack(got))
        t1 = time.monotonic_ns()
        relay_cpu1 = _cpus(relay_pids)
        busy1 = busy_seconds()
        cpu1 = time.process_time()
        if nbytes != n * size:
            raise RuntimeError(f"received {nbytes} payload bytes, expected {n * size}")
        await asyncio.sleep(0.05)  # let the last ack leave before closing
        await end.close()
    return {"t1": t1, "cpu": cpu1 - cpu0, "relay_cpu1": relay_cpu1, "busy1": busy1}


async def w_lat_echo(system: str, url: str, channels: int, tag: str, stop: Any, timeout: float) -> dict[str, Any]:
    """Echoes every message on ``channels`` channels until ``stop`` is set."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    ends: list[BareEnd | TetherEnd | RawMux] = []
    tasks: list[asyncio.Task[None]] = []
    link = None

    async def echo(end: BareEnd | TetherEnd | RawMux) -> None:
        recv, send = end.recv, end.send
        with contextlib.suppress(Exception):
            while True:
                await send(await recv())

    base = tag.encode()
    if system == "bare":
        async def one(i: int) -> None:
            end = await bare_connect(url, f"{tag}-{i}", "b")
            ends.append(end)
            tasks.append(asyncio.create_task(echo(end)))

        await _bounded_gather(channels, one)
    elif system == RAW:  # one task echoes every channel's frames, as they come
        link = await tether_host(url, _seed(base, "host"), [_seed(base, f"dev{i}") for i in range(channels)],
                                 raw=True)
        mux = RawMux(link)
        ends.append(mux)
        tasks.append(asyncio.create_task(echo(mux)))
    else:
        link = await tether_host(url, _seed(base, "host"), [_seed(base, f"dev{i}") for i in range(channels)])

        async def accept_one() -> None:
            end = await tether_accept(link, _seed(base, "host"))
            ends.append(end)
            tasks.append(asyncio.create_task(echo(end)))

        async def accept_all() -> None:
            pending: set[asyncio.Task[None]] = set()
            for _ in range(channels):
                channel_task = asyncio.create_task(accept_one())
                pending.add(channel_task)
                channel_task.add_done_callback(pending.discard)
                await asyncio.sleep(0)
            await asyncio.gather(*pending, return_exceptions=True)

        tasks.append(asyncio.create_task(accept_all()))
    while not stop.is_set() and loop.time() < deadline:  # noqa: ASYNC110 (a multiprocessing Event)
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    if link is not None:
        with contextlib.suppress(Exception):
            await link.close()
    for end in ends:
        with contextlib.suppress(Exception):
            await end.close()
    return {"echo_channels": len(ends)}


async def w_lat_ping(
    system: str, url: str, channels: int, tag: str, size: int, pings_1ch: int, rate: float, seconds: float,
    timeout: float, device_url: str | None = None,
) -> dict[str, Any]:
    """1 channel: ``pings_1ch`` sequential round trips. Many: each channel pings at random
    (exponential gaps, ``rate`` per second across all channels) for ``seconds``; one ping
    outstanding per channel. The pinging devices dial ``device_url`` (default ``url``)."""
    async with asyncio.timeout(timeout):
        loop = asyncio.get_running_loop()
        base = tag.encode()
        t_setup = time.monotonic()

        async def one(i: int) -> BareEnd | TetherEnd | RawEnd:
            if system == "bare":
                return await bare_connect(url, f"{tag}-{i}", "a")
            return await tether_device(device_url or url, _seed(base, f"dev{i}"), _seed(base, "host"),
                                       deadline=loop.time() + 30, raw=system == RAW)

        ends = await _bounded_gather(channels, one)
        payload = os.urandom(size)

        async def ping(end: BareEnd | TetherEnd | RawEnd) -> int:
            t = time.perf_counter_ns()
            await end.send(payload)
            reply = await end.recv()
            dt = time.perf_counter_ns() - t
            if len(reply) != size:
                raise RuntimeError("echo of the wrong size")
            return dt

        # warm-up: every channel round-trips (this also waits for the bare pairs to meet)
        await _bounded_gather(channels, lambda i: ping(ends[i]), limit=200)
        setup_s = time.monotonic() - t_setup
        samples: list[int] = []
        if channels == 1:
            for _ in range(min(200, pings_1ch)):
                await ping(ends[0])
            for _ in range(pings_1ch):
                samples.append(await ping(ends[0]))
        else:
            stop_at = loop.time() + seconds
            per_channel = rate / channels
            max_per_channel = int(per_channel * seconds * 3) + 3

            async def run(end: BareEnd | TetherEnd | RawEnd) -> None:
                await asyncio.sleep(random.uniform(0, 1 / per_channel))
                for _ in range(max_per_channel):
                    if loop.time() >= stop_at:
                        return
                    samples.append(await ping(end))
                    await asyncio.sleep(random.expovariate(per_channel))

            await asyncio.gather(*(run(e) for e in ends))
        for end in ends:
            with contextlib.suppress(Exception):
                await end.close()
    return {"samples_ns": samples, "setup_s": setup_s, "channels": len(ends)}


async def w_idle(system: str, url: str, count: int, offset: int, tag: str, stop: Any, progress: Any,
                 timeout: float, role: str = "device", ping_interval: float | None = 20,
                 inflight: int = CONNECT_CONCURRENCY, ramp_timeout: float | None = None) -> dict[str, Any]:
    """Opens ``count`` idle connections (tether: authenticated links, devices unless ``role`` is
    "host"; ``ping_interval``: the clients' own keepalive, RelayLink's default 20 s) with at most
    ``inflight`` handshakes at once, and holds them. ``ramp_timeout``: stop connecting after this
    many seconds and hold what is connected (default: fail after ``timeout``)."""
    from tether.crypto.keys import Identity
    from tether.relay.link import RelayLink

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    base = tag.encode()
    held: list[Any] = []
    errors: list[str] = []

    async def one(i: int) -> None:
        try:
            if system == "bare":
                held.append(await bare_connect(url, f"{tag}-{offset + i}", "a"))
            else:
                ident = Identity.from_seed(_seed(base, f"idle{offset + i}"))
                held.append(await RelayLink.connect(url, ident, "host" if role == "host" else "device",
                                                    open_timeout=60, ping_interval=ping_interval))
        except Exception as exc:
            if len(errors) < 5:
                errors.append(f"{type(exc).__name__}: {exc}")

    t0 = time.monotonic()
    try:
        async with asyncio.timeout(ramp_timeout or timeout):
            await _bounded_gather(count, one, limit=inflight)
    except TimeoutError:
        if ramp_timeout is None:
            raise
        errors.append(f"stopped connecting after {ramp_timeout:g} s with {len(held)} connections")
    ramp_s = time.monotonic() - t0
    progress.put(("ready", len(held)))
    while not stop.is_set() and loop.time() < deadline:  # noqa: ASYNC110 (a multiprocessing Event)
        await asyncio.sleep(0.05)
    return {"held": len(held), "errors": errors, "ramp_s": ramp_s}


async def w_tput_both(**kwargs: Any) -> dict[str, Any]:
    """Sender and receiver in one process (one event loop)."""
    send, recv = await asyncio.gather(w_tput_sender(**kwargs), w_tput_receiver(**kwargs))
    return {"sender": send, "receiver": recv}


_WORKERS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "tput_both": w_tput_both,
    "tput_sender": w_tput_sender,
    "tput_receiver": w_tput_receiver,
    "lat_echo": w_lat_echo,
    "lat_ping": w_lat_ping,
    "idle": w_idle,
}


class Workers:
    """A group of worker processes reporting into one queue."""

    def __init__(self) -> None:
        self.ctx = mp.get_context("spawn")
        self.out = self.ctx.Queue()
        self.procs: list[Any] = []

    def start(self, name: str, *, func: Callable[..., Awaitable[Any]] | None = None, fast_exit: bool | None = None,
              loop: str = "asyncio", **kwargs: Any) -> None:
        """A worker process running ``func(**kwargs)`` (default: the worker registered as
        ``name``) on ``loop`` (see ``_worker``); ``fast_exit``: end it with os._exit once it
        reported (default for "idle": thousands of sockets)."""
        proc = self.ctx.Process(target=_worker, args=(name, kwargs, self.out, func, fast_exit, loop), daemon=True)
        proc.start()
        self.procs.append(proc)

    def results(self, count: int, timeout: float) -> list[tuple[str, Any]]:
        got: list[tuple[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"workers did not finish within {timeout} s")
            name, status, result = self.out.get(timeout=remaining)
            if status != "ok":
                raise RuntimeError(f"worker {name} failed: {result}")
            got.append((name, result))
        return got

    def close(self) -> None:
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


# ---------------------------------------------------------------------------------------
# the measurements


def measure_throughput(system: str, server: Server, size: int, n: int, *, split: bool = True,
                       device_server: Server | None = None, also_pids: Sequence[int] = ()) -> dict[str, Any]:
    """One throughput measurement: the sender (host) on ``server``, the receiver (device) on
    ``device_server`` (default: the same). "relay CPU" is the sum over ``server``,
    ``device_server`` and ``also_pids`` (a cluster's Redis); ``relay_cpu_us_per_msg_each`` has
    each, in that order."""
    warm = max(100, n // 10)
    tag = f"tp{random.getrandbits(48):x}"
    workers = Workers()
    pids = [server.pid]
    if device_server is not None and device_server.pid != server.pid:
        pids.append(device_server.pid)
    pids += list(also_pids)
    kwargs = dict(system=system, url=server.url, size=size, warm=warm, n=n, tag=tag, relay_pids=pids,
                  timeout=120.0, device_url=device_server.url if device_server is not None else None)
    try:
        if split:
            workers.start("tput_receiver", **kwargs)
            workers.start("tput_sender", **kwargs)
            res = dict(workers.results(2, timeout=130))
            send, recv = res["tput_sender"], res["tput_receiver"]
        else:
            workers.start("tput_both", **kwargs)
            both = workers.results(1, timeout=130)[0][1]
            send, recv = both["sender"], both["receiver"]
    finally:
        workers.close()
    seconds = (recv["t1"] - send["t0"]) / 1e9
    each = [b - a for a, b in zip(send["relay_cpu0"], recv["relay_cpu1"], strict=True)]
    relay_cpu = sum(each)
    busy = recv["busy1"] - send["busy0"]
    load_cpu = send["cpu"] + (recv["cpu"] if split else 0.0)
    return {
        "system": system,
        "payload": size,
        "messages": n,
        "warmup_messages": warm,
        "seconds": seconds,
        "msgs_per_s": n / seconds,
        "mb_per_s": n * size / seconds / 1e6,
        "relay_cpu_pct": 100 * relay_cpu / seconds,
        "relay_cpu_us_per_msg": 1e6 * relay_cpu / n,
        "relay_cpu_us_per_msg_each": [1e6 * c / n for c in each],
        "sender_cpu_pct": 100 * send["cpu"] / seconds,
        "receiver_cpu_pct": 100 * recv["cpu"] / seconds if split else None,
        "sender_cpu_us_per_msg": 1e6 * send["cpu"] / n,
        "receiver_cpu_us_per_msg": 1e6 * recv["cpu"] / n if split else None,
        "machine_busy_pct": 100 * busy / seconds,
        # busy CPU not spent by the relay or the load processes: other work on the machine
        "other_cpu_pct": 100 * (busy - relay_cpu - load_cpu) / seconds,
        "load_processes": 2 if split else 1,
        "window_msgs": _window(size)[0],
    }


def measure_latency(system: str, server: Server, sizes: Sizes, channels: int, size: int = KIB, *,
                    device_server: Server | None = None) -> dict[str, Any]:
    """Round trips: the echoing host on ``server``, the pinging devices on ``device_server``
    (default: the same)."""
    tag = f"lat{random.getrandbits(48):x}"
    workers = Workers()
    stop = workers.ctx.Event()
    try:
        workers.start("lat_echo", system=system, url=server.url, channels=channels, tag=tag, stop=stop, timeout=120.0)
        workers.start(
            "lat_ping", system=system, url=server.url, channels=channels, tag=tag, size=size,
            pings_1ch=sizes.lat_pings_1ch, rate=sizes.lat_rate, seconds=sizes.lat_seconds, timeout=110.0,
            device_url=device_server.url if device_server is not None else None,
        )
        ping = dict(workers.results(1, timeout=120))["lat_ping"]
        stop.set()
        workers.results(1, timeout=30)
    finally:
        stop.set()
        workers.close()
    samples = sorted(ping["samples_ns"])
    return {
        "system": system,
        "channels": ping["channels"],
        "payload": size,
        "samples": len(samples),
        "p50_ms": _pct(samples, 50) / 1e6,
        "p99_ms": _pct(samples, 99) / 1e6,
        "max_ms": samples[-1] / 1e6 if samples else float("nan"),
        "setup_s": ping["setup_s"],
        "rate_per_s": sizes.lat_rate if channels > 1 else None,
    }


def _pct(sorted_samples: list[int], p: float) -> float:
    if not sorted_samples:
        return float("nan")
    k = min(len(sorted_samples) - 1, max(0, round(p / 100 * len(sorted_samples) + 0.5) - 1))
    return float(sorted_samples[k])


def measure_idle_rss(system: str, sizes: Sizes) -> dict[str, Any]:
    server = Server(system)
    workers = Workers()
    stop = workers.ctx.Event()
    progress = workers.ctx.Queue()
    tag = f"idle{random.getrandbits(48):x}"
    try:
        # warm the server's code paths with a few connections that come and go
        warm = Workers()
        warm_stop = warm.ctx.Event()
        warm_progress = warm.ctx.Queue()
        warm.start("idle", system=system, url=server.url, count=20, offset=10**9, tag=tag, stop=warm_stop,
                   progress=warm_progress, timeout=60.0)
        warm_progress.get(timeout=60)
        warm_stop.set()
        warm.results(1, timeout=30)
        warm.close()
        time.sleep(1.5)
        before = rss_kib(server.pid)
        per_proc = sizes.idle_conns // sizes.idle_procs
        t0 = time.monotonic()
        for k in range(sizes.idle_procs):
            workers.start("idle", system=system, url=server.url, count=per_proc, offset=k * per_proc, tag=tag,
                          stop=stop, progress=progress, timeout=240.0)
        held = 0
        for _ in range(sizes.idle_procs):
            held += progress.get(timeout=240)[1]
        ramp = time.monotonic() - t0
        time.sleep(1.5)
        after = rss_kib(server.pid)
        stop.set()
        details = [r for _, r in workers.results(sizes.idle_procs, timeout=60)]
    finally:
        stop.set()
        workers.close()
        server.stop()
    return {
        "system": system,
        "connections": held,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_conn": (after - before) / held if held else float("nan"),
        "ramp_s": ramp,
        "conns_per_s": held / ramp if ramp else float("nan"),
        "errors": [e for d in details for e in d["errors"]],
    }


async def measure_catchup(relay: Server, sizes: Sizes) -> dict[str, Any]:
    """A real ``tether host`` process with N events already in its log; a paired client (this
    process) asks for everything since 0 and waits for the last seq."""
    from tether.client.pairing import login
    from tether.client.sdk import Client
    from tether.host.daemon import HostPaths
    from tether.host.db import Database
    from tether.host.eventlog import EventLog

    n = sizes.catchup_events
    host_home = Path(tempfile.mkdtemp(prefix="bh", dir="/tmp"))
    workspace = Path(tempfile.mkdtemp(prefix="bw", dir="/tmp"))
    client_home = Path(tempfile.mkdtemp(prefix="bc", dir="/tmp"))
    log_path = Path(tempfile.mkstemp(prefix="bench-host-", suffix=".log")[1])
    host = None
    try:
        # The events the client missed, written before the host starts: one session whose input
        # and output alternate, so none of them coalesce and all N reach the client as N events.
        paths = HostPaths(host_home)
        paths.dir.mkdir(mode=0o700, parents=True)
        db = await Database.open(paths.db)
        log = await EventLog.open(db)
        sid = "s-bench"
        items: list[Any] = [(sid, "session.started", {"agent": "pty", "workspace": str(workspace),
                            "command": ["bash"], "title": "bench", "cols": 80, "rows": 24}, None)]
        for i in range(1, n - 1):
            if i % 2:
                items.append((sid, "session.input", {"text": f"echo line {i}\n"}, None))
            else:
                items.append((sid, "session.output", {"stream": "pty", "data": f"line {i - 1}\r\n"}, None))
        items.append((sid, "session.exited", {"exit_code": 0, "signal": None, "reason": None}, None))
        for i in range(0, len(items), 2000):
            await log.append_many(items[i : i + 2000])
        await db.close()

        host = await asyncio.to_thread(_start_host, host_home, workspace, relay.url, log_path)
        offer = await asyncio.to_thread(_pair_offer, host_home)
        await login(client_home, offer["link"], name="bench")
        head = await asyncio.to_thread(_log_head, paths.db)

        async def drain(client: Client) -> int:
            events = client.events(since=0)
            count = 0
            try:
                async for event in events:
                    if event.get("type") != "snapshot":
                        count += 1
                    if event["seq"] >= head:
                        break
            finally:
                await events.aclose()
            return count

        cold: list[float] = []
        warm: list[float] = []
        counts: set[int] = set()
        for _ in range(sizes.catchup_repeats):
            async with asyncio.timeout(60):
                t0 = time.perf_counter()
                client = await Client.open(client_home)
                try:
                    counts.add(await drain(client))
                    cold.append(time.perf_counter() - t0)
                finally:
                    await client.close()
                client = await Client.open(client_home)
                try:
                    await client.info()  # the channel is up and the handshake done
                    t0 = time.perf_counter()
                    counts.add(await drain(client))
                    warm.append(time.perf_counter() - t0)
                finally:
                    await client.close()
        return {
            "events": n,
            "head": head,
            "delivered": sorted(counts),
            "host": "real `tether host` process (events written to its log before it started)",
            "cold_s": statistics.median(cold),
            "warm_s": statistics.median(warm),
            "cold_all_s": cold,
            "warm_all_s": warm,
            "events_per_s_warm": n / statistics.median(warm),
            "events_per_s_cold": n / statistics.median(cold),
        }
    finally:
        await asyncio.to_thread(_cleanup_host, host, log_path, [host_home, workspace, client_home])


def _start_host(home: Path, workspace: Path, relay_url: str, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log_file:
        host = subprocess.Popen(
            [sys.executable, "-m", "tether", "--home", str(home), "host", "--relay", relay_url,
             "--workspace", str(workspace), "--name", "bench-host"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_file, start_new_session=True,
        )
    _wait_for(log_path, r"connected to relay", host, 30)
    return host


def _pair_offer(home: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "tether", "--home", str(home), "pair", "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    offer: dict[str, Any] = json.loads(out)
    return offer


def _log_head(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT MAX(seq) FROM events").fetchone()[0])


def stop_group(proc: subprocess.Popen[bytes], sig: int, grace: float) -> None:
    """Send ``sig`` to the process group of ``proc`` (started with a session of its own) and wait
    ``grace`` seconds for it to end; then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _cleanup_host(host: subprocess.Popen[bytes] | None, log_path: Path, dirs: list[Path]) -> None:
    if host is not None:
        stop_group(host, signal.SIGTERM, 15)
    with contextlib.suppress(OSError):
        log_path.unlink()
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# the run


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def write_json(path: Path | None, results: dict[str, Any], *, final: bool = True) -> None:
    """The results as JSON in ``path`` (``--json``), if given; ``final`` says where they went."""
    if path is not None:
        path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        if final:
            print(f"\nwrote {path}")


def run(sizes: Sizes, *, profile: Path | None = None, split: bool = True, profile_system: str = "tether",
        profile_size: int = KIB) -> dict[str, Any]:
    from tether.relay.limits import RelayLimits

    lim = RelayLimits()
    results: dict[str, Any] = {
        "machine": machine_facts(),
        "mode": "quick" if sizes is QUICK else "full",
        "throughput_load": "sender and receiver in two processes" if split else "sender and receiver in one process",
        "sizes": sizes.__dict__,
        "relay_limits": {
            "frames_per_second": lim.frames_per_second,
            "frames_burst": lim.frames_burst,
            "opens_per_minute": lim.opens_per_minute,
            "channel_queue_bytes": lim.channel_queue_bytes,
            "slow_receiver_grace": lim.slow_receiver_grace,
        },
        "targets": TARGETS,
        "loadavg_at_start": os.getloadavg(),
    }
    t_start = time.monotonic()
    relay = Server("tether", profile=profile)
    bare = Server("bare")
    servers = {"bare": bare, RAW: relay, "tether": relay}
    try:
        if profile is not None:
            size, n = profile_size, sizes.tput.get(profile_size, sizes.tput[KIB])
            _say(f"profiling the relay: {profile_system}, {n} × {size} B")
            results["throughput"] = [measure_throughput(profile_system, relay, size, n, split=split)]
            return results
        tput: list[dict[str, Any]] = []
        for size, n in sizes.tput.items():
            for rep in range(sizes.tput_repeats):
                # interleaved, and the order turns each repeat (no system always goes first)
                for system in SYSTEMS[rep % 3:] + SYSTEMS[:rep % 3]:
                    r = measure_throughput(system, servers[system], size, n, split=split)
                    r["repeat"] = rep
                    tput.append(r)
                    _say(f"throughput {system:10} {size // KIB:>3} KiB: {r['msgs_per_s']:>9,.0f} msg/s "
                         f"{r['mb_per_s']:>7,.1f} MB/s  CPU: relay {r['relay_cpu_pct']:.0f}%, "
                         f"sender {r['sender_cpu_pct']:.0f}%, receiver {r['receiver_cpu_pct'] or 0:.0f}%, "
                         f"others {r['other_cpu_pct']:.0f}%")
        results["throughput"] = tput
        lat: list[dict[str, Any]] = []
        for channels in (1, sizes.lat_channels):
            for system in SYSTEMS:
                r = measure_latency(system, servers[system], sizes, channels)
                lat.append(r)
                _say(f"latency {system:10} {channels:>5} ch: p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms "
                     f"({r['samples']} samples, setup {r['setup_s']:.1f} s)")
        results["latency"] = lat
        _say(f"catch-up: {sizes.catchup_events} events through a real host process")
        results["catchup"] = asyncio.run(measure_catchup(relay, sizes))
    finally:
        relay.stop()
        bare.stop()
    rss = []
    for system in ("tether", "bare"):
        _say(f"idle RSS: {sizes.idle_conns} {system} connections from {sizes.idle_procs} processes")
        rss.append(measure_idle_rss(system, sizes))
    results["idle_rss"] = rss
    results["wall_s"] = time.monotonic() - t_start
    results["summary"] = summarize(results)
    return results


def _median_by(rows: list[dict[str, Any]], key: str, **match: Any) -> dict[str, Any]:
    chosen = [r for r in rows if all(r[k] == v for k, v in match.items())]
    chosen.sort(key=lambda r: r[key])
    return chosen[len(chosen) // 2]


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    """Medians over the repeats. ``ratio`` (end to end) is tether ÷ bare, ``ratio_relay_only`` is
    tether-raw ÷ bare: the same bare repeats serve both."""
    out: dict[str, Any] = {}
    tput = res["throughput"]
    for size in sorted({r["payload"] for r in tput}):
        med = {system: _median_by(tput, "msgs_per_s", system=system, payload=size) for system in SYSTEMS}
        b, raw, t = med["bare"], med[RAW], med["tether"]
        row: dict[str, Any] = {
            "bare_msgs_per_s": b["msgs_per_s"], "tether_msgs_per_s": t["msgs_per_s"],
            "raw_msgs_per_s": raw["msgs_per_s"],
            "bare_mb_per_s": b["mb_per_s"], "tether_mb_per_s": t["mb_per_s"], "raw_mb_per_s": raw["mb_per_s"],
            "ratio": t["msgs_per_s"] / b["msgs_per_s"],
            "ratio_relay_only": raw["msgs_per_s"] / b["msgs_per_s"],
        }
        for system, key in (("bare", "bare"), (RAW, "raw"), ("tether", "tether")):
            rows = [r for r in tput if r["system"] == system and r["payload"] == size]
            for what in ("relay_cpu_us_per_msg", "sender_cpu_us_per_msg", "receiver_cpu_us_per_msg",
                         "machine_busy_pct", "other_cpu_pct"):
                values = [r[what] for r in rows if r[what] is not None]
                row[f"{key}_{what}"] = statistics.median(values) if values else None
        # the ratios of each repeat (bare and the other measured back to back)
        by_rep = {(r["system"], r.get("repeat", 0)): r["msgs_per_s"]
                  for r in tput if r["payload"] == size}
        reps = sorted({rep for _, rep in by_rep})
        row["ratio_relay_only_each"] = [by_rep[(RAW, k)] / by_rep[("bare", k)] for k in reps]
        row["ratio_each"] = [by_rep[("tether", k)] / by_rep[("bare", k)] for k in reps]
        out[f"tput_{size // KIB}k"] = row
    for row in res["latency"]:
        if row["system"] != "tether":
            continue
        ch = row["channels"]
        b = next(r for r in res["latency"] if r["system"] == "bare" and r["channels"] == ch)
        raw = next(r for r in res["latency"] if r["system"] == RAW and r["channels"] == ch)
        out[f"latency_{ch}ch"] = {
            "bare_p50_ms": b["p50_ms"], "bare_p99_ms": b["p99_ms"],
            "tether_p50_ms": row["p50_ms"], "tether_p99_ms": row["p99_ms"],
            "raw_p50_ms": raw["p50_ms"], "raw_p99_ms": raw["p99_ms"],
            "added_p50_ms": row["p50_ms"] - b["p50_ms"], "added_p99_ms": row["p99_ms"] - b["p99_ms"],
            "added_p50_ms_relay_only": raw["p50_ms"] - b["p50_ms"],
            "added_p99_ms_relay_only": raw["p99_ms"] - b["p99_ms"],
        }
    for row in res["idle_rss"]:
        out[f"rss_{row['system']}_kib_per_conn"] = row["kib_per_conn"]
    c = res["catchup"]
    out["catchup"] = {"cold_s": c["cold_s"], "warm_s": c["warm_s"], "events_per_s": c["events_per_s_warm"],
                      "events": c["events"]}
    one = out["latency_1ch"]
    busy = max((k for k in out if k.startswith("latency_")), key=lambda k: int(k.split("_")[1][:-2]))
    busy_ch = busy.split("_")[1][:-2]
    scale = 10_000 / c["events"]
    out["pass"] = {
        "[1] end to end: throughput_ratio_1k >= 0.8": out["tput_1k"]["ratio"] >= TARGETS["throughput_ratio_1k"],
        "[1] end to end: added_p99_1ch <= 1 ms": one["added_p99_ms"] <= TARGETS["added_p99_1ch_ms"],
        "[1] rss_per_idle_conn <= 20 KiB": out["rss_tether_kib_per_conn"] <= TARGETS["rss_per_idle_conn_kib"],
        # quick runs use fewer events: compare the time scaled to 10,000
        "[1] catchup_10k (cold) <= 0.5 s": c["cold_s"] * scale <= TARGETS["catchup_10k_s"],
        "[10] relay only: throughput ratio 1 KiB >= 1.0":
            out["tput_1k"]["ratio_relay_only"] >= TARGETS["relay_only_ratio_1k"],
    }
    if "tput_64k" in out:
        out["pass"]["[10] relay only: throughput ratio 64 KiB >= 0.9"] = (
            out["tput_64k"]["ratio_relay_only"] >= TARGETS["relay_only_ratio_64k"])
    out["pass"][f"[10] relay only: added p99 at {busy_ch} busy channels <= 2 ms"] = (
        out[busy]["added_p99_ms_relay_only"] <= TARGETS["relay_only_added_p99_busy_ms"])
    return out


def print_table(res: dict[str, Any]) -> None:
    m = res["machine"]
    print(f"\nmachine: {m['cpu_model']}, {m['cores']} cores ({m['cores_usable']} usable), {m['memory']}, "
          f"Linux {m['kernel']}")
    load = res.get("loadavg_at_start")
    print(f"python {m['python']}, websockets {m['websockets']}, cryptography {m['cryptography']}, "
          f"tether {m['tether_commit']}; mode {res['mode']}, wall {res.get('wall_s', 0):.0f} s"
          + (f", load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}" if load else "") + "\n")
    print("tether-raw: the tether relay, endpoints as bare's (DATA frames of opaque bytes, no E2E): relay only")
    print("tether: the tether relay, endpoints as shipped (Noise/AES-GCM E2E, RelayLink): end to end\n")
    s = res["summary"]
    rows: list[tuple[str, ...]] = []
    for key in sorted(k for k in s if k.startswith("tput_")):
        t = s[key]
        size = key.removeprefix("tput_")
        target = {"1k": "≥ 1.00 | ≥ 0.80", "64k": "≥ 0.90 |"}.get(size, "")
        rows.append((f"throughput {size}iB msg/s", f"{t['bare_msgs_per_s']:,.0f}", f"{t['raw_msgs_per_s']:,.0f}",
                     f"{t['tether_msgs_per_s']:,.0f}", f"{t['ratio_relay_only']:.2f}", f"{t['ratio']:.2f}", target))
        rows.append((f"throughput {size}iB MB/s", f"{t['bare_mb_per_s']:,.1f}", f"{t['raw_mb_per_s']:,.1f}",
                     f"{t['tether_mb_per_s']:,.1f}", "", "", ""))
        for what, label in (("relay", "relay"), ("sender", "sender"), ("receiver", "receiver")):
            vals = [t[f"{k}_{what}_cpu_us_per_msg"] for k in ("bare", "raw", "tether")]
            rows.append((f"{label} CPU µs/msg {size}iB", *(f"{v:.1f}" if v is not None else "" for v in vals),
                         "", "", ""))
    for key in sorted((k for k in s if k.startswith("latency_")), key=lambda k: int(k.split("_")[1][:-2])):
        lat = s[key]
        ch = key.split("_")[1][:-2]
        rows.append((f"RTT p50 ms, {ch} ch", f"{lat['bare_p50_ms']:.3f}", f"{lat['raw_p50_ms']:.3f}",
                     f"{lat['tether_p50_ms']:.3f}", f"{lat['added_p50_ms_relay_only']:+.3f}",
                     f"{lat['added_p50_ms']:+.3f}", ""))
        rows.append((f"RTT p99 ms, {ch} ch", f"{lat['bare_p99_ms']:.3f}", f"{lat['raw_p99_ms']:.3f}",
                     f"{lat['tether_p99_ms']:.3f}", f"{lat['added_p99_ms_relay_only']:+.3f}",
                     f"{lat['added_p99_ms']:+.3f}", "| ≤ +1.000" if ch == "1" else "≤ +2.000 |"))
    rss_n = res["idle_rss"][0]["connections"]
    rows.append((f"RSS KiB / idle conn ({rss_n:,})", f"{s['rss_bare_kib_per_conn']:.1f}", "",
                 f"{s['rss_tether_kib_per_conn']:.1f}", "", "", "≤ 20"))
    c = s["catchup"]
    rows.append((f"catch-up {c['events']:,} events, s (fresh conn)", "", "", f"{c['cold_s']:.3f}", "", "", "≤ 0.5"))
    rows.append((f"catch-up {c['events']:,} events, s (conn up)", "", "", f"{c['warm_s']:.3f}", "", "", ""))
    rows.append(("catch-up events/s (conn up)", "", "", f"{c['events_per_s']:,.0f}", "", "", ""))
    header = ("metric", "bare", "tether-raw", "tether", "relay only", "end to end", "target: relay only | e2e")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        cells = zip(r, widths, strict=True)
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(cells)))
    print("\n'relay only' = tether-raw vs bare (ratio, or added ms); 'end to end' = tether vs bare.")
    for key in sorted(k for k in s if k.startswith("tput_")):
        t = s[key]
        print(f"{key}: ratio per repeat, relay only {' '.join(f'{x:.2f}' for x in t['ratio_relay_only_each'])}; "
              f"end to end {' '.join(f'{x:.2f}' for x in t['ratio_each'])}")
    print()
    for name, ok in s["pass"].items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")


def print_profile(path: Path, limit: int = 30) -> None:
    import pstats

    stats = pstats.Stats(str(path))
    stats.strip_dirs()
    for key in ("tottime", "cumulative"):
        print(f"\n--- relay profile, by {key} ---")
        stats.sort_stats(key).print_stats(limit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="tether relay benchmark (see docs/benchmarks.md)")
    parser.add_argument("--quick", action="store_true", help="smaller counts: a smoke run in < 30 s")
    parser.add_argument("--json", metavar="PATH", type=Path, help="write every figure to PATH as JSON")
    parser.add_argument("--colocate", action="store_true",
                        help="throughput: run sender and receiver in one process (default: two processes)")
    parser.add_argument("--profile", action="store_true",
                        help="run only one tether throughput test under cProfile and print the relay profile")
    parser.add_argument("--profile-system", choices=("tether", RAW), default="tether",
                        help="--profile: the endpoints (default tether: E2E; tether-raw: the relay-only load)")
    parser.add_argument("--profile-size", type=int, choices=(1, 64), default=1, help="--profile: payload KiB")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.profile:
        prof = Path(tempfile.mkstemp(prefix="bench-relay-", suffix=".prof")[1])
        res = run(sizes, profile=prof, split=not args.colocate, profile_system=args.profile_system,
                  profile_size=args.profile_size * KIB)
        t = res["throughput"][0]
        print(f"{args.profile_system} {args.profile_size} KiB under cProfile: {t['msgs_per_s']:,.0f} msg/s, "
              f"relay CPU {t['relay_cpu_pct']:.0f}% (profiling slows the relay down; compare shares, not totals)")
        print_profile(prof)
        print(f"\nprofile saved to {prof}")
        return 0
    res = run(sizes, split=not args.colocate)
    print_table(res)
    write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
