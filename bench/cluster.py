"""Cluster benchmark (issue [10]): relay nodes sharing a Redis, measured in one run.

    .venv/bin/python bench/cluster.py                  # full run: 13 minutes on 2 quiet cores, 25+ shared
    .venv/bin/python bench/cluster.py --quick          # smoke run, about 2 minutes, small counts
    .venv/bin/python bench/cluster.py --parts 4        # the burst of host connections (not by default)
    .venv/bin/python bench/cluster.py --json out.json  # also every figure (every repeat) as JSON
    .venv/bin/python bench/cluster.py --parts 1,3      # only some parts
    .venv/bin/python bench/cluster.py --parts 3 --failover-client lean,relaylink   # part 3 with both kinds of hosts
    .venv/bin/python bench/cluster.py --parts 3 --failover-loop uvloop,asyncio     # its clients on both loops
    .venv/bin/python bench/cluster.py --idle-conns 60000

Every relay is a ``python -m tether relay`` process (``--exempt-loopback``: all the load dials
from loopback; a cluster node with ``--cluster redis://… --node-id … --advertise-url …`` and a
home of its own), Redis is one ``redis-server`` (tests/support/redis_server.py, persistence off),
and the load runs in worker processes (bench/relay.py's ``Workers``, spawn). All traffic is on
127.0.0.1; every loop is bounded in count and time; every process is stopped at the end.

1. **Forwarding at 1 KiB**, bench/relay.py's own load (``measure_throughput``,
   ``measure_latency``; a raw ``RelayLink`` device, which does not follow REDIRECT): a single
   relay (no Redis), the same node of a 2-node cluster (host and device on node 1), and across
   nodes (host on node 1, device on node 2: every frame goes through Redis). The bare websockets
   forwarder's throughput is measured in the same rounds, for scale. Repeated in interleaved
   rounds; ratios of medians.
2. **Idle connections over several nodes**: N authenticated connections (hosts on half the nodes,
   devices on the others; one client process per node, each node and client below 20,000 file
   descriptors). RSS per connection from each node's VmRSS before and after, Redis memory per host
   from ``INFO memory`` before and after, and what the idle cluster costs in CPU (keepalives and
   presence refreshes) over a few refresh periods.
3. **A node dies**: 4 nodes; node 1 holds N hosts (each with an echo loop and an allowlist of the
   probing devices); node 1 is SIGKILLed; the hosts reconnect as ``tether host`` does (its
   jittered backoff) to node 2 or 3 (the load balancer, simulated); probing devices on node 4
   watch the presence keys of the hosts that are back (the host processes tell them which) and,
   for every host whose key names a live node, open a channel, send one message and wait for the
   host's echo. Reported: time from the kill to every host's
   reconnection, to its presence key on a live node, and to its echo (all of them reachable).
   The hosts reconnect with no bound per client process, all at once after their backoff's first
   wait, as real hosts would (``--failover-inflight N`` bounds each client process to N attempts).
   The simulated hosts are lean by default (``--failover-client lean``: per connection an
   ``asyncio.Protocol`` driving websockets' sans-I/O client, see bench/lean.py), so that their own
   CPU does not decide the result on a small machine; ``relaylink`` gives each host a
   ``RelayLink`` as ``tether host`` has (about three times the client CPU per reconnection).
   The simulated hosts and devices run on uvloop when it is installed (the ``bench`` extra:
   ``pip install -e '.[test,bench]'``; ``--failover-loop``), which takes a fifth of their CPU off;
   the relay nodes run on asyncio, as ``tether relay`` does.
4. (``--parts 4``, not by default) **A burst of host connections during a cross-node transfer**:
   bench/relay.py's throughput load across nodes while 1,500 hosts connect to the sending node at
   once: does every frame arrive? (It shows what a burst does to the node's Redis client.)

``--py-spy EXE`` profiles the node that takes the hosts during the first recovery of part 3 (py-spy
is not a dependency of the project: install it apart, e.g. in its own venv).

See docs/benchmarks.md ("Cluster") for the method, the machine and the results.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import relay as bench  # noqa: E402  (bench/relay.py: servers, load, measurements)

from tests.support.redis_server import REDIS_SERVER, RedisServer, free_port  # noqa: E402

KIB = 1024
HOST_KEY = "tether:host:"
FD_LIMIT_PER_PROCESS = 20_000

TARGETS = {
    "same_node_vs_single": 0.95,  # cluster mode, host and device on one node ÷ single relay, msg/s
    "cross_vs_same_node": 0.5,  # host and device on two nodes ÷ same node, msg/s
    "rss_per_idle_conn_kib": 20.0,
    "failover_10k_s": 10.0,  # a node with 10,000 hosts killed → every host reachable again
}


@dataclass(frozen=True)
class Sizes:
    tput_msgs: int  # timed 1 KiB messages per throughput measurement
    rounds: int  # part 1: interleaved rounds
    lat: bench.Sizes  # part 1: latency (bench/relay.py's sizes: pings, channels, rate, seconds)
    idle_conns: int  # part 2
    idle_nodes: int
    idle_repeats: int
    idle_cpu_seconds: float  # part 2: the idle cluster's CPU over this window
    idle_pings_conns: int  # part 2: a smaller run whose clients send their own keepalive pings
    failover_hosts: int  # part 3
    failover_host_procs: int
    failover_probe_links: int  # device links probing (≤ 600 OPENs a minute each)
    failover_repeats: int
    failover_inflight: int = 0  # reconnection attempts at once per host-client process (0: no bound)


FULL = Sizes(
    tput_msgs=100_000, rounds=3, lat=bench.FULL,
    idle_conns=100_000, idle_nodes=6, idle_repeats=1, idle_cpu_seconds=21.0, idle_pings_conns=12_000,
    failover_hosts=10_000, failover_host_procs=2, failover_probe_links=25, failover_repeats=3,
)
QUICK = Sizes(
    tput_msgs=10_000, rounds=1, lat=bench.QUICK,
    idle_conns=3_000, idle_nodes=2, idle_repeats=1, idle_cpu_seconds=6.0, idle_pings_conns=1_000,
    failover_hosts=1_000, failover_host_procs=2, failover_probe_links=4, failover_repeats=1,
)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _spread(values: list[float]) -> dict[str, float]:
    """median, min, max of ``values``."""
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def mem_available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


TCP_COUNTERS = ("ListenOverflows", "ListenDrops", "TCPSynRetrans", "TCPReqQFullDoCookies")


def tcp_counters() -> dict[str, int]:
    """The kernel's listen-queue and SYN counters (/proc/net/netstat, machine-wide)."""
    lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines() if line.startswith("TcpExt:")]
    values = dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))
    return {k: values.get(k, 0) for k in TCP_COUNTERS}


def tcp_delta(before: dict[str, int]) -> dict[str, int]:
    after = tcp_counters()
    return {k: after[k] - before[k] for k in before}


def redis_versions() -> str:
    import redis

    out = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True, timeout=10).stdout.split()
    server = next((w.removeprefix("v=") for w in out if w.startswith("v=")), "?")
    try:
        import hiredis  # noqa: F401

        parser = "hiredis"
    except ImportError:
        parser = "no hiredis"
    return f"redis-server {server}, redis-py {redis.__version__} ({parser})"


# ---------------------------------------------------------------------------------------
# a cluster: one Redis, relay nodes


class Cluster:
    """A ``redis-server`` and ``tether relay --cluster`` nodes ``node-1`` … on it."""

    def __init__(self, nodes: int, node_args: tuple[str, ...] = ()) -> None:
        self.redis = RedisServer(name="bench-redis")
        self.node_args = list(node_args)
        self.nodes: list[bench.Server] = []
        self.ids: list[str] = []
        self.homes: list[Path] = []
        try:
            for _ in range(nodes):
                self.add()
        except BaseException:
            self.close()
            raise

    def add(self) -> bench.Server:
        node_id = f"node-{len(self.nodes) + 1}"
        home = Path(tempfile.mkdtemp(prefix="bcn", dir="/tmp"))
        self.homes.append(home)
        for attempt in range(5):
            port = free_port()
            try:
                node = bench.Server(
                    "tether", listen=f"127.0.0.1:{port}", home=home,
                    args=["--cluster", self.redis.url, "--node-id", node_id,
                          "--advertise-url", f"http://127.0.0.1:{port}", *self.node_args],
                )
                break
            except RuntimeError:
                if attempt == 4:
                    raise
        self.nodes.append(node)
        self.ids.append(node_id)
        return node

    def redis_info(self, section: str) -> dict[str, Any]:
        return self.redis.info(section)

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        self.redis.close()
        for home in self.homes:
            shutil.rmtree(home, ignore_errors=True)


