"""Redis transport benchmark (issue [10]): how cross-node frames should travel through Redis.

    .venv/bin/python bench/redis_transport.py              # full run (about 5 minutes on 2 cores)
    .venv/bin/python bench/redis_transport.py --quick      # smoke run, < 30 s
    .venv/bin/python bench/redis_transport.py --json out.json

Two relay "nodes" are two processes (multiprocessing, spawn), each with its own redis-py asyncio
client: node A (the sender) forwards 1 KiB frames to node B (the receiver) through Redis, as a
relay forwards a device's frames to the node its host is on. Node B has one inbox: a pub/sub
channel, a sharded channel or a stream. Transports:

* ``pubsub-batched``: PUBLISH; frames queued by node A are packed into one message (each frame
  length-prefixed) per event-loop tick, at most 64 KiB a message; while a PUBLISH is in flight the
  next batch collects, so batches grow with the load (no timer, no added delay when idle);
* ``pubsub-pipelined``: one PUBLISH per frame, but the commands queued in a tick go out in one
  pipeline (one write, one round trip);
* ``pubsub-unbatched``: one awaited PUBLISH per frame (the naive relay);
* ``stream-batched``: the same batches as XADD (MAXLEN ~ 1000 batches) and XREAD BLOCK on node B;
* ``spubsub-batched``: the same batches as SPUBLISH on a 3-master Redis Cluster (node B's inbox is
  a shard channel; redis-py's asyncio ``RedisCluster``, ``get_sharded_message``).

Each transport is measured twice:

1. **throughput**: node A sends N frames as fast as it can, with at most 2 MiB unacknowledged
   (node B counts received frames in shared memory; without such a window a pub/sub subscriber is
   dropped by Redis once its output buffer passes 32 MB, the default limit). frames/s is N over the
   time from the first send (node A) to the last frame received (node B), on CLOCK_MONOTONIC.
2. **latency**: node A sends at a fixed rate (open loop) for a few seconds; every frame carries its
   send time and node B records receive − send.

redis-server's CPU (``/proc/PID/stat``, utime + stime) is read over each timed window, and the
nodes report their own CPU. All traffic on 127.0.0.1; every loop is bounded in count and time;
every process is stopped at the end. See docs/benchmarks.md for the results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import statistics
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import relay as bench  # noqa: E402  (bench/relay.py: machine facts, /proc readers)

from tests.support.redis_server import RedisCluster, RedisServer  # noqa: E402

KIB = 1024
FRAME_BYTES = 1 * KIB
BATCH_BYTES = 64 * KIB
WINDOW_FRAMES = 2 * KIB * KIB // FRAME_BYTES
STREAM_MAXLEN = 1000  # batches kept in the stream (approximate trim)
HEAD = struct.Struct(">QQ")  # frame: sequence number, send time (ns, CLOCK_MONOTONIC), then filler
LEN = struct.Struct(">I")  # every frame in a Redis message is length-prefixed
INBOX = "tether:node:B"
RUN_TIMEOUT = 120.0  # seconds, for one measurement

TRANSPORTS = ("pubsub-batched", "pubsub-pipelined", "pubsub-unbatched", "stream-batched", "spubsub-batched")


@dataclass(frozen=True)
class Sizes:
    tput_frames: int
    tput_frames_unbatched: int  # the naive transport is slow: fewer frames
    repeats: int
    lat_rates: tuple[int, ...]  # frames/s, open loop
    lat_seconds: float


FULL = Sizes(tput_frames=200_000, tput_frames_unbatched=40_000, repeats=3, lat_rates=(1_000, 10_000), lat_seconds=4.0)
QUICK = Sizes(tput_frames=20_000, tput_frames_unbatched=5_000, repeats=1, lat_rates=(1_000,), lat_seconds=1.0)


@dataclass(frozen=True)
class Job:
    transport: str
    mode: str  # "throughput" or "latency"
    frames: int
    rate: float  # latency mode: frames/s
    ports: tuple[int, ...]  # one server, or the cluster's masters


# ---------------------------------------------------------------------------------------
# the nodes' Redis side


def _client(job: Job) -> Any:
    if job.transport.startswith("spubsub"):
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", port) for port in job.ports])
    import redis.asyncio as aredis

    return aredis.Redis(host="127.0.0.1", port=job.ports[0])


def pack(frames: list[bytes]) -> bytes:
    return b"".join(LEN.pack(len(f)) + f for f in frames)


def unpack(message: bytes) -> list[tuple[int, int]]:
    """(sequence number, send time ns) of every frame in one Redis message."""
    out, offset, end = [], 0, len(message)
    while offset < end:
        (length,) = LEN.unpack_from(message, offset)
        out.append(HEAD.unpack_from(message, offset + LEN.size))
        offset += LEN.size + length
    return out


def chunks(frames: list[bytes], limit: int) -> list[bytes]:
    """Frames packed into messages of at most ``limit`` bytes (a bigger frame goes alone)."""
    out, current, size = [], [], 0
    for f in frames:
        if current and size + LEN.size + len(f) > limit:
            out.append(pack(current))
            current, size = [], 0
        current.append(f)
        size += LEN.size + len(f)
    if current:
        out.append(pack(current))
    return out


class Forwarder:
    """Node A's side: frames are queued with ``add`` (no await, as a relay's read loop would) and
    a single flusher task sends whatever is queued, in the transport's way."""

    def __init__(self, client: Any, transport: str) -> None:
        self.client = client
        self.transport = transport
        self.queue: list[bytes] = []
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.messages = 0  # Redis messages (PUBLISH / XADD / SPUBLISH) sent
        self.unheard = 0  # PUBLISH answers of 0 receivers: node B was not subscribed (dropped?)
        self.task = asyncio.create_task(self._flush_loop())

    def add(self, frame: bytes) -> None:
        self.queue.append(frame)
        self.idle.clear()
        self.wake.set()

    async def drained(self) -> None:
        await self.idle.wait()

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def _flush_loop(self) -> None:
        send = self._sender()
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.queue:
                frames, self.queue = self.queue, []
                await send(frames)
            self.idle.set()

    def _sender(self) -> Callable[[list[bytes]], Awaitable[None]]:
        c = self.client
        kind, _, batching = self.transport.partition("-")

        async def one(message: bytes) -> None:
            self.messages += 1
            if kind == "pubsub":
                self.unheard += await c.publish(INBOX, message) == 0
            elif kind == "spubsub":
                self.unheard += await c.spublish(INBOX, message) == 0
            else:
                await c.xadd(INBOX, {"b": message}, maxlen=STREAM_MAXLEN, approximate=True)

        async def many(messages: list[bytes]) -> None:
            if len(messages) == 1:
                await one(messages[0])
                return
            self.messages += len(messages)
            pipe = c.pipeline(transaction=False)
            for m in messages:
                if kind == "pubsub":
                    pipe.publish(INBOX, m)
                elif kind == "spubsub":
                    pipe.spublish(INBOX, m)
                else:
                    pipe.xadd(INBOX, {"b": m}, maxlen=STREAM_MAXLEN, approximate=True)
            answers = await pipe.execute()
            if kind != "stream":
                self.unheard += sum(1 for a in answers if a == 0)

        async def batched(frames: list[bytes]) -> None:
            await many(chunks(frames, BATCH_BYTES))

        async def pipelined(frames: list[bytes]) -> None:
            await many([pack([f]) for f in frames])

        async def unbatched(frames: list[bytes]) -> None:
            for f in frames:
                await one(pack([f]))

        return {"batched": batched, "pipelined": pipelined, "unbatched": unbatched}[batching]


