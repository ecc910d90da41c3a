"""The relay's sockets (``relay/websocket.py``): websockets' sans-I/O protocol object driven by an
``asyncio.Protocol``. Fragmented messages arrive whole, a peer whose messages the relay does not
take is no longer read (its TCP window closes), and read again once they are taken."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode

from tether.relay.server import RelayServer
from tether.relay.websocket import MAX_QUEUE, MIN_QUEUE, Listener, RelaySocket

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class Transport:
    """What an asyncio transport is to a protocol, recording what is done to it."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.paused = False
        self.pauses = 0
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written += data

    def writelines(self, parts: list[bytes]) -> None:
        for part in parts:
            self.written += part

    def pause_reading(self) -> None:
        assert not self.paused
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        assert self.paused
        self.paused = False

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    abort = close


def client_frame(data: bytes, opcode: Opcode = Opcode.BINARY, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=True)


async def upgraded(handler: Any) -> tuple[RelaySocket, Transport]:
    """A socket over a fake transport, its upgrade answered by a real relay's front."""
    relay = RelayServer()
    listener = Listener(relay.front, handler, logging.getLogger("test"))
    sock = RelaySocket(listener)
    transport = Transport()
    sock.connection_made(transport)  # type: ignore[arg-type]
    sock.data_received(UPGRADE)
    async with asyncio.timeout(5):
        while b"101 Switching Protocols" not in transport.written:
            await asyncio.sleep(0.01)
    return sock, transport


async def test_a_peer_whose_messages_wait_is_not_read_until_they_are_taken() -> None:
    took = asyncio.Event()
    taken: list[bytes | str] = []
    go = asyncio.Event()

    async def handler(sock: RelaySocket) -> None:
        await go.wait()
        for _ in range(MAX_QUEUE + 4 - MIN_QUEUE):
            taken.append(await sock.recv())
        took.set()
        await asyncio.Event().wait()

    sock, transport = await upgraded(handler)
    for n in range(MAX_QUEUE - 1):
        sock.data_received(client_frame(bytes([n])))
    assert not transport.paused, "read while fewer than MAX_QUEUE messages wait"
    for n in range(MAX_QUEUE - 1, MAX_QUEUE + 4):
        sock.data_received(client_frame(bytes([n])))  # the transport would not call this when paused
    assert transport.paused and transport.pauses == 1
    go.set()
    async with asyncio.timeout(5):
        await took.wait()
    assert not transport.paused, f"read again once {MIN_QUEUE} messages wait"
    assert taken == [bytes([n]) for n in range(MAX_QUEUE + 4 - MIN_QUEUE)], "in order, none lost"
    sock.connection_lost(None)


async def test_fragmented_messages_arrive_whole_and_text_as_text() -> None:
    got: list[bytes | str] = []

    async def handler(sock: RelaySocket) -> None:
        for _ in range(3):
            got.append(await sock.recv())

    sock, _ = await upgraded(handler)
    sock.data_received(client_frame(b"ab", fin=False) + client_frame(b"", Opcode.CONT, fin=False))
    sock.data_received(client_frame(b"c", Opcode.PING))  # a control frame between fragments
    sock.data_received(client_frame(b"cd", Opcode.CONT))
    sock.data_received(client_frame(b"whole"))
    sock.data_received(client_frame("é".encode(), Opcode.TEXT, fin=False) + client_frame(b"!", Opcode.CONT))
    async with asyncio.timeout(5):
        while len(got) < 3:
            await asyncio.sleep(0.01)
    assert got == [b"abcd", b"whole", "é!"]
    sock.connection_lost(None)


async def test_a_relay_closing_says_going_away_to_open_connections() -> None:
    relay = RelayServer()
    port = await relay.start()
    async with connect(f"ws://127.0.0.1:{port}/ws", compression=None) as client:
        await relay.close()
        async with asyncio.timeout(5):
            await client.wait_closed()
        assert client.close_code == 1001
