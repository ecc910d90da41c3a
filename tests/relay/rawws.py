"""A hand-made WebSocket client for attack tests: it can stop half-way through its HTTP request,
announce a frame it never finishes, choose its source address, and never read.

Only what the tests need: client frames are masked with a zero key (valid RFC 6455, and the
payload goes out as is, so streaming 100 MiB costs no copy), server frames are read unmasked.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct

from tether.crypto.keys import Identity
from tether.protocol.frames import Auth, Challenge, Hello, Role, Welcome, auth_message, decode_frame

BINARY = 0x2
CLOSE = 0x8


class Refused(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


def request(port: int, *, path: str = "/ws", headers: dict[str, str] | None = None) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def frame_header(size: int, opcode: int = BINARY, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    if size < 126:
        head = struct.pack("!BB", first, 0x80 | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, size)
    return head + b"\x00\x00\x00\x00"  # the zero mask key


class RawSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, *, source: str = "127.0.0.1") -> RawSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        return cls(reader, writer)

    @classmethod
    async def upgrade(
        cls, port: int, *, source: str = "127.0.0.1", headers: dict[str, str] | None = None, timeout: float = 10
    ) -> RawSocket:
        """Connect and finish the upgrade; Refused(status, body) when the relay answers otherwise."""
        sock = await cls.connect(port, source=source)
        try:
            async with asyncio.timeout(timeout):
                sock.writer.write(request(port, headers=headers))
                head = await sock.reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                if status != 101:
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":", 1)[1])
                    body = await sock.reader.readexactly(length) if length else b""
                    raise Refused(status, body.decode(errors="replace").strip())
        except BaseException:
            sock.abort()
            raise
        return sock

    async def send(self, payload: bytes, opcode: int = BINARY) -> None:
        self.writer.write(frame_header(len(payload), opcode) + payload)
        await self.writer.drain()

    async def recv(self) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload). IncompleteReadError at EOF."""
        first, second = await self.reader.readexactly(2)
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return first & 0x0F, await self.reader.readexactly(size)

    async def recv_frame(self) -> object:
        """The next relay frame (decoded); skips nothing, so pings would surprise the caller."""
        opcode, payload = await self.recv()
        if opcode != BINARY:
            return (opcode, payload)
        return decode_frame(payload)

    async def authenticate(self, identity: Identity, role: Role = Role.DEVICE) -> Welcome:
        await self.send(Hello(role, identity.identity_public).encode())
        challenge = await self.recv_frame()
        assert isinstance(challenge, Challenge), challenge
        await self.send(Auth(identity.sign(auth_message(role, challenge.nonce))).encode())
        welcome = await self.recv_frame()
        assert isinstance(welcome, Welcome), welcome
        return welcome

    async def closed_by_peer(self, timeout: float) -> bool:
        """True when the relay closes the TCP connection within ``timeout`` (frames are skipped)."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True

    def abort(self) -> None:
        transport = self.writer.transport
        transport.abort()