async def _inbox(job: Job, client: Any, ready: Any) -> Any:
    """An async iterator of node B's Redis messages (payload bytes), or None every ≤ 0.5 s idle."""
    kind = job.transport.partition("-")[0]
    if kind == "pubsub":
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(INBOX)
        await pubsub.get_message(timeout=1)  # the confirmation
        ready.set()
        while True:
            m = await pubsub.get_message(timeout=0.5)
            yield None if m is None else m["data"]
    elif kind == "spubsub":
        await client.initialize()
        pubsub = client.pubsub()
        await pubsub.ssubscribe(INBOX)
        await pubsub.get_sharded_message(timeout=1)
        ready.set()
        while True:
            m = await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=0.5)
            yield None if m is None or m["type"] != "smessage" else m["data"]
    else:
        await client.delete(INBOX)
        last = "0-0"  # not "$": that would skip what was added between two XREADs
        ready.set()
        while True:
            answer = await client.xread({INBOX: last}, count=256, block=500)
            if not answer:
                yield None
                continue
            for _key, entries in answer.items() if isinstance(answer, dict) else answer:
                for entry_id, fields in entries:
                    last = entry_id
                    yield fields[b"b"]


# ---------------------------------------------------------------------------------------
# the two node processes


def receiver_main(job: Job, ready: Any, sent_all: Any, counter: Any, results: Any) -> None:
    results.put(("receiver", asyncio.run(_receive(job, ready, sent_all, counter))))