LOG_MARKS = ("connected from", "disconnected", "refused", "trouble", "keepalive", "Traceback", "WARNING", "ERROR")


def log_summary(text: str) -> dict[str, Any]:
    """How many lines of a relay's log carry each of LOG_MARKS, and its first warnings."""
    lines = text.splitlines()
    counts = {mark: sum(1 for line in lines if mark in line) for mark in LOG_MARKS}
    firsts = [line[:240] for line in lines if "WARNING" in line or "ERROR" in line or "trouble" in line][:5]
    return {"counts": counts, "first_warnings": firsts}


# What a sampled stack of a relay node is doing: the first of these tether functions on the
# stack from the leaf up, else the first library (websockets, redis-py) on it, else "asyncio
# and the rest" (the event loop, socket calls).
KINDS: tuple[tuple[str, str], ...] = (
    ("Presence.", "presence in Redis (register, refresh, lookups)"),
    ("ClusterNode._register", "presence in Redis (register, refresh, lookups)"),
    ("ClusterNode._refresh_forever", "presence in Redis (register, refresh, lookups)"),
    ("ClusterNode._place", "presence in Redis (register, refresh, lookups)"),
    ("Bus.", "the bus (records between nodes)"),
    ("ClusterNode._deliver", "the bus (records between nodes)"),
    ("SharedAddresses", "shared address limits"),
    ("verify_signature", "authentication (Ed25519 verify, ids)"),
    ("derive_id", "authentication (Ed25519 verify, ids)"),
    ("RelayServer._admit", "authentication (Ed25519 verify, ids)"),
    ("Router.", "router and channels"),
    ("RelayServer._read_loop", "router and channels"),
    ("Connection._write", "writer"),
)
LIBRARIES = (("(websockets/", "websockets (handshake, frames, keepalive)"), ("(redis/", "redis-py elsewhere"))


class PySpy:
    """``py-spy record`` of one process (raw stacks), started and stopped around a window."""

    def __init__(self, exe: str, pid: int, seconds: float) -> None:
        self.out = Path(tempfile.mkstemp(prefix="bench-pyspy-", suffix=".txt")[1])
        self.popen = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--rate", "250", "--duration", str(int(seconds)), "--format", "raw",
             "--nonblocking", "-o", str(self.out)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def finish(self) -> dict[str, Any]:
        bench.stop_group(self.popen, signal.SIGINT, 30)  # py-spy writes what it has on SIGINT
        kinds: dict[str, int] = {}
        total = 0
        with contextlib.suppress(OSError):
            for line in self.out.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if not count.isdigit():
                    continue
                frames = stack.split(";")[::-1]  # leaf first
                if frames and "EpollSelector.select" in frames[0]:
                    continue  # waiting for the next event (py-spy counts some of it as running)
                kind = next((name for f in frames for key, name in KINDS if key in f), None) or next(
                    (name for f in frames for key, name in LIBRARIES if key in f), "asyncio and the rest")
                kinds[kind] = kinds.get(kind, 0) + int(count)
                total += int(count)
        with contextlib.suppress(OSError):
            self.out.unlink()
        return {"samples": total, "share": {k: v / total for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])}
                if total else {}}


