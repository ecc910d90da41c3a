"""Connection churn against one relay: what the relay's garbage-collector setting
(``tether.relay.collector``, docs/decisions.md) costs in memory when connections come and go.

    .venv/bin/python bench/churn.py                  # 5,000 held + 30,000 churned, 2 repeats (about 4 minutes)
    .venv/bin/python bench/churn.py --quick          # smoke run: 500 held, 3,000 churned, 1 repeat
    .venv/bin/python bench/churn.py --json out.json

The relay collects its oldest generation less often than CPython would, so that a node filling
with long-lived connections does not stop its loop for every one of them again and again. The
price: cyclic garbage that reached the oldest generation waits longer. A device that connects,
authenticates and leaves, over and over, makes exactly that garbage (each closed connection's
websockets objects). This measures it, as a ratio against the same relay with CPython's own
setting, in the same run (each repeat runs both, in turn):

1. a ``tether relay`` process (``--exempt-loopback``: all the load dials from 127.0.0.1), either as
   ``tether relay`` starts it or with ``collect_less_often`` left out (CPython's setting);
2. ``--held`` hosts connect and stay (the long-lived objects a busy relay holds);
3. ``--churn`` devices each connect, authenticate (HELLO, CHALLENGE, AUTH, WELCOME) and close
   cleanly at once, at most 50 at a time; the relay's RSS is read every 1,000 of them.

Reported per setting: the relay's RSS growth during the churn (largest, and at the end), its CPU
per churned connection, and its full collections (``/metrics``). The clients are bench/lean.py's
(websockets' sans-I/O client on an ``asyncio.Protocol``) in this process. All traffic is on
127.0.0.1; every loop is bounded in count and time; the relay is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import relay as bench
from lean import LeanLink, relay_uri
from websockets.uri import WebSocketURI

from tether.crypto.keys import Identity
from tether.protocol.frames import Hello, Role

SETTINGS = ("cpython", "relay")
# `tether relay` as the CLI runs it, with the collector's setting left out
CPYTHON_LAUNCHER = (
    "import sys, tether.relay.collector as c; c.collect_less_often = lambda: None; "
    "from tether.cli.main import main; main()"
)
IN_FLIGHT = 50
STEP = 1000
TIMEOUT = 10.0


class Held(LeanLink):
    """A host that connects and stays."""

    def __init__(self, loop: asyncio.AbstractEventLoop, uri: WebSocketURI, identity: Identity) -> None:
        super().__init__(loop, uri, identity, Role.HOST, Hello(Role.HOST, identity.identity_public).encode())
        self.done: asyncio.Future[str] = loop.create_future()

    def settled(self, ok: bool, why: str) -> None:
        self.done.set_result("" if ok else why)


class Churner(LeanLink):
    """A device that closes as soon as it is admitted; ``done`` once the socket is closed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, uri: WebSocketURI, identity: Identity) -> None:
        super().__init__(loop, uri, identity, Role.DEVICE, Hello(Role.DEVICE, identity.identity_public).encode())
        self.done: asyncio.Future[str] = loop.create_future()
        self.why = ""

    def settled(self, ok: bool, why: str) -> None:
        if ok and self.ws is not None:
            self.ws.send_close()  # the WebSocket closing handshake; data_received flushes it
        else:
            self.why = why or "refused"

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.done.done():
            self.done.set_result(self.why)


def gc_collections(server: bench.Server) -> list[int]:
    """The relay's garbage collections so far, by generation (its /metrics)."""
    url = server.url.replace("ws://", "http://").removesuffix("/ws") + "/metrics"
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    found = dict(re.findall(r'python_gc_collections_total\{generation="(\d)"\} (\d+)', text))
    return [int(found.get(str(g), -1)) for g in range(3)]


