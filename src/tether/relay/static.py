"""The web client's files as the relay serves them: what a GET of a path returns, with the headers
that keep the client from being framed, sniffed or made to load anything but its own code (one
Content-Security-Policy for the whole client)."""

from __future__ import annotations

import asyncio
import mimetypes
from pathlib import Path
from urllib.parse import unquote

from websockets.datastructures import Headers
from websockets.http11 import Response

MAX_STATIC_BYTES = 16 << 20
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".wasm": "application/wasm",
    ".txt": "text/plain; charset=utf-8",
}

# The web client's one Content-Security-Policy (index.html carries none: a meta tag cannot say
# frame-ancestors, and two copies drift). No code but the client's own files, no eval, no
# connection but to this relay, no framing by another site.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; manifest-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


def default_static_dir() -> Path | None:
    """The web client shipped inside the package, when it is there."""
    path = Path(__file__).resolve().parent.parent / "web" / "static"
    return path if (path / "index.html").is_file() else None


async def static_response(static_dir: Path, path: str) -> Response | None:
    """The file of ``static_dir`` a GET of ``path`` asks for, with the client's headers; None when
    there is none (nothing outside the directory, symlinks included; nothing over 16 MiB)."""
    rel = unquote(path)
    if "\x00" in rel or "\\" in rel:
        return None
    parts = [p for p in rel.split("/") if p]
    if any(p in (".", "..") for p in parts):
        return None
    if not parts or rel.endswith("/"):
        parts.append("index.html")
    target = static_dir.joinpath(*parts)
    try:
        resolved = target.resolve()
    except (OSError, RuntimeError):
        return None
    # Symlinks inside the static dir must not lead out of it either.
    if not resolved.is_relative_to(static_dir) or not resolved.is_file():
        return None
    try:
        if resolved.stat().st_size > MAX_STATIC_BYTES:
            return None
        body = await asyncio.to_thread(resolved.read_bytes)
    except OSError:
        return None
    ctype = CONTENT_TYPES.get(resolved.suffix.lower()) or (
        mimetypes.guess_type(resolved.name)[0] or "application/octet-stream"
    )
    headers = Headers(
        [
            ("Content-Type", ctype),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            # No other site may frame the client (clickjacking an Approve button) or make it
            # load code or talk anywhere but this relay.
            ("Content-Security-Policy", CSP),
            ("X-Frame-Options", "DENY"),
        ]
    )
    return Response(200, "OK", headers, body)
