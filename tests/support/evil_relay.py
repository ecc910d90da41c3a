"""A man-in-the-middle relay for security tests: it forwards every frame between one client and
the real relay, and tampers with channel DATA on the way (ARCHITECTURE §2: the relay is not
trusted with content — this is the relay doing its worst).

For each channel, DATA frames 1..N pass untouched (N = ``--after``, default 2: the Noise
handshake); the next one is tampered with once, according to ``--mode``:

- ``flip``: one bit of its payload is flipped;
- ``replay``: it is sent twice;
- ``reorder``: it is held back and sent after the following DATA frame of that channel;
- ``drop``: it is never sent;
- ``pass``: nothing happens (a control run).

Only the client→relay direction is tampered with unless ``--direction down|both`` says so.

Run as a process::

    python -m tests.support.evil_relay --listen 127.0.0.1:0 --upstream ws://127.0.0.1:PORT/ws \
        --mode flip [--after 2] [--direction up]

It prints ``PORT <n>`` on stdout once it listens; clients dial ``ws://127.0.0.1:<n>/ws``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Literal

from websockets.asyncio.client import connect
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

Mode = Literal["flip", "replay", "reorder", "drop", "pass"]
Direction = Literal["up", "down", "both"]
MODES: tuple[Mode, ...] = ("flip", "replay", "reorder", "drop", "pass")
DATA = 0x30  # tether.protocol.frames.FrameType.DATA: type | channel u32 | payload

log = logging.getLogger("tether.tests.evil_relay")


class EvilRelay:
    def __init__(self, upstream: str, mode: Mode, *, after: int = 2, direction: Direction = "up") -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.upstream = upstream
        self.mode = mode
        self.after = after
        self.direction = direction
        self.tampered = 0  # how many times the mode was applied, for tests
        self._server: Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await serve(self._handle, host, port, compression=None, max_size=None)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, client: ServerConnection) -> None:
        try:
            upstream = await connect(self.upstream, compression=None, max_size=None, ping_interval=None)
        except (OSError, ConnectionClosed) as err:
            log.warning("cannot reach upstream %s: %s", self.upstream, err)
            return
        async with upstream:
            pumps = [
                asyncio.create_task(self._pump(client, upstream, self.direction in ("up", "both"))),
                asyncio.create_task(self._pump(upstream, client, self.direction in ("down", "both"))),
            ]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        await client.close()

    async def _pump(self, src: Connection, dst: Connection, tamper: bool) -> None:
        counts: dict[int, int] = {}
        held: dict[int, bytes] = {}
        with contextlib.suppress(ConnectionClosed):
            async for message in src:
                is_data = isinstance(message, bytes) and len(message) >= 5 and message[0] == DATA
                if not (tamper and is_data):
                    for frame in held.values():  # never hold a frame past a control frame
                        await dst.send(frame)
                    held.clear()
                    await dst.send(message)
                    continue
                channel = int.from_bytes(message[1:5], "big")
                if channel in held:
                    await dst.send(message)
                    await dst.send(held.pop(channel))
                    continue
                counts[channel] = counts.get(channel, 0) + 1
                if counts[channel] != self.after + 1 or self.mode == "pass":
                    await dst.send(message)
                    continue
                self.tampered += 1
                log.info("%s DATA #%d on channel %d", self.mode, counts[channel], channel)
                if self.mode == "flip":
                    await dst.send(flip_bit(message))
                elif self.mode == "replay":
                    await dst.send(message)
                    await dst.send(message)
                elif self.mode == "reorder":
                    held[channel] = message
                # drop: send nothing


def flip_bit(frame: bytes) -> bytes:
    """The DATA frame with bit 0 of its middle payload byte flipped (the header is kept)."""
    if len(frame) <= 5:
        return frame
    i = 5 + (len(frame) - 5) // 2
    return frame[:i] + bytes([frame[i] ^ 1]) + frame[i + 1 :]


async def _main(args: argparse.Namespace) -> None:
    host, _, port = args.listen.rpartition(":")
    evil = EvilRelay(args.upstream, args.mode, after=args.after, direction=args.direction)
    bound = await evil.start(host or "127.0.0.1", int(port))
    print(f"PORT {bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await evil.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.evil_relay", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on (port 0: any)")
    parser.add_argument("--upstream", required=True, help="the real relay's WebSocket URL, ending in /ws")
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--after", type=int, default=2, help="DATA frames per channel left untouched first")
    parser.add_argument("--direction", choices=("up", "down", "both"), default="up")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="evil_relay: %(message)s")
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
