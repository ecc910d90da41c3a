"""The baseline of bench/relay.py: a bare ``websockets`` forwarder, no auth, no crypto, no framing.

Two clients meet on a pair id: ``ws://HOST:PORT/<pair>/a`` and ``ws://HOST:PORT/<pair>/b``. Once
both are connected, every binary message from one side is sent to the other (both directions;
the benchmark's acknowledgements and echoes go B → A). Compression is off, as in the relay. A
side whose peer has not connected yet just waits (that is the "idle connection" of the RSS
measurement).

    python bench/bare_forwarder.py --listen 127.0.0.1:0     # prints "bare listening on 127.0.0.1:PORT"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


class _Pair:
    __slots__ = ("ready", "sides")

    def __init__(self) -> None:
        self.sides: dict[str, ServerConnection] = {}
        self.ready = asyncio.Event()


_pairs: dict[str, _Pair] = {}


async def _handle(ws: ServerConnection) -> None:
    parts = ws.request.path.strip("/").split("/") if ws.request is not None else []
    if len(parts) != 2 or parts[1] not in ("a", "b"):
        await ws.close(1008, "path must be /<pair>/a or /<pair>/b")
        return
    pair_id, side = parts
    other = "b" if side == "a" else "a"
    pair = _pairs.setdefault(pair_id, _Pair())
    pair.sides[side] = ws
    if other in pair.sides:
        pair.ready.set()
    try:
        await pair.ready.wait()
        peer = pair.sides[other]
        async for message in ws:
            await peer.send(message)
    except ConnectionClosed:
        pass
    finally:
        if pair.sides.get(side) is ws:
            del pair.sides[side]
        if not pair.sides:
            _pairs.pop(pair_id, None)
        peer_ws = pair.sides.get(other)
        if peer_ws is not None:
            await peer_ws.close()


async def _main(listen: str) -> None:
    host, _, port = listen.rpartition(":")
    async with serve(
        _handle, host, int(port), compression=None, max_size=1 << 20, ping_interval=20.0, ping_timeout=20.0
    ) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"bare listening on {host}:{bound}", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args().listen))