def metrics(server: bench.Server) -> dict[str, float]:
    """A relay's /metrics (loopback only), as name → value."""
    url = server.url.replace("ws://", "http://").removesuffix("/ws") + "/metrics"
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("tether_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


# ---------------------------------------------------------------------------------------
# part 1: forwarding at 1 KiB, single relay vs the same node of a cluster vs across nodes


CONFIGS = ("single", "same_node", "cross_node")


def part_forwarding(sizes: Sizes) -> dict[str, Any]:
    single_home = Path(tempfile.mkdtemp(prefix="bcs", dir="/tmp"))
    single = bare = cluster = None
    tput: list[dict[str, Any]] = []
    lat: list[dict[str, Any]] = []
    try:
        single = bench.Server("tether", home=single_home)
        bare = bench.Server("bare")
        cluster = Cluster(2)
        n1, n2 = cluster.nodes
        redis_pid = cluster.redis.pid
        # (server for the host, server for the device, other processes whose CPU is read)
        where: dict[str, tuple[bench.Server, bench.Server | None, list[int]]] = {
            "bare": (bare, None, []),
            "single": (single, None, []),
            "same_node": (n1, None, [n2.pid, redis_pid]),
            "cross_node": (n1, n2, [redis_pid]),
        }
        systems = ["bare", *CONFIGS]
        for rnd in range(sizes.rounds):
            order = systems[rnd % len(systems):] + systems[:rnd % len(systems)]
            for name in order:
                server, device_server, also = where[name]
                r = bench.measure_throughput("bare" if name == "bare" else "tether", server, KIB, sizes.tput_msgs,
                                             device_server=device_server, also_pids=also)
                r.update(config=name, round=rnd)
                tput.append(r)
                each = " + ".join(f"{c:.1f}" for c in r["relay_cpu_us_per_msg_each"])
                _say(f"[1] round {rnd + 1} throughput {name:10} {r['msgs_per_s']:>9,.0f} msg/s  "
                     f"relay CPU µs/msg {each}  sender {r['sender_cpu_pct']:.0f}% receiver "
                     f"{r['receiver_cpu_pct'] or 0:.0f}% others {r['other_cpu_pct']:.0f}%")
            for channels in (1, sizes.lat.lat_channels):
                for name in order:
                    if name == "bare":
                        continue
                    server, device_server, _ = where[name]
                    r = bench.measure_latency("tether", server, sizes.lat, channels, device_server=device_server)
                    r.update(config=name, round=rnd)
                    lat.append(r)
                    _say(f"[1] round {rnd + 1} latency {name:10} {channels:>5} ch: p50 {r['p50_ms']:.3f} ms "
                         f"p99 {r['p99_ms']:.3f} ms ({r['samples']} samples, setup {r['setup_s']:.1f} s)")
        bus = {f"node-{i + 1}": {k: v for k, v in metrics(n).items() if "cluster" in k}
               for i, n in enumerate(cluster.nodes)}
    finally:
        for server in (single, bare):
            if server is not None:
                server.stop()
        if cluster is not None:
            cluster.close()
        shutil.rmtree(single_home, ignore_errors=True)
    return {"throughput": tput, "latency": lat, "bus_metrics_at_end": bus, "summary": _summarize_forwarding(tput, lat)}


def _summarize_forwarding(tput: list[dict[str, Any]], lat: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("bare", *CONFIGS):
        rows = [r for r in tput if r["config"] == name]
        each = [r["relay_cpu_us_per_msg_each"] for r in rows]
        out[name] = {
            "msgs_per_s": _spread([r["msgs_per_s"] for r in rows]),
            "relay_cpu_us_per_msg": _spread([r["relay_cpu_us_per_msg"] for r in rows]),
            "relay_cpu_us_per_msg_each_median": [_med([e[i] for e in each]) for i in range(len(each[0]))]
            if each else [],
            "sender_cpu_us_per_msg": _spread([r["sender_cpu_pct"] * r["seconds"] * 1e4 / r["messages"] for r in rows]),
            "receiver_cpu_us_per_msg": _spread(
                [(r["receiver_cpu_pct"] or 0) * r["seconds"] * 1e4 / r["messages"] for r in rows]),
            "others_cpu_pct": _spread([r["other_cpu_pct"] for r in rows]),
        }
        for r_lat in sorted({r["channels"] for r in lat}):
            rows_l = [r for r in lat if r["config"] == name and r["channels"] == r_lat]
            if rows_l:
                out[name][f"p50_ms_{r_lat}ch"] = _spread([r["p50_ms"] for r in rows_l])
                out[name][f"p99_ms_{r_lat}ch"] = _spread([r["p99_ms"] for r in rows_l])

    def ratio(a: str, b: str) -> dict[str, Any]:
        by_round = {}
        for r in tput:
            by_round.setdefault(r["round"], {})[r["config"]] = r["msgs_per_s"]
        per_round = [v[a] / v[b] for v in by_round.values() if a in v and b in v]
        return {"of_medians": out[a]["msgs_per_s"]["median"] / out[b]["msgs_per_s"]["median"],
                "per_round": _spread(per_round)}

    out["ratio_same_vs_single"] = ratio("same_node", "single")
    out["ratio_cross_vs_same"] = ratio("cross_node", "same_node")
    out["ratio_single_vs_bare"] = ratio("single", "bare")
    out["pass"] = {
        f"same-node ≥ {TARGETS['same_node_vs_single']} × single": out["ratio_same_vs_single"]["of_medians"]
        >= TARGETS["same_node_vs_single"],
        f"cross-node ≥ {TARGETS['cross_vs_same_node']} × same-node": out["ratio_cross_vs_same"]["of_medians"]
        >= TARGETS["cross_vs_same_node"],
    }
    return out


# ---------------------------------------------------------------------------------------
# part 2: idle connections over several nodes


IDLE_INFLIGHT = 25  # handshakes at once per client process
IDLE_RAMP_TIMEOUT = 900.0  # s: then the clients hold what they have


def presence_by_node(redis_server: RedisServer) -> dict[str, int]:
    """How many ``tether:host:*`` keys name each node."""
    counts: dict[str, int] = {}
    with redis_server.client() as r:
        keys = list(r.scan_iter(match=HOST_KEY + "*", count=5000))
        for start in range(0, len(keys), 5000):
            for value in r.mget(keys[start:start + 5000]):
                if value is not None:
                    node = value.split(b" ", 1)[0].decode()
                    counts[node] = counts.get(node, 0) + 1
    return dict(sorted(counts.items()))


def part_idle(sizes: Sizes, conns: int, nodes: int, client_pings: bool) -> dict[str, Any]:
    """``conns`` idle authenticated connections, hosts on the first half of ``nodes`` nodes and
    devices on the others; one client process per node. ``client_pings``: the clients send their
    own keepalive pings (RelayLink's default, every 20 s) besides answering the relay's."""
    per_node = conns // nodes
    if per_node + 200 > FD_LIMIT_PER_PROCESS * 0.9:
        raise ValueError(f"{per_node} connections per node: over the file descriptors a node may hold here")
    host_nodes = max(1, nodes // 2)
    # The idle sweeper closes a device that holds no channel and watches no host after 5
    # minutes; a ramp of 100,000 connections on 2 shared cores can take that long.
    cluster = Cluster(nodes, node_args=("--idle-timeout", "0"))
    workers = bench.Workers()
    stop = workers.ctx.Event()
    progress = workers.ctx.Queue()
    tag = f"idle{random.getrandbits(48):x}"
    roles = ["host" if i < host_nodes else "device" for i in range(nodes)]
    try:
        # warm each node's code paths with a few connections that come and go
        warm = bench.Workers()
        warm_stop = warm.ctx.Event()
        warm_progress = warm.ctx.Queue()
        for i, node in enumerate(cluster.nodes):
            warm.start("idle", system="tether", url=node.url, count=20, offset=10**9 + 100 * i, tag=tag,
                       stop=warm_stop, progress=warm_progress, timeout=60.0, role=roles[i])
        for _ in cluster.nodes:
            warm_progress.get(timeout=60)
        warm_stop.set()
        warm.results(nodes, timeout=60)
        warm.close()
        time.sleep(4)  # the warm-up hosts' presence keys are deleted; a refresh passes
        redis_before = cluster.redis_info("memory")
        keys_before = int(cluster.redis.execute("DBSIZE"))  # type: ignore[arg-type]
        rss_before = [bench.rss_kib(n.pid) for n in cluster.nodes]
        tcp0 = tcp_counters()
        ramp_cpu0 = [bench.cpu_seconds(n.pid) for n in cluster.nodes] + [bench.cpu_seconds(cluster.redis.pid)]
        t0 = time.monotonic()
        for i, node in enumerate(cluster.nodes):
            workers.start("idle", system="tether", url=node.url, count=per_node, offset=i * per_node, tag=tag,
                          stop=stop, progress=progress, timeout=IDLE_RAMP_TIMEOUT + 600, role=roles[i],
                          ping_interval=20.0 if client_pings else None, inflight=IDLE_INFLIGHT,
                          ramp_timeout=IDLE_RAMP_TIMEOUT)
        held: list[int] = []
        last_note = t0
        while len(held) < nodes:
            if time.monotonic() - t0 > IDLE_RAMP_TIMEOUT + 60:
                raise TimeoutError(f"the idle clients did not report within {IDLE_RAMP_TIMEOUT + 60:g} s ({held})")
            try:
                held.append(progress.get(timeout=1)[1])
                _say(f"[2] {sum(held):,} connections held after {time.monotonic() - t0:.0f} s")
            except queue.Empty:
                if time.monotonic() - last_note >= 20:
                    last_note = time.monotonic()
                    counts = []
                    for node in cluster.nodes:
                        try:
                            counts.append(int(metrics(node).get("tether_relay_sockets", -1)))
                        except OSError:
                            counts.append(-1)
                    _say(f"[2] after {last_note - t0:.0f} s: sockets per node {counts}")
        ramp = time.monotonic() - t0
        tcp_ramp = tcp_delta(tcp0)
        keys_at_ramp = int(cluster.redis.execute("DBSIZE"))  # type: ignore[arg-type]
        ramp_cpu = [b - a for a, b in zip(ramp_cpu0, [bench.cpu_seconds(n.pid) for n in cluster.nodes]
                                          + [bench.cpu_seconds(cluster.redis.pid)], strict=True)]
        time.sleep(4)  # a presence refresh (every 3 s) has passed
        rss_after = [bench.rss_kib(n.pid) for n in cluster.nodes]
        client_rss = [bench.rss_kib(p.pid) for p in workers.procs]
        redis_after = cluster.redis_info("memory")
        keys_after = int(cluster.redis.execute("DBSIZE"))  # type: ignore[arg-type]
        census = [metrics(n) for n in cluster.nodes]
        presence = presence_by_node(cluster.redis)
        # what the idle cluster costs: keepalive pings both ways, presence refreshes
        pids = [n.pid for n in cluster.nodes] + [cluster.redis.pid]
        cpu0, busy0, w0 = [bench.cpu_seconds(p) for p in pids], bench.busy_seconds(), time.monotonic()
        time.sleep(sizes.idle_cpu_seconds)
        cpu1, busy1, w1 = [bench.cpu_seconds(p) for p in pids], bench.busy_seconds(), time.monotonic()
        logs = [log_summary(n.log) for n in cluster.nodes]
        stop.set()
        details = [r for _, r in workers.results(nodes, timeout=120)]
    finally:
        stop.set()
        workers.close()
        cluster.close()
    wall = w1 - w0
    # what each relay itself counts (authenticated connections) when its RSS was read
    live = [int(sum(v for k, v in c.items() if k.startswith("tether_relay_connections"))) for c in census]
    hosts = sum(h for h, role in zip(live, roles, strict=True) if role == "host")
    devices = sum(live) - hosts
    per_conn = [(a - b) / h if h else float("nan") for a, b, h in zip(rss_after, rss_before, live, strict=True)]
    host_per_conn = [x for x, role in zip(per_conn, roles, strict=True) if role == "host"]
    device_per_conn = [x for x, role in zip(per_conn, roles, strict=True) if role == "device"]
    redis_delta = int(redis_after["used_memory"]) - int(redis_before["used_memory"])
    node_cpu = [(b - a) / wall for a, b in zip(cpu0[:-1], cpu1[:-1], strict=True)]
    return {
        "nodes": nodes,
        "client_pings": client_pings,
        "roles": roles,
        "connections": sum(live),
        "connected_by_clients": sum(held),
        "hosts": hosts,
        "devices": devices,
        "held_per_client": held,  # in the order the clients finished
        "live_per_node": live,
        "ramp_s": ramp,
        "conns_per_s": sum(held) / ramp,
        "tcp_during_ramp": tcp_ramp,
        "redis_keys_right_after_ramp": keys_at_ramp,
        # node CPU per new authenticated connection while the nodes ramped (hosts: with their
        # presence write), and Redis's
        "ramp_node_cpu_ms_per_conn": [1e3 * c / h if h else float("nan")
                                      for c, h in zip(ramp_cpu[:-1], live, strict=True)],
        "ramp_redis_cpu_us_per_host": 1e6 * ramp_cpu[-1] / max(1, hosts),
        "errors": [e for d in details for e in d["errors"]],
        "census": [{k: v for k, v in c.items() if "connections" in k or "sockets" in k or "hosts_held" in k}
                   for c in census],
        # the relays' own count of authenticated connections when RSS was read (the clients'
        # "held" counts what they connected, not what is still up)
        "census_connections": sum(live),
        # presence keys naming each node, against the hosts it holds (census)
        "presence_keys_by_node": presence,
        "logs": logs,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "kib_per_conn_each_node": per_conn,
        "kib_per_conn": (sum(rss_after) - sum(rss_before)) / max(1, sum(live)),
        "kib_per_host_conn": _spread(host_per_conn),
        "kib_per_device_conn": _spread(device_per_conn),
        "client_rss_kib": client_rss,
        "client_kib_per_conn": sum(client_rss) / max(1, sum(held)),
        "redis_used_memory_before": int(redis_before["used_memory"]),
        "redis_used_memory_after": int(redis_after["used_memory"]),
        "redis_rss_before": int(redis_before["used_memory_rss"]),
        "redis_rss_after": int(redis_after["used_memory_rss"]),
        "redis_keys_before": keys_before,
        "redis_keys_after": keys_after,
        "redis_bytes_per_host": redis_delta / hosts if hosts else float("nan"),
        "idle_window_s": wall,
        "idle_node_cpu_pct": [100 * c for c in node_cpu],
        # keepalives (and, on host nodes, presence refreshes): CPU µs per second per connection
        "idle_node_cpu_us_per_s_per_conn": [1e6 * c / h if h else float("nan")
                                            for c, h in zip(node_cpu, live, strict=True)],
        "idle_redis_cpu_pct": 100 * (cpu1[-1] - cpu0[-1]) / wall,
        "idle_machine_busy_pct": 100 * (busy1 - busy0) / wall,
        "idle_host_node_cpu_pct_median": 100 * _med([c for c, r in zip(node_cpu, roles, strict=True) if r == "host"]),
        "idle_device_node_cpu_pct_median": 100 * _med(
            [c for c, r in zip(node_cpu, roles, strict=True) if r == "device"]),
    }


# ---------------------------------------------------------------------------------------
# part 3: a node holding N hosts dies


class BackNotes:
    """Which hosts are back, told to the probe processes (host ``h`` to ``queues[h % len]``, as
    part 3 shares them out) in batches every ``EVERY`` s: a probe then watches only the presence
    keys of hosts that reconnected, not of every host still away (that polling took a quarter of
    a core from the cores the nodes share)."""

    EVERY = 0.02

    def __init__(self, queues: list[Any]) -> None:
        self.queues = queues
        self.pending: list[list[int]] = [[] for _ in queues]
        self.timer: asyncio.TimerHandle | None = None

    def add(self, h: int) -> None:
        self.pending[h % len(self.queues)].append(h)
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.EVERY, self.flush)

    def flush(self) -> None:
        self.timer = None
        for out, hosts in zip(self.queues, self.pending, strict=True):
            if hosts:
                out.put(hosts)
        self.pending = [[] for _ in self.queues]


async def w_failover_hosts(first_url: str, after_urls: list[str], count: int, offset: int, tag: str,
                           probe_keys: list[bytes], inflight: int, progress: Any, stop: Any, timeout: float,
                           back_queues: list[Any], client: str = "lean") -> dict[str, Any]:
    """``count`` hosts on ``first_url``, each publishing ``probe_keys`` as its allowlist and
    echoing the first message of every channel. When a host's connection ends, it reconnects as
    ``tether host`` does (tether.backoff.Backoff after a connection that worked: a first wait of
    50–100 ms, then doubling up to 5 s, full jitter) to ``after_urls[(offset + i) % len]``.

    ``back_queues``: the probe processes' queues; each reconnected host is told to one
    (:class:`BackNotes`).

    ``inflight``: at most this many connection attempts at once in this process (0: no bound).
    Real hosts are separate machines; thousands of handshakes at once in one process starved of
    CPU time out (10 s) and retry without end, which measures this process, not the relay.

    ``client``: "lean" (default), a ``LeanHost`` per connection (websockets' sans-I/O client
    driven by an ``asyncio.Protocol``; bench/lean.py's ``LeanFleet``); "relaylink", a ``RelayLink`` per
    host (websockets' asyncio client, as ``tether host``), which costs this process about as much
    CPU per reconnection as the relay."""
    from tether.relay.collector import collect_less_often

    collect_less_often()  # thousands of long-lived connections here too, as on a relay node
    if client == "lean":
        return await _w_failover_lean(first_url, after_urls, count, offset, tag, probe_keys, inflight, progress,
                                      stop, timeout, back_queues)
    assert client == "relaylink", client
    from tether.backoff import Backoff
    from tether.crypto.keys import Identity
    from tether.errors import TetherError
    from tether.relay.link import RelayLink

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    base = tag.encode()
    idents = [Identity.from_seed(bench._seed(base, f"fh{offset + i}")) for i in range(count)]
    notes = BackNotes(back_queues)
    lost = [0.0] * count
    back = [0.0] * count
    attempts = [0] * count
    errors: list[str] = []
    tasks: set[asyncio.Task[Any]] = set()

    def spawn(coro: Any) -> None:
        task = loop.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def serve(channel: Any) -> None:
        with contextlib.suppress(Exception):
            await channel.send(await channel.recv())

    async def accept_loop(link: Any) -> None:
        with contextlib.suppress(Exception):
            while True:
                spawn(serve(await link.accept()))

    async def connect(i: int, url: str) -> Any:
        link = await RelayLink.connect(url, idents[i], "host")
        await link.publish_allowlist(probe_keys)
        spawn(accept_loop(link))
        return link

    async def first(i: int) -> Any:
        try:
            return await connect(i, first_url)
        except (TetherError, OSError) as exc:
            if len(errors) < 5:
                errors.append(f"first connect: {type(exc).__name__}: {exc}")
            return None

    gate = asyncio.Semaphore(inflight) if inflight else contextlib.nullcontext()
    links = await bench._bounded_gather(count, first)
    progress.put(("ready", sum(1 for x in links if x is not None)))
    remaining = sum(1 for x in links if x is not None)

    async def life(i: int, link: Any) -> None:
        nonlocal remaining
        await link.wait_closed()
        lost[i] = time.monotonic()
        backoff = Backoff()
        url = after_urls[(offset + i) % len(after_urls)]
        while loop.time() < deadline:
            await asyncio.sleep(backoff.next_delay())
            attempts[i] += 1
            try:
                async with gate:
                    await connect(i, url)
            except (TetherError, OSError) as exc:
                if len(errors) < 5:
                    errors.append(f"reconnect: {type(exc).__name__}: {exc}")
                continue
            back[i] = time.monotonic()
            notes.add(offset + i)
            remaining -= 1
            if remaining == 0:
                progress.put(("back", offset))
            return

    for i, link in enumerate(links):
        if link is not None:
            spawn(life(i, link))
    while not stop.is_set() and loop.time() < deadline:  # noqa: ASYNC110 (a multiprocessing Event)
        await asyncio.sleep(0.05)
    return {"lost": lost, "back": back, "attempts": attempts, "errors": errors, "connected": len(links),
            "offset": offset, "client": "relaylink"}


async def _w_failover_lean(first_url: str, after_urls: list[str], count: int, offset: int, tag: str,
                           probe_keys: list[bytes], inflight: int, progress: Any, stop: Any, timeout: float,
                           back_queues: list[Any]) -> dict[str, Any]:
    from lean import LeanFleet, relay_uri

    from tether.crypto.keys import Identity

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    idents = [Identity.from_seed(bench._seed(tag.encode(), f"fh{offset + i}")) for i in range(count)]
    fleet = LeanFleet(idents, offset, probe_keys, after_urls, inflight, deadline, BackNotes(back_queues))
    fleet.progress = progress
    uri = relay_uri(first_url)
    connected = sum(await bench._bounded_gather(count, lambda i: fleet.first(i, uri)))
    fleet.remaining = connected
    progress.put(("ready", connected))
    while not stop.is_set() and loop.time() < deadline:  # noqa: ASYNC110 (a multiprocessing Event)
        await asyncio.sleep(0.05)
    return {"lost": fleet.lost_at, "back": fleet.back_at, "attempts": fleet.attempts, "errors": fleet.errors,
            "connected": connected, "offset": offset, "client": "lean", "lost_again": fleet.lost_again,
            "echoes": fleet.echoes}


class RelayLinkProber:
    """The probing devices of one process as a ``RelayLink`` each (``--failover-probe relaylink``,
    as part 3 probed before bench/lean.py's :class:`LeanProber`, whose interface this has)."""

    PER_LINK = 16
    RETRY = 0.2

    def __init__(self, url: str, identities: list[Any], host_ids: dict[int, str], deadline: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.url = url
        self.identities = identities
        self.host_ids = host_ids
        self.deadline = deadline
        self.links: list[Any] = []
        self.gates: list[asyncio.Semaphore] = []
        self.ok_at: dict[int, float] = {}
        self.all_ok = asyncio.Event()
        self.opens = self.failures = 0
        self.codes: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self.tasks: set[asyncio.Task[Any]] = set()

    async def connect(self) -> None:
        from tether.relay.link import RelayLink

        self.links = [await RelayLink.connect(self.url, ident, "device", open_timeout=30) for ident in self.identities]
        self.gates = [asyncio.Semaphore(self.PER_LINK) for _ in self.links]
        self.link_of = {h: k % len(self.links) for k, h in enumerate(self.host_ids)}

    async def probe_once(self, h: int) -> bool:
        from tether.errors import TetherError
        from tether.protocol.frames import CloseCode
        from tether.relay.link import ChannelClosed

        self.opens += 1
        try:
            channel = await self.links[self.link_of[h]].open(self.host_ids[h], timeout=10)
            try:
                async with asyncio.timeout(10):
                    await channel.send(b"probe")
                    if await channel.recv() != b"probe":
                        raise RuntimeError("a wrong echo")
            finally:
                await channel.close()
            return True
        except (ChannelClosed, TetherError, TimeoutError) as exc:
            self.failures += 1
            code = getattr(exc, "close_code", None)
            self.codes[CloseCode(code).name if code in CloseCode._value2member_map_ else type(exc).__name__] += 1
            return False

    def probe(self, h: int) -> None:
        async def until_ok() -> None:
            while self.loop.time() < self.deadline:
                async with self.gates[self.link_of[h]]:
                    if await self.probe_once(h):
                        self.ok_at[h] = time.monotonic()
                        if len(self.ok_at) == len(self.host_ids):
                            self.all_ok.set()
                        return
                await asyncio.sleep(self.RETRY)

        task = self.loop.create_task(until_ok())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


async def w_failover_probe(url: str, redis_port: int, dead_node: str, tag: str, host_offsets: list[int],
                           link_seeds: list[bytes], progress: Any, go: Any, stop: Any, timeout: float,
                           back: Any, client: str = "lean") -> dict[str, Any]:
    """Device links on ``url`` (one per seed), the hosts ``host_offsets`` shared out between them.
    Before the kill: one channel per link to its first host (the set-up works). After ``go``:
    every 50 ms the presence keys of the hosts that are back (the host processes say which, on
    ``back``: :class:`BackNotes`) and not yet seen on a live node (one MGET); each host whose key
    names a node other than ``dead_node`` gets a channel, one message and its echo (tried again
    after a refusal). ``client``: "lean" (bench/lean.py's :class:`LeanProber`, default) or
    "relaylink" (:class:`RelayLinkProber`)."""
    import redis.asyncio as aredis
    from lean import LeanProber

    from tether.crypto.keys import Identity
    from tether.relay.collector import collect_less_often

    collect_less_often()

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    base = tag.encode()
    host_ids = {h: Identity.from_seed(bench._seed(base, f"fh{h}")).id for h in host_offsets}
    kind = LeanProber if client == "lean" else RelayLinkProber
    prober = kind(url, [Identity.from_seed(s) for s in link_seeds], host_ids, deadline)
    await prober.connect()
    firsts = host_offsets[:len(link_seeds)]  # each link's first host
    before = [await prober.probe_once(h) for h in firsts]
    progress.put(("probe_ready", sum(before)))
    while not go.is_set() and loop.time() < deadline:  # noqa: ASYNC110 (a multiprocessing Event)
        await asyncio.sleep(0.005)
    r = aredis.Redis(host="127.0.0.1", port=redis_port, socket_timeout=10)
    dead = (dead_node + " ").encode()
    live_at: dict[int, float] = {}

    async def watch() -> None:
        waiting: list[int] = []  # back, and not yet seen on a live node
        left = len(host_offsets)
        while left and loop.time() < deadline:
            with contextlib.suppress(queue.Empty):
                while True:
                    waiting += back.get_nowait()
            values: list[Any] = []
            for start in range(0, len(waiting), 2000):
                values += await r.mget([HOST_KEY + host_ids[h] for h in waiting[start:start + 2000]])
            now = time.monotonic()
            still = []
            for h, v in zip(waiting, values, strict=True):
                if v is not None and not v.startswith(dead):
                    live_at[h] = now
                    prober.probe(h)
                    left -= 1
                else:
                    still.append(h)
            waiting = still
            await asyncio.sleep(0.05)

    watcher = loop.create_task(watch())
    try:
        async with asyncio.timeout(max(1.0, deadline - loop.time())):
            await prober.all_ok.wait()
    except TimeoutError:
        pass
    finally:
        watcher.cancel()
        await r.aclose()
    progress.put(("probe_done", len(prober.ok_at)))
    while not stop.is_set() and loop.time() < deadline + 30:  # noqa: ASYNC110 (a multiprocessing Event)
        await asyncio.sleep(0.05)
    return {"before_ok": sum(before), "before_tried": len(before), "live_at": live_at, "ok_at": prober.ok_at,
            "opens": prober.opens, "failures": prober.failures, "codes": dict(prober.codes),
            "hosts": len(host_offsets), "errors": prober.errors}


def part_failover(sizes: Sizes, py_spy: str | None = None, client: str = "lean",
                  probe: str = "lean", loop: str = "asyncio") -> dict[str, Any]:
    """Part 3 once; ``client``: the simulated hosts, "lean" or "relaylink" (see w_failover_hosts);
    ``probe``: the probing devices, the same choice (see w_failover_probe); ``loop``: the event
    loop of both, "asyncio" or "uvloop"."""
    cluster = Cluster(4)
    dead, b, c, d = cluster.nodes
    workers = bench.Workers()
    stop = workers.ctx.Event()
    go = workers.ctx.Event()
    progress = workers.ctx.Queue()
    tag = f"fo{random.getrandbits(48):x}"
    probe_seeds = [bench._seed(tag.encode(), f"probe{j}") for j in range(sizes.failover_probe_links)]
    from tether.crypto.keys import Identity

    probe_keys = [Identity.from_seed(s).identity_public for s in probe_seeds]
    procs = sizes.failover_host_procs
    per_proc = sizes.failover_hosts // procs
    probe_procs = 2 if sizes.failover_probe_links >= 2 else 1
    back_queues = [workers.ctx.Queue() for _ in range(probe_procs)]  # hosts back, per probe process
    try:
        t0 = time.monotonic()
        for k in range(procs):
            workers.start("failover_hosts", func=w_failover_hosts, fast_exit=True, loop=loop, first_url=dead.url,
                          after_urls=[b.url, c.url], count=per_proc, offset=k * per_proc, tag=tag,
                          probe_keys=probe_keys, inflight=sizes.failover_inflight, progress=progress, stop=stop,
                          timeout=600.0, back_queues=back_queues, client=client)
        connected = 0
        for _ in range(procs):
            kind, n = progress.get(timeout=600)
            assert kind == "ready", kind
            connected += n
        ramp = time.monotonic() - t0
        # presence keys written right after the ramp (a write that failed is put back by the
        # node's next refresh, within 3 s)
        keys_at_ramp = int(cluster.redis.execute("DBSIZE"))  # type: ignore[arg-type]
        _say(f"[3] {connected:,} hosts on node-1 after {ramp:.0f} s")
        offsets = list(range(procs * per_proc))
        for k in range(probe_procs):
            workers.start("failover_probe", func=w_failover_probe, fast_exit=True, loop=loop, url=d.url,
                          redis_port=cluster.redis.port, dead_node=cluster.ids[0], tag=tag,
                          host_offsets=offsets[k::probe_procs], link_seeds=probe_seeds[k::probe_procs],
                          progress=progress, go=go, stop=stop, timeout=180.0, back=back_queues[k],
                          client=probe)
        before_ok = 0
        for _ in range(probe_procs):
            kind, n = progress.get(timeout=120)
            assert kind == "probe_ready", kind
            before_ok += n
        time.sleep(4)  # steady state: a presence refresh has passed
        held_before = metrics(dead).get("tether_relay_cluster_hosts_held", 0.0)
        rss_dead = bench.rss_kib(dead.pid)
        dead_log = dead.log
        redis_keys = int(cluster.redis.execute("DBSIZE"))  # type: ignore[arg-type]
        live_pids = [b.pid, c.pid, d.pid, cluster.redis.pid] + [p.pid for p in workers.procs]
        cpu0, busy0 = [bench.cpu_seconds(p) for p in live_pids], bench.busy_seconds()
        tcp0 = tcp_counters()
        spy = PySpy(py_spy, b.pid, 120) if py_spy else None
        t_kill = time.monotonic()
        os.killpg(dead.popen.pid, signal.SIGKILL)
        go.set()
        dead.popen.wait(10)
        _say(f"[3] node-1 killed (SIGKILL) with {int(held_before):,} hosts")
        done = 0
        t_done = t_kill
        deadline = time.monotonic() + 200
        while done < probe_procs and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                kind, _n = progress.get(timeout=1)
                if kind == "probe_done":
                    done += 1
                    t_done = time.monotonic()
        cpu1, busy1 = [bench.cpu_seconds(p) for p in live_pids], bench.busy_seconds()
        tcp_recovery = tcp_delta(tcp0)
        profile = spy.finish() if spy is not None else None
        window = t_done - t_kill
        figures_after = {k: metrics(n) for k, n in ((2, b), (3, c), (4, d))}
        took = [figures_after[2], figures_after[3]]  # the nodes that took the hosts
        held_after = [f.get("tether_relay_cluster_hosts_held", 0.0) for f in took]
        # the nodes' own count of each host's wait for its presence entry (a histogram's lines)
        waits = "tether_relay_cluster_presence_write_seconds"
        written_after = {name.removeprefix(waits): sum(f.get(name, 0.0) for f in took)
                         for name in took[0] if name.startswith(waits)}
        bus_after = {f"node-{k}": {name: v for name, v in f.items() if "_total{direction" in name}
                     for k, f in figures_after.items()}
        logs = {cluster.ids[i]: n.log for i, n in enumerate(cluster.nodes) if i in (1, 2)}
        stop.set()
        results = workers.results(procs + probe_procs, timeout=120)
    finally:
        stop.set()
        go.set()
        workers.close()
        cluster.close()
    host_res = [r for name, r in results if name == "failover_hosts"]
    probe_res = [r for name, r in results if name == "failover_probe"]
    lost = [t - t_kill for r in host_res for t in r["lost"] if t]
    back = [t - t_kill for r in host_res for t in r["back"] if t]
    attempts = [a for r in host_res for a in r["attempts"] if a]
    live = [t - t_kill for r in probe_res for t in r["live_at"].values()]
    ok = [t - t_kill for r in probe_res for t in r["ok_at"].values()]
    n = procs * per_proc
    # a host whose presence key named a live node well after it reconnected: its node's write
    # of the key failed, and the key was put back by a refresh after the dead node's expired
    back_at = {r["offset"] + i: t for r in host_res for i, t in enumerate(r["back"]) if t}
    live_at = {h: t for r in probe_res for h, t in r["live_at"].items()}
    lag = [live_at[h] - back_at[h] for h in back_at if h in live_at]
    gone_lines = {node: text.count("is gone: closing the channels through it") for node, text in logs.items()}
    logs[cluster.ids[0]] = dead_log
    trouble = {node: [line for line in text.splitlines() if "trouble" in line or "Traceback" in line
                      or "error" in line.lower()][:10] for node, text in logs.items()}
    names = ["node-2", "node-3", "node-4", "redis", *[f"host-clients-{k}" for k in range(procs)],
             *[f"probe-{k}" for k in range(probe_procs)]]
    cpu_s = {name: b1 - a for name, a, b1 in zip(names, cpu0, cpu1, strict=True)}
    return {
        "client": client,
        "probe_client": probe,
        "client_loop": loop,
        "hosts": n,
        "connected": connected,
        "ramp_s": ramp,
        "held_by_dead_node": held_before,
        "dead_node_rss_kib": rss_dead,
        "redis_keys_before_kill": redis_keys,
        "redis_keys_right_after_ramp": keys_at_ramp,
        "inflight_per_client_process": sizes.failover_inflight,
        "probe_links": sizes.failover_probe_links,
        "probes_ok_before_kill": before_ok,
        "lost_detected": len(lost),
        "lost_s": _spread(lost),
        "reconnected": len(back),
        "reconnect_s": {"p50": _pct(back, 50), "p99": _pct(back, 99), "max": max(back) if back else float("nan")},
        "attempts": {"max": max(attempts) if attempts else 0,
                     "more_than_one": sum(1 for a in attempts if a > 1)},
        "presence_lag_s": {"p50": _pct(lag, 50), "p99": _pct(lag, 99), "max": max(lag) if lag else float("nan")},
        "presence_late_hosts": sum(1 for x in lag if x > 1.0),
        "presence_live": len(live),
        "presence_s": {"p50": _pct(live, 50), "p99": _pct(live, 99), "max": max(live) if live else float("nan")},
        "reachable": len(ok),
        "reachable_s": {"p50": _pct(ok, 50), "p99": _pct(ok, 99), "max": max(ok) if ok else float("nan")},
        "all_reachable_s": max(ok) if len(ok) == n else float("inf"),
        "probe_opens": sum(r["opens"] for r in probe_res),
        "probe_failures": sum(r["failures"] for r in probe_res),
        "probe_failure_codes": {k: sum(r["codes"].get(k, 0) for r in probe_res)
                                for k in {k for r in probe_res for k in r["codes"]}},
        "hosts_held_after": held_after,
        "presence_write_s_nodes": written_after,  # '_bucket{le="1"}', '_sum', '_count': nodes 2 and 3
        "bus_after": bus_after,  # records and Redis messages between the nodes, set-up included
        "recovery_window_s": window,
        "recovery_cpu_pct": {name: 100 * c / window if window else float("nan") for name, c in cpu_s.items()},
        # CPU per reconnected host: the two nodes that took them, and the host clients
        "node_cpu_ms_per_reconnect": 1e3 * (cpu_s["node-2"] + cpu_s["node-3"]) / max(1, len(back)),
        # were each surviving node on a core of its own, and the clients elsewhere: the busiest
        # node's CPU time over the recovery (a lower bound for the recovery, for this load)
        "node_bound_s": max(cpu_s["node-2"], cpu_s["node-3"]),
        "client_cpu_ms_per_reconnect": 1e3 * sum(v for k, v in cpu_s.items() if k.startswith("host-clients"))
        / max(1, len(back)),
        "tcp_during_recovery": tcp_recovery,
        "recovery_machine_busy_pct": 100 * (busy1 - busy0) / window if window else float("nan"),
        "node_lost_log_lines": gone_lines,
        "node_2_profile": profile,
        "node_log_trouble": trouble,
        "errors": [e for r in host_res for e in r["errors"]],
        "probe_errors": [e for r in probe_res for e in r.get("errors", [])],
        # lean clients only: connections lost again after the reconnection, echoes sent
        "hosts_lost_again": sum(r.get("lost_again", 0) for r in host_res),
        "host_echoes": sum(r.get("echoes", 0) for r in host_res),
    }


# ---------------------------------------------------------------------------------------
# part 4: a burst of host connections on a node while a channel crosses nodes through it


async def w_connect_burst(url: str, count: int, tag: str, delay: float, hold: float) -> dict[str, Any]:
    """After ``delay`` s, ``count`` hosts connect to ``url`` all at once (as after a failover);
    held for ``hold`` s."""
    from tether.crypto.keys import Identity
    from tether.relay.link import RelayLink

    idents = [Identity.from_seed(bench._seed(tag.encode(), f"b{i}")) for i in range(count)]
    await asyncio.sleep(delay)
    t0 = time.monotonic()
    links = await asyncio.gather(*(RelayLink.connect(url, i, "host", open_timeout=60) for i in idents),
                                 return_exceptions=True)
    seconds = time.monotonic() - t0
    await asyncio.sleep(hold)
    return {"connected": sum(1 for x in links if not isinstance(x, BaseException)), "seconds": seconds}


async def w_listen_only(host_url: str, device_url: str, tag: str, seconds: float) -> dict[str, Any]:
    """A cross-node channel whose device only listens (host on ``host_url``, device on
    ``device_url``): after ``seconds``, which of its two ends were told it closed."""
    from tether.crypto.keys import Identity
    from tether.relay.link import RelayLink

    base = tag.encode()
    host_ident, dev_ident = Identity.from_seed(bench._seed(base, "h")), Identity.from_seed(bench._seed(base, "d"))
    async with asyncio.timeout(seconds + 60):
        host = await RelayLink.connect(host_url, host_ident, "host", open_timeout=30)
        await host.publish_allowlist([dev_ident.identity_public])
        device = await RelayLink.connect(device_url, dev_ident, "device", open_timeout=30)
        await asyncio.sleep(0.5)
        channel = await device.open(host_ident.id)
        served = await host.accept()
        await served.send(b"hello")
        first = await channel.recv()
        await asyncio.sleep(seconds)
        out = {"first_message": first == b"hello",
               "host_end_closed": served.closed, "host_close_code": served.close_code,
               "device_end_closed": channel.closed, "device_close_code": channel.close_code}
        await host.close()
        await device.close()
    return out


def part_burst(sizes: Sizes, hosts: int, rounds: int) -> list[dict[str, Any]]:
    """A cross-node transfer (bench/relay.py's throughput load, host on node 1, device on node 2)
    while ``hosts`` hosts connect to node 1 at once: does every frame arrive? And a channel whose
    device only listens: is the device told when the channel closes?"""
    out = []
    for rnd in range(rounds):
        cluster = Cluster(2)
        n1, n2 = cluster.nodes
        workers = bench.Workers()
        try:
            workers.start("listen_only", func=w_listen_only, host_url=n1.url, device_url=n2.url,
                          tag=f"lo{random.getrandbits(40):x}", seconds=20.0)
            workers.start("burst", func=w_connect_burst, fast_exit=True, url=n1.url, count=hosts,
                          tag=f"bu{random.getrandbits(40):x}", delay=1.5, hold=3.0)
            row: dict[str, Any] = {"round": rnd, "burst_hosts": hosts}
            try:
                r = bench.measure_throughput("tether", n1, KIB, sizes.tput_msgs * 3, device_server=n2,
                                             also_pids=[cluster.redis.pid])
                row.update(transfer="complete", msgs_per_s=r["msgs_per_s"])
            except (RuntimeError, TimeoutError) as exc:
                row.update(transfer="failed", error=str(exc)[:300])
            done = dict(workers.results(2, timeout=120))
            row["burst"], row["listen_only"] = done["burst"], done["listen_only"]
            row["node_1_log"] = [line[:200] for line in n1.log.splitlines()
                                 if "trouble" in line or "is gone" in line or "healed" in line][:8]
            row["node_1_bus"] = {k: v for k, v in metrics(n1).items() if "cluster" in k}
        finally:
            workers.close()
            cluster.close()
        lo = row["listen_only"]
        _say(f"[4] round {rnd + 1}: listening channel closed: host end {lo['host_end_closed']}, device end "
             f"{lo['device_end_closed']}")
        _say(f"[4] round {rnd + 1}: transfer {row['transfer']} {row.get('error', '')[:120]}; "
             f"{row['burst']['connected']:,} hosts connected in {row['burst']['seconds']:.1f} s; "
             f"node-1 said: {' | '.join(x.split(' ', 3)[-1][:90] for x in row['node_1_log'][:3])}")
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------
# the run


def _failover_line(r: dict[str, Any]) -> None:
    _say(f"[3] {r.get('client', 'relaylink')} on {r.get('client_loop', 'asyncio')}: "
         f"reconnected {r['reconnected']:,}/{r['hosts']:,}: "
         f"p50 {r['reconnect_s']['p50']:.2f} s, max "
         f"{r['reconnect_s']['max']:.2f} s; presence max {r['presence_s']['max']:.2f} s "
         f"(late {r['presence_late_hosts']}); "
         f"reachable {r['reachable']:,}, max {r['reachable_s']['max']:.2f} s (probe failures {r['probe_failures']}); "
         f"node CPU {r['node_cpu_ms_per_reconnect']:.2f} ms/reconnect, client CPU "
         f"{r['client_cpu_ms_per_reconnect']:.2f} ms/reconnect, node-bound {r['node_bound_s']:.1f} s, machine "
         f"{r['recovery_machine_busy_pct']:.0f}% busy")


def _idle_line(r: dict[str, Any]) -> None:
    _say(f"[2] {r['connections']:,} held ({r['hosts']:,} hosts): {r['kib_per_conn']:.1f} KiB/conn "
         f"(hosts {r['kib_per_host_conn']['median']:.1f}, devices {r['kib_per_device_conn']['median']:.1f}), "
         f"Redis {r['redis_bytes_per_host']:.0f} B/host, ramp {r['conns_per_s']:.0f}/s, "
         f"idle CPU nodes {', '.join(f'{x:.0f}%' for x in r['idle_node_cpu_pct'])}, "
         f"Redis {r['idle_redis_cpu_pct']:.1f}%; errors {r['errors'][:2]}")


def run(sizes: Sizes, parts: set[int], idle_conns: int, idle_nodes: int, mode: str,
        save: Callable[[dict[str, Any]], None] = lambda _: None, py_spy: str | None = None,
        burst_hosts: int = 1500, failover_clients: tuple[str, ...] = ("lean",),
        failover_probe: str = "lean", failover_loops: tuple[str, ...] = ("asyncio",)) -> dict[str, Any]:
    """All the parts asked for; ``save`` gets the results so far after each part."""
    results: dict[str, Any] = {
        "machine": bench.machine_facts(),
        "mode": mode,
        "sizes": {k: (asdict(v) if k == "lat" else v) for k, v in sizes.__dict__.items()},
        "targets": TARGETS,
        "redis": redis_versions(),
        "load_average_at_start": loadavg(),
    }
    t_start = time.monotonic()
    if 1 in parts:
        _say(f"[1] forwarding at 1 KiB: single relay, same node of a cluster, across nodes ({sizes.rounds} rounds)")
        results["forwarding"] = part_forwarding(sizes)
        save(results)
    if 2 in parts:
        runs = []
        for rep in range(sizes.idle_repeats):
            conns = idle_conns
            # what one connection costs here, both ends, with room to spare: about 18 KiB at the
            # relay and 55 KiB in a client process (measured), times 1.4
            need = conns * 100
            if need > mem_available_kib():
                conns = int(mem_available_kib() / 100 / idle_nodes) * idle_nodes
                _say(f"[2] not enough memory for {idle_conns:,} connections: {conns:,}")
            _say(f"[2] idle: {conns:,} connections over {idle_nodes} nodes (repeat {rep + 1})")
            r = part_idle(sizes, conns, idle_nodes, client_pings=False)
            r["asked"] = idle_conns
            runs.append(r)
            _idle_line(r)
        _say(f"[2] idle with the clients' own keepalive pings: {sizes.idle_pings_conns:,} connections over 2 nodes")
        r = part_idle(sizes, sizes.idle_pings_conns, 2, client_pings=True)
        r["asked"] = sizes.idle_pings_conns
        runs.append(r)
        _idle_line(r)
        results["idle"] = runs
        save(results)

    if 3 in parts:
        runs = []
        # every kind of client and loop in each repeat, in turn: this machine's speed drifts
        kinds = [(client, loop) for client in failover_clients for loop in failover_loops]
        for rep in range(sizes.failover_repeats):
            for k, (client, loop) in enumerate(kinds):
                _say(f"[3] failover: {sizes.failover_hosts:,} hosts ({client} clients on {loop}) on a node that is "
                     f"killed (repeat {rep + 1})")
                r = part_failover(sizes, py_spy if rep == 0 and k == 0 else None, client,
                                  failover_probe, loop)
                runs.append(r)
                _failover_line(r)
                results["failover"] = runs
                save(results)
        results["failover"] = runs
    if 4 in parts:
        _say(f"[4] a cross-node transfer while {burst_hosts:,} hosts connect to the sending node at once")
        results["burst"] = part_burst(sizes, burst_hosts, max(1, min(3, sizes.rounds)))
    results["wall_s"] = time.monotonic() - t_start
    return results


def print_table(res: dict[str, Any]) -> None:
    m = res["machine"]
    print(f"\nmachine: {m['cpu_model']}, {m['cores']} cores, {m['memory']}, Linux {m['kernel']}; "
          f"python {m['python']}, websockets {m['websockets']}, {res['redis']}; tether {m['tether_commit']}; "
          f"mode {res['mode']}, wall {res['wall_s']:.0f} s, load average at start {res['load_average_at_start']}\n")
    if "forwarding" in res:
        s = res["forwarding"]["summary"]
        print("1 KiB forwarding      msg/s median [min–max]        relay CPU µs/msg   p50 / p99 ms, 1 ch"
              "           p50 / p99 ms, many ch")
        for name in ("bare", *CONFIGS):
            row = s[name]
            t = row["msgs_per_s"]
            lat1 = lat_n = ""
            keys = sorted((k for k in row if k.startswith("p50_ms_")), key=lambda k: int(k[7:-2]))
            if keys:
                one, many = keys[0].removeprefix("p50_ms_"), keys[-1].removeprefix("p50_ms_")
                lat1 = f"{row['p50_ms_' + one]['median']:.3f} / {row['p99_ms_' + one]['median']:.3f}"
                lat_n = f"{row['p50_ms_' + many]['median']:.3f} / {row['p99_ms_' + many]['median']:.3f} ({many})"
            each = " + ".join(f"{x:.1f}" for x in row["relay_cpu_us_per_msg_each_median"])
            spread = f"[{t['min']:,.0f}–{t['max']:,.0f}]"
            print(f"  {name:12} {t['median']:>9,.0f} {spread:>17}  {each:>22}   {lat1:>16}   {lat_n}")
        for key in ("ratio_same_vs_single", "ratio_cross_vs_same", "ratio_single_vs_bare"):
            r = s[key]
            print(f"  {key}: {r['of_medians']:.2f} (per round {r['per_round']['min']:.2f}–{r['per_round']['max']:.2f})")
        for name, ok in s["pass"].items():
            print(f"{'PASS' if ok else 'FAIL'}  {name}")
    for r in res.get("idle", []):
        print(f"\nidle: {r['connections']:,} connections on {r['nodes']} nodes ({r['hosts']:,} hosts, "
              f"{r['devices']:,} devices), ramp {r['ramp_s']:.0f} s")
        print(f"  RSS KiB per connection: all {r['kib_per_conn']:.1f}; host nodes "
              f"{r['kib_per_host_conn']['median']:.1f}; device nodes {r['kib_per_device_conn']['median']:.1f}; "
              f"each node {', '.join(f'{x:.1f}' for x in r['kib_per_conn_each_node'])}")
        print(f"  Redis: {r['redis_bytes_per_host']:.0f} B per host (used_memory {r['redis_used_memory_before']:,} → "
              f"{r['redis_used_memory_after']:,}; keys {r['redis_keys_before']} → {r['redis_keys_after']})")
        print(f"  idle CPU ({'clients ping too' if r['client_pings'] else 'the relays ping, the clients do not'}): "
              f"nodes {', '.join(f'{x:.1f}%' for x in r['idle_node_cpu_pct'])} = µs/s per connection "
              f"{', '.join(f'{x:.1f}' for x in r['idle_node_cpu_us_per_s_per_conn'])}; Redis "
              f"{r['idle_redis_cpu_pct']:.1f}%; client KiB per connection {r['client_kib_per_conn']:.1f}")
        ok = r["kib_per_conn"] <= TARGETS["rss_per_idle_conn_kib"]
        print(f"{'PASS' if ok else 'FAIL'}  RSS per idle connection ≤ {TARGETS['rss_per_idle_conn_kib']:.0f} KiB")
    for r in res.get("failover", []):
        bound = r["inflight_per_client_process"]
        bounded = f"at most {bound} reconnects at once per client process" if bound else "no bound on reconnects"
        print(f"\nfailover ({bounded}), {r['client']} clients: "
              f"{r['hosts']:,} hosts, "
              f"node-1 killed; reconnected {r['reconnected']:,} "
              f"(p50 {r['reconnect_s']['p50']:.2f} s, p99 {r['reconnect_s']['p99']:.2f} s, max "
              f"{r['reconnect_s']['max']:.2f} s); presence on a live node max {r['presence_s']['max']:.2f} s; "
              f"reachable {r['reachable']:,} (p50 {r['reachable_s']['p50']:.2f} s, "
              f"max {r['reachable_s']['max']:.2f} s)")
        print(f"  presence key on a live node > 1 s after the host reconnected: {r['presence_late_hosts']:,} hosts; "
              f"node CPU {r['node_cpu_ms_per_reconnect']:.2f} ms and client CPU {r['client_cpu_ms_per_reconnect']:.2f} "
              f"ms per reconnect; busiest surviving node's CPU time {r['node_bound_s']:.1f} s; machine "
              f"{r['recovery_machine_busy_pct']:.0f}% busy; probe failures {r['probe_failures']}")
        waits = r.get("presence_write_s_nodes")
        if waits and waits.get("_count"):
            counts = {le: waits.get('_bucket{le="' + le + '"}', 0) for le in ("0.25", "1", "2.5")}
            within = ", ".join(f"≤ {le} s {n:,.0f}" for le, n in counts.items())
            print(f"  the nodes' own count of a host's wait for its presence entry: {within} of "
                  f"{waits['_count']:,.0f} (mean {waits['_sum'] / waits['_count']:.2f} s)")
        ok = r["all_reachable_s"] * 10_000 / r["hosts"] <= TARGETS["failover_10k_s"] if r["hosts"] < 10_000 else \
            r["all_reachable_s"] <= TARGETS["failover_10k_s"]
        if r.get("node_2_profile"):
            shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in r["node_2_profile"]["share"].items())
            print(f"  node-2's CPU during the recovery (py-spy, {r['node_2_profile']['samples']} samples): {shares}")
        print(f"{'PASS' if ok else 'FAIL'}  every host reachable within {TARGETS['failover_10k_s']:.0f} s"
              + (" (scaled to 10,000)" if r["hosts"] < 10_000 else ""))


def print_burst(res: dict[str, Any]) -> None:
    for row in res.get("burst", []):
        print(f"\nburst of {row['burst_hosts']:,} host connections during a cross-node transfer: {row['transfer']} "
              f"{row.get('error', '')[:100]}")
        lo = row["listen_only"]
        print(f"  a channel whose device only listens, 20 s later: host's end closed {lo['host_end_closed']} "
              f"(code {lo['host_close_code']}), device's end closed {lo['device_end_closed']}")
        for line in row["node_1_log"][:4]:
            print(f"  node-1: {line.split(' ', 2)[-1][:150]}")


def _default_loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="tether cluster benchmark (see docs/benchmarks.md)")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--json", metavar="PATH", type=Path, help="write every figure to PATH as JSON")
    parser.add_argument("--parts", default="1,2,3", help="which parts to run (default 1,2,3)")
    parser.add_argument("--idle-conns", type=int, help="part 2: idle connections (default 100,000; quick 3,000)")
    parser.add_argument("--idle-nodes", type=int, help="part 2: relay nodes (default 6; quick 2)")
    parser.add_argument("--failover-hosts", type=int, help="part 3: hosts on the node that dies (default 10,000)")
    parser.add_argument("--failover-inflight", type=int,
                        help="part 3: reconnection attempts at once per host-client process (default 0: no bound, "
                        "as real hosts)")
    parser.add_argument("--failover-client", default="lean",
                        help="part 3: the simulated hosts, lean (websockets' sans-I/O client on an asyncio.Protocol, "
                        "cheap) or relaylink (a RelayLink each, as tether host), or both: lean,relaylink "
                        "(default lean)")
    parser.add_argument("--failover-probe", default="lean", choices=("lean", "relaylink"),
                        help="part 3: the probing devices, lean (as the lean hosts) or relaylink (a RelayLink each, "
                        "as part 3 had before; about a tenth of the machine more) (default lean)")
    parser.add_argument("--failover-loop", default=None,
                        help="part 3: the event loop of the simulated hosts and devices, uvloop (the bench extra: "
                        "pip install -e '.[test,bench]') or asyncio, or both: uvloop,asyncio "
                        "(default uvloop when installed)")
    parser.add_argument("--repeats", type=int, help="rounds of part 1 and repeats of parts 2 and 3")
    parser.add_argument("--py-spy", metavar="EXE", help="part 3: profile the node that takes the hosts with this "
                        "py-spy during the first recovery (not installed with the project)")
    parser.add_argument("--burst-hosts", type=int, default=1500, help="part 4: hosts connecting at once (1,500)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    changes: dict[str, Any] = {}
    if args.failover_hosts:
        changes["failover_hosts"] = args.failover_hosts
    if args.failover_inflight is not None:
        changes["failover_inflight"] = args.failover_inflight
    if args.repeats:
        changes.update(rounds=args.repeats, idle_repeats=args.repeats, failover_repeats=args.repeats)
    if changes:
        sizes = Sizes(**{**sizes.__dict__, **changes})
    parts = {int(p) for p in args.parts.split(",") if p.strip()}
    clients = tuple(c.strip() for c in args.failover_client.split(",") if c.strip())
    if not clients or any(c not in ("lean", "relaylink") for c in clients):
        parser.error("--failover-client: lean, relaylink or both (comma-separated)")
    loops = tuple(x.strip() for x in (args.failover_loop or _default_loop()).split(",") if x.strip())
    if not loops or any(x not in ("uvloop", "asyncio") for x in loops):
        parser.error("--failover-loop: uvloop, asyncio or both (comma-separated)")
    if "uvloop" in loops and _default_loop() != "uvloop":
        parser.error("--failover-loop uvloop: uvloop is not installed (pip install -e '.[test,bench]')")

    def save(partial: dict[str, Any]) -> None:
        bench.write_json(args.json, partial, final=False)

    res = run(sizes, parts, args.idle_conns or sizes.idle_conns, args.idle_nodes or sizes.idle_nodes,
              "quick" if args.quick else "full", save, py_spy=args.py_spy, burst_hosts=args.burst_hosts,
              failover_clients=clients, failover_probe=args.failover_probe, failover_loops=loops)
    print_table(res)
    print_burst(res)
    bench.write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
