"""A real image for tests: a small PNG, built here (no image library), that decoders accept."""

from __future__ import annotations

import random
import struct
import zlib


def png(width: int = 2, height: int = 2, rgb: tuple[int, int, int] = (0, 90, 200), *, noise: bool = False) -> bytes:
    """A ``width`` x ``height`` PNG of one colour (8-bit RGB), or of random pixels (``noise``: it
    does not compress, as a photo does not)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    pixels = random.Random(7).randbytes if noise else (lambda n: bytes(rgb) * (n // 3))
    rows = b"".join(b"\x00" + pixels(3 * width) for _ in range(height))  # filter type 0, then the pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
