"""The relay's HTTP side, before any WebSocket: what a request is answered (admission per
address, pages: ``/healthz``, ``/metrics``, the web client's files, refusals).

Every TCP connection counts against its source address from accept to close
(``limits.AddressTable``: connections at once and new connections per second, refused with HTTP
429 before the upgrade; ``websocket.RelaySocket`` counts); over the relay's socket cap it is
answered 503 at accept. A browser's upgrade must come from the relay's own origin (``origin.py``,
HTTP 403). A request with a body is answered 400 and not read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from tether.lograte import LogLimiter
from tether.relay.limits import AddressTable, RelayLimits, SocketCount, address_key, is_loopback
from tether.relay.origin import OriginPolicy
from tether.relay.static import static_response

log = logging.getLogger("tether.relay")

WS_PATH = "/ws"


def plain_response(status: int, reason: str, body: str, *extra: tuple[str, str]) -> bytes:
    """A whole HTTP response that ends the connection, for answers written to the transport."""
    data = body.encode()
    headers = Headers(
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(data))),
            ("Connection", "close"),
            ("Server", "tether-relay"),
            *extra,
        ]
    )
    return Response(status, reason, headers, data).serialize()


BAD_REQUEST = plain_response(
    400,
    "Bad Request",
    "bad request: the relay answers GET requests without a body only (a page, or a WebSocket upgrade at /ws)\n",
)


class Asking(Protocol):
    """What the front needs of a connection whose request it answers (``websocket.RelaySocket``)."""

    request: Request | None
    # the address key it counts against, why its upgrade is refused, and whether it is counted
    # only once X-Forwarded-For is read (behind a trusted proxy)
    address: str | None
    refusal: str | None
    deferred: bool

    @property
    def remote_address(self) -> object: ...

    def count(self, key: str | None) -> None: ...

    def respond(self, status: int, text: str) -> Response: ...


@dataclass
class Front:
    """What the relay answers before a WebSocket exists: admission per address, pages."""

    limits: RelayLimits
    addresses: AddressTable
    sockets: SocketCount
    quiet_log: LogLimiter
    origins: OriginPolicy
    static_dir: Path | None
    # what is wrong, for /healthz (None: nothing)
    trouble: Callable[[], str | None] = lambda: None
    # the figures /metrics shows (Prometheus text format), to loopback only
    metrics: Callable[[], str] = lambda: ""
    #: new connections per address counted over a cluster's nodes (None: this relay alone)
    shared: SharedLimit | None = None

    async def process_request(self, connection: Asking, request: Request) -> Response | None:
        """The answer to ``request``, or None to go on with the upgrade."""
        path = urlsplit(request.path).path
        if connection.deferred:
            connection.deferred = False
            connection.count(self._forwarded_key(connection, request))
        # a cluster's shared count is for upgrades: a page or /healthz never waits on Redis
        shared = self.shared if path == WS_PATH else None
        if connection.refusal is None and shared is not None and connection.address is not None:
            connection.refusal = await shared.take(connection.address)
        if connection.refusal is not None:
            self.quiet_log.log(logging.INFO, "429", "refused %s: %s", peer_name(connection), connection.refusal)
            refused = connection.respond(429, connection.refusal + "\n")
            refused.headers["Retry-After"] = "5"
            return refused
        # A request with a body never gets here (websocket.RelaySocket answers it 400); methods other
        # than GET have nothing to do on a relay, but HEAD gets what GET would get (never an
        # upgrade).
        allowed = ("GET",) if path == WS_PATH else ("GET", "HEAD")
        if request.method != "GET":
            if request.method in allowed:
                response = await self._page(connection, path)
            else:
                response = connection.respond(
                    405, f"method not allowed: the relay answers {' and '.join(allowed)} here\n"
                )
                response.headers["Allow"] = ", ".join(allowed)
            return replace(response, body=b"") if request.method == "HEAD" else response
        if path == WS_PATH:
            origins = request.headers.get_all("Origin")
            hosts = request.headers.get_all("Host")
            if not self.origins.admits(origins, hosts[0] if len(hosts) == 1 else None):
                shown = origins[0][:100] if origins else ""
                log.info("refused %s: cross-origin upgrade from %r", peer_name(connection), shown)
                return connection.respond(
                    403,
                    f"cross-origin WebSocket refused: a page at {shown!r} is not this relay's; "
                    "open the web client from the relay's own address (its --public-url)\n",
                )
            return None
        return await self._page(connection, path)

    async def _page(self, connection: Asking, path: str) -> Response:
        if path == "/healthz":
            # 200 even in trouble: a node whose Redis is away still serves the channels within it,
            # so a load balancer must keep sending it clients; the body says what is wrong
            trouble = self.trouble()
            return connection.respond(200, f"degraded: {trouble}\n" if trouble else "ok\n")
        if path == "/metrics":
            # what the relay holds is the operator's to see, not the internet's: scrape it on the
            # machine (behind a proxy, only the proxy's own requests are answered)
            if not is_loopback(peer_host(connection.remote_address)) or connection.request is None or \
                    connection.request.headers.get("X-Forwarded-For"):
                return connection.respond(404, "not found\n")
            figures = connection.respond(200, self.metrics())
            figures.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
            return figures
        if self.static_dir is not None:
            response = await static_response(self.static_dir, path)
            if response is not None:
                return response
        return connection.respond(404, "not found\n")

    def _forwarded_key(self, connection: Asking, request: Request) -> str | None:
        """The address to count a connection from a trusted reverse proxy against: the last
        X-Forwarded-For entry (the client the proxy itself saw), else the proxy."""
        forwarded = request.headers.get_all("X-Forwarded-For")
        if forwarded:
            key = address_key(forwarded[-1].rsplit(",", 1)[-1].strip(), self.limits)
            if key is not None:
                return key
        return address_key(peer_host(connection.remote_address), self.limits)


class SharedLimit(Protocol):
    """New connections per address counted beyond this process (a cluster's nodes)."""

    async def take(self, key: str) -> str | None: ...


def peer_host(peer: object) -> str:
    if isinstance(peer, tuple) and peer and isinstance(peer[0], str):
        return peer[0]
    return ""


def peer_name(ws: Asking) -> str:
    addr = ws.remote_address
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)