async def load(server: bench.Server, held: int, churn: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    uri = relay_uri(server.url)
    deadline = loop.time() + 60 + (held + churn) * 0.01

    dialing: set[asyncio.Task[None]] = set()

    async def one(link: Held | Churner) -> str:
        task = loop.create_task(link.dial())
        dialing.add(task)
        task.add_done_callback(dialing.discard)
        return await asyncio.wait_for(link.done, max(1.0, min(TIMEOUT, deadline - loop.time())))

    hosts = [Held(loop, uri, Identity.from_seed(os.urandom(32))) for _ in range(held)]
    refused = [why for why in await bench._bounded_gather(held, lambda i: one(hosts[i]), IN_FLIGHT) if why]
    if refused:
        raise RuntimeError(f"{len(refused)} held hosts not admitted, e.g. {refused[0]}")
    await asyncio.sleep(2)
    devices = [Identity.from_seed(os.urandom(32)) for _ in range(256)]  # 8 connections each at most
    rss0, cpu0, gc0 = bench.rss_kib(server.pid), bench.cpu_seconds(server.pid), gc_collections(server)
    t0 = time.monotonic()
    rss = [rss0]
    failed: list[str] = []
    for start in range(0, churn, STEP):
        if loop.time() > deadline:
            raise RuntimeError("the churn took too long")

        def churner(i: int, start: int = start) -> Any:
            return one(Churner(loop, uri, devices[(start + i) % len(devices)]))

        whys = await bench._bounded_gather(min(STEP, churn - start), churner, IN_FLIGHT)
        failed += [why for why in whys if why]
        rss.append(bench.rss_kib(server.pid))
    cpu1, gc1, t1 = bench.cpu_seconds(server.pid), gc_collections(server), time.monotonic()
    for link in hosts:
        if link.transport is not None:
            link.transport.abort()
    return {
        "rss_before_kib": rss0, "rss_kib": rss, "growth_max_kib": max(rss) - rss0, "growth_end_kib": rss[-1] - rss0,
        "cpu_us_per_churn": 1e6 * (cpu1 - cpu0) / churn, "wall_s": t1 - t0,
        "collections": [b - a for a, b in zip(gc0, gc1, strict=True)], "failed": len(failed),
        "failed_example": failed[:1],
    }


def run_one(setting: str, held: int, churn: int) -> dict[str, Any]:
    launcher = ("-c", CPYTHON_LAUNCHER) if setting == "cpython" else ("-m", "tether")
    server = bench.Server("tether", launcher=launcher)
    try:
        return {"setting": setting, **asyncio.run(load(server, held, churn))}
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--held", type=int, default=5000, help="hosts that connect and stay (5,000)")
    parser.add_argument("--churn", type=int, default=30000, help="devices that connect, log in and leave (30,000)")
    parser.add_argument("--repeats", type=int, default=2, help="repeats, each with both settings in turn (2)")
    parser.add_argument("--quick", action="store_true", help="500 held, 3,000 churned, 1 repeat")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    if args.quick:
        args.held, args.churn, args.repeats = 500, 3000, 1
    if min(args.held, args.churn, args.repeats) < 1 or args.held > 15000:
        parser.error("--held (at most 15,000: file descriptors), --churn and --repeats must be at least 1")
    results: dict[str, Any] = {"machine": bench.machine_facts(), "held": args.held, "churn": args.churn, "runs": []}
    for rep in range(args.repeats):
        for setting in (SETTINGS if rep % 2 == 0 else SETTINGS[::-1]):
            r = run_one(setting, args.held, args.churn)
            results["runs"].append(r)
            bench._say(f"[{rep + 1}] {setting:8}: RSS {r['rss_before_kib'] / 1024:.0f} MiB before, growth max "
                       f"{r['growth_max_kib'] / 1024:.1f} MiB, at the end {r['growth_end_kib'] / 1024:.1f} MiB; "
                       f"{r['cpu_us_per_churn']:.0f} us CPU per churned connection; collections (gen 0/1/2) "
                       f"{'/'.join(map(str, r['collections']))}; failed {r['failed']} {r['failed_example']}")
            bench.write_json(args.json, results, final=False)
    by = {s: [r for r in results["runs"] if r["setting"] == s] for s in SETTINGS}

    def median(setting: str, key: str) -> float:
        values = sorted(r[key] for r in by[setting])
        return float(values[len(values) // 2])

    summary = {key: {"relay": median("relay", key), "cpython": median("cpython", key),
                     "ratio": median("relay", key) / max(1e-9, median("cpython", key))}
               for key in ("growth_max_kib", "growth_end_kib", "cpu_us_per_churn")}
    results["summary"] = summary
    m = results["machine"]
    print(f"\nmachine: {m['cpu_model']}, {m['cores']} cores, {m['memory']}, Linux {m['kernel']}; python {m['python']}, "
          f"websockets {m['websockets']}; tether {m['tether_commit']}")
    print(f"{args.held:,} held, {args.churn:,} churned; medians of {args.repeats} repeat(s); "
          "relay / CPython's setting:")
    for key, row in summary.items():
        print(f"  {key:18} relay {row['relay']:10.1f}   cpython {row['cpython']:10.1f}   ratio {row['ratio']:.2f}")
    bench.write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