async def _receive(job: Job, ready: Any, sent_all: Any, counter: Any) -> dict[str, Any]:
    client = _client(job)
    latencies: list[int] = []
    received = gaps = messages = 0
    first_sent_ns = last_ns = 0
    expected_seq = 0
    cpu0 = time.process_time()
    deadline = time.monotonic() + RUN_TIMEOUT
    idle_since = None
    inbox = _inbox(job, client, ready)
    try:
        async for message in inbox:
            now = time.monotonic()
            if message is None:
                # Done when everything arrived, or when node A is done and nothing came for 2 s.
                if sent_all.is_set():
                    idle_since = idle_since or now
                    if now - idle_since > 2:
                        break
                if now > deadline:
                    break
                continue
            idle_since = None
            now_ns = time.monotonic_ns()
            messages += 1
            for seq, sent_ns in unpack(message):
                if seq != expected_seq:
                    gaps += 1
                expected_seq = seq + 1
                if received == 0:
                    first_sent_ns = sent_ns
                received += 1
                if job.mode == "latency":
                    latencies.append(now_ns - sent_ns)
            counter.value = received
            last_ns = now_ns
            if received >= job.frames or now > deadline:
                break
    finally:
        await inbox.aclose()
        await client.aclose()
    return {
        "received": received,
        "messages": messages,
        "gaps": gaps,
        "seconds": (last_ns - first_sent_ns) / 1e9 if received else 0.0,
        "cpu_s": time.process_time() - cpu0,
        "latencies_ns": latencies,
    }


def sender_main(job: Job, armed: Any, go: Any, sent_all: Any, counter: Any, results: Any) -> None:
    results.put(("sender", asyncio.run(_send(job, armed, go, sent_all, counter))))


async def _send(job: Job, armed: Any, go: Any, sent_all: Any, counter: Any) -> dict[str, Any]:
    client = _client(job)
    if job.transport.startswith("spubsub"):
        await client.initialize()
    await client.ping()
    forwarder = Forwarder(client, job.transport)
    filler = b"\x00" * (FRAME_BYTES - HEAD.size)
    armed.set()
    await asyncio.get_running_loop().run_in_executor(None, go.wait, 30)
    cpu0 = time.process_time()
    started = time.monotonic()
    deadline = started + RUN_TIMEOUT
    seq = 0
    try:
        if job.mode == "throughput":
            while seq < job.frames and time.monotonic() < deadline:
                if seq - counter.value >= WINDOW_FRAMES:
                    await asyncio.sleep(0.0005)
                    continue
                # 16 frames per tick, as a relay's loop would read them from several connections
                for _ in range(min(16, job.frames - seq)):
                    forwarder.add(HEAD.pack(seq, time.monotonic_ns()) + filler)
                    seq += 1
                await asyncio.sleep(0)
        else:
            interval = 1.0 / job.rate
            while seq < job.frames and time.monotonic() < deadline:
                due = started + seq * interval
                now = time.monotonic()
                if due > now:
                    await asyncio.sleep(due - now)
                    continue
                while seq < job.frames and started + seq * interval <= now:
                    forwarder.add(HEAD.pack(seq, time.monotonic_ns()) + filler)
                    seq += 1
        await asyncio.wait_for(forwarder.drained(), 30)
        sent_all.set()
        return {
            "sent": seq,
            "messages": forwarder.messages,
            "unheard": forwarder.unheard,
            "cpu_s": time.process_time() - cpu0,
            "seconds": time.monotonic() - started,
        }
    finally:
        sent_all.set()
        await forwarder.close()
        await client.aclose()


