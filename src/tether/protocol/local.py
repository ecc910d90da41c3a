"""Message transport over a stream (the host's local unix socket).

Each message is a 4-byte big-endian length followed by that many bytes of JSON. The socket
is the owner's alone (0600), so no encryption is needed on it.
"""

from __future__ import annotations

import asyncio
import struct

from tether.protocol.messages import MAX_MESSAGE_BYTES
from tether.protocol.transport import TransportClosed

_LEN = struct.Struct(">I")
CLOSE_TIMEOUT = 5.0


class StreamTransport:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()

    async def send(self, data: bytes) -> None:
        async with self._lock:
            if self._writer.is_closing():
                raise TransportClosed("the local connection is closed")
            self._writer.write(_LEN.pack(len(data)) + data)
            try:
                await self._writer.drain()
            except (ConnectionError, RuntimeError) as exc:
                raise TransportClosed("the local connection is closed") from exc

    async def recv(self) -> bytes:
        try:
            (length,) = _LEN.unpack(await self._reader.readexactly(_LEN.size))
            if length > MAX_MESSAGE_BYTES:
                raise TransportClosed(f"refusing a local message of {length} bytes")
            return await self._reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise TransportClosed("the local connection is closed") from exc

    async def close(self) -> None:
        self._writer.close()
        try:
            # A peer that stopped reading would keep unsent bytes, and this wait, forever.
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._writer.wait_closed()
        except TimeoutError:
            self._writer.transport.abort()
        except (ConnectionError, RuntimeError):
            pass
