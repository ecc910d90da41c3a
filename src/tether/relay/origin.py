"""Which web pages may open a WebSocket to the relay (the ``Origin`` check).

Browsers send ``Origin`` on every WebSocket upgrade, and any page on the web can try one: a
page at evil.example could otherwise make a visitor's browser dial the relay. The relay admits
an upgrade that carries ``Origin`` only from its own origin:

- with a public URL (``--public-url``), that URL's origin, and nothing else;
- without one (``tether up`` or a relay on 127.0.0.1), the origin whose host and port are the
  request's ``Host`` header: the page the relay itself served. A reverse proxy must then pass
  ``Host`` through (Caddy and nginx's usual ``proxy_set_header Host $host`` do), or the relay
  needs ``--public-url``;
- plus any origin given with ``--allow-origin``.

Programs (the CLI, the SDK, a host) send no ``Origin`` and are not affected: the check stops
other sites' pages, not other clients, which admission (signatures, allowlists) is for.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["OriginPolicy", "normalize_origin"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _host_port(host: str, port: int | None, scheme: str) -> tuple[str, int] | None:
    default = _DEFAULT_PORTS.get(scheme)
    if default is None or not host:
        return None
    return host.lower().rstrip("."), port if port is not None else default


def normalize_origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin or URL, with the default port filled in; None if it is
    not an http(s) origin (``null``, ``file://``, garbage)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme.lower(), parts.scheme.lower())
    if scheme not in ("http", "https"):
        return None
    hp = _host_port(parts.hostname or "", port, scheme)
    return None if hp is None else (scheme, *hp)


class OriginPolicy:
    """Decides whether an upgrade's ``Origin`` header comes from the relay's own pages."""

    def __init__(self, public_url: str | None = None, allowed: Iterable[str] = ()) -> None:
        self.public = normalize_origin(public_url) if public_url else None
        self.allowed: set[tuple[str, str, int]] = set()
        for url in allowed:
            origin = normalize_origin(url)
            if origin is None:
                raise ValueError(f"{url!r} is not an http:// or https:// origin")
            self.allowed.add(origin)

    def admits(self, origins: list[str], host_header: str | None) -> bool:
        """``origins``: every Origin header of the request (none: not a browser)."""
        if not origins:
            return True
        if len(origins) > 1:
            return False
        origin = normalize_origin(origins[0])
        if origin is None:
            return False
        if origin in self.allowed or origin == self.public:
            return True
        if self.public is not None or not host_header:
            return False
        # No public URL: the page must come from the host and port this request was sent to.
        try:
            parts = urlsplit(f"//{host_header.strip()}")
            port = parts.port
        except ValueError:
            return False
        return _host_port(parts.hostname or "", port, origin[0]) == origin[1:]