# ---------------------------------------------------------------------------------------
# one measurement


def measure(job: Job, redis_pids: list[int]) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    ready, armed, go, sent_all = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
    counter = ctx.RawValue("q", 0)
    results = ctx.Queue()
    receiver = ctx.Process(target=receiver_main, args=(job, ready, sent_all, counter, results), daemon=True)
    sender = ctx.Process(target=sender_main, args=(job, armed, go, sent_all, counter, results), daemon=True)
    out: dict[str, Any] = {}
    try:
        receiver.start()
        if not ready.wait(30):
            raise RuntimeError(f"{job.transport}: node B did not subscribe")
        sender.start()
        if not armed.wait(30):
            raise RuntimeError(f"{job.transport}: node A did not connect")
        cpu0 = sum(bench.cpu_seconds(pid) for pid in redis_pids)
        busy0, wall0 = bench.busy_seconds(), time.monotonic()
        go.set()
        deadline = time.monotonic() + RUN_TIMEOUT + 40
        while len(out) < 2 and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                who, res = results.get(timeout=1)
                out[who] = res
                if who == "receiver":  # the timed window ends with the last frame received
                    cpu1 = sum(bench.cpu_seconds(pid) for pid in redis_pids)
                    busy1, wall1 = bench.busy_seconds(), time.monotonic()
        if len(out) < 2:
            raise RuntimeError(f"{job.transport} {job.mode}: no result within the time limit ({sorted(out)})")
    finally:
        for p in (sender, receiver):
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
    rx, tx = out["receiver"], out["sender"]
    window = wall1 - wall0
    res: dict[str, Any] = {
        "transport": job.transport,
        "mode": job.mode,
        "frames": job.frames,
        "received": rx["received"],
        "lost": job.frames - rx["received"],
        "gaps": rx["gaps"],
        "redis_messages": tx["messages"],
        "frames_per_message": rx["received"] / rx["messages"] if rx["messages"] else 0.0,
        "unheard_publishes": tx["unheard"],
        "window_s": window,
        "redis_cpu_pct": 100 * (cpu1 - cpu0) / window,
        "redis_us_per_frame": 1e6 * (cpu1 - cpu0) / max(rx["received"], 1),
        "sender_us_per_frame": 1e6 * tx["cpu_s"] / max(tx["sent"], 1),
        "receiver_us_per_frame": 1e6 * rx["cpu_s"] / max(rx["received"], 1),
        "machine_busy_pct": 100 * (busy1 - busy0) / window,
    }
    # Busy CPU that neither Redis nor the two nodes used: other work on the machine (noise).
    res["others_pct"] = res["machine_busy_pct"] - res["redis_cpu_pct"] - 100 * (tx["cpu_s"] + rx["cpu_s"]) / window
    if job.mode == "throughput":
        res["frames_per_s"] = rx["received"] / rx["seconds"] if rx["seconds"] else 0.0
        res["mb_per_s"] = res["frames_per_s"] * FRAME_BYTES / 1e6
    else:
        lat = sorted(rx["latencies_ns"])
        res["rate"] = job.rate
        if lat:
            res["p50_ms"] = lat[len(lat) // 2] / 1e6
            res["p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1e6
            res["max_ms"] = lat[-1] / 1e6
    return res


def run(sizes: Sizes, transports: tuple[str, ...]) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    single = RedisServer(name="bench-redis")
    cluster: RedisCluster | None = None
    try:
        redis_version = str(single.info("server")["redis_version"])
        if any(t.startswith("spubsub") for t in transports):
            log("starting a 3-master Redis Cluster")
            cluster = RedisCluster()
        for repeat in range(sizes.repeats):
            for transport in transports:
                if transport.startswith("spubsub"):
                    assert cluster is not None
                    ports, pids = tuple(cluster.ports), [n.pid for n in cluster]
                else:
                    ports, pids = (single.port,), [single.pid]
                frames = sizes.tput_frames_unbatched if transport == "pubsub-unbatched" else sizes.tput_frames
                jobs = [Job(transport, "throughput", frames, 0.0, ports)]
                jobs += [
                    Job(transport, "latency", int(rate * sizes.lat_seconds), float(rate), ports)
                    for rate in sizes.lat_rates
                ]
                for job in jobs:
                    log(
                        f"[{repeat + 1}/{sizes.repeats}] {transport} {job.mode} {job.frames:,} frames"
                        + (f" at {job.rate:,.0f}/s" if job.mode == "latency" else "")
                    )
                    res = measure(job, pids)
                    res["repeat"] = repeat
                    results.append(res)
                    log("    " + summary_line(res))
    finally:
        single.close()
        if cluster is not None:
            cluster.close()
    import redis

    facts = bench.machine_facts()
    facts.update({"redis_server": redis_version, "redis_py": redis.__version__, "hiredis": hiredis_available()})
    return {"machine": facts, "sizes": asdict(sizes), "results": results}


def hiredis_available() -> bool:
    try:
        import hiredis  # noqa: F401
    except ImportError:
        return False
    return True


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def summary_line(r: dict[str, Any]) -> str:
    head = (
        f"{r['frames_per_s']:>9,.0f} frames/s" if r["mode"] == "throughput"
        else f"p50 {r.get('p50_ms', 0):.3f} ms  p99 {r.get('p99_ms', 0):.3f} ms"
    )  # fmt: skip
    return (
        f"{head}  {r['frames_per_message']:.1f} frames/msg  redis {r['redis_cpu_pct']:.0f}% "
        f"({r['redis_us_per_frame']:.1f} µs/frame)  A {r['sender_us_per_frame']:.1f} µs/frame  "
        f"B {r['receiver_us_per_frame']:.1f} µs/frame  lost {r['lost']}  others {r['others_pct']:.0f}%"
    )


def print_table(res: dict[str, Any]) -> None:
    rows: list[tuple[str, ...]] = []
    by: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for r in res["results"]:
        by.setdefault((r["transport"], r["mode"], r.get("rate", 0.0)), []).append(r)

    def med(rs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r.get(key, float("nan")) for r in rs)

    for (transport, mode, rate), rs in by.items():
        what = "max" if mode == "throughput" else f"{rate:,.0f}/s"
        figure = f"{med(rs, 'frames_per_s'):,.0f}" if mode == "throughput" else ""
        rows.append((
            transport, what, figure,
            f"{med(rs, 'p50_ms'):.3f}" if mode == "latency" else "",
            f"{med(rs, 'p99_ms'):.3f}" if mode == "latency" else "",
            f"{med(rs, 'frames_per_message'):.1f}",
            f"{med(rs, 'redis_cpu_pct'):.0f}",
            f"{med(rs, 'redis_us_per_frame'):.2f}",
            f"{med(rs, 'sender_us_per_frame'):.1f}",
            f"{med(rs, 'receiver_us_per_frame'):.1f}",
            str(sum(r["lost"] for r in rs)),
        ))  # fmt: skip
    header = ("transport", "load", "frames/s", "p50 ms", "p99 ms", "frames/msg", "redis CPU %",
              "redis µs/frame", "A µs/frame", "B µs/frame", "lost")  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    m = res["machine"]
    print(
        f"\n(median of {res['sizes']['repeats']} repeats; 1 KiB frames; redis-server {m['redis_server']}, "
        f"redis-py {m['redis_py']}, hiredis {'yes' if m['hiredis'] else 'no'})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Redis transport benchmark for cross-node frames")
    parser.add_argument("--quick", action="store_true", help="smaller counts: a smoke run in < 30 s")
    parser.add_argument("--json", metavar="PATH", type=Path, help="write every figure to PATH as JSON")
    parser.add_argument("--transports", default=",".join(TRANSPORTS), help=f"comma-separated, of {TRANSPORTS}")
    args = parser.parse_args(argv)
    transports = tuple(t for t in args.transports.split(",") if t)
    unknown = set(transports) - set(TRANSPORTS)
    if unknown:
        parser.error(f"unknown transports: {sorted(unknown)}")
    res = run(QUICK if args.quick else FULL, transports)
    print_table(res)
    bench.write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
