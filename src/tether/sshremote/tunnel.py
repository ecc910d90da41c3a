"""``--mode tunnel``: for a remote that cannot reach the relay, its relay connection rides the
desktop's SSH connection.

The desktop asks the SSH server for a listener on the remote's ``127.0.0.1:PORT``; each
connection to it arrives here as an SSH channel, and the desktop pipes its bytes to the relay
(over TLS when the relay is ``wss://``). The remote daemon dials ``ws://127.0.0.1:PORT/ws``. Only
bytes pass through the desktop: the remote host's relay signature and its Noise channels with
devices stay end to end. When the SSH connection drops, the desktop reconnects with backoff and
asks for the same port, so the remote daemon's own reconnect loop finds the relay again. The
desktop host daemon holds these tunnels (:mod:`tether.sshremote.keeper`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tether.backoff import Backoff
from tether.relay.link import websocket_url
from tether.sshremote.errors import SshError

if TYPE_CHECKING:
    import asyncssh

log = logging.getLogger("tether.sshremote.tunnel")
CHUNK = 64 * 1024


@dataclass(frozen=True)
class RelayAddress:
    host: str
    port: int
    tls: bool
    path: str

    @classmethod
    def parse(cls, relay_url: str) -> RelayAddress:
        parts = urlsplit(websocket_url(relay_url))
        tls = parts.scheme == "wss"
        assert parts.hostname is not None  # websocket_url checked it
        return cls(parts.hostname, parts.port or (443 if tls else 80), tls, parts.path or "/ws")

    def remote_url(self, port: int) -> str:
        """What the remote daemon dials: the tunnel's end on its own loopback."""
        return f"ws://127.0.0.1:{port}{self.path}"


async def _pipe(reader: Any, writer: Any) -> None:
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (OSError, ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.write_eof()


class Forwarder:
    """Accepts the tunnel's connections and joins each to a new connection to the relay."""

    def __init__(self, relay: RelayAddress) -> None:
        self.relay = relay
        self.connections = 0

    def handler_factory(self, orig_host: str, orig_port: int) -> Callable[[Any, Any], Any]:
        return self._handle

    async def _handle(self, ssh_reader: asyncssh.SSHReader[bytes], ssh_writer: asyncssh.SSHWriter[bytes]) -> None:
        context = ssl.create_default_context() if self.relay.tls else None
        try:
            reader, writer = await asyncio.open_connection(
                self.relay.host, self.relay.port, ssl=context,
                server_hostname=self.relay.host if context else None,
            )
        except OSError as exc:
            log.warning("tunnel: the relay %s:%d is unreachable (%s)", self.relay.host, self.relay.port, exc)
            ssh_writer.close()
            return
        self.connections += 1
        try:
            await asyncio.gather(_pipe(ssh_reader, writer), _pipe(reader, ssh_writer))
        finally:
            writer.close()
            ssh_writer.close()


async def open_listener(
    conn: asyncssh.SSHClientConnection, forwarder: Forwarder, port: int | None
) -> asyncssh.SSHListener:
    """A listener on the remote's 127.0.0.1: on ``port`` when it is free, else on any port."""
    import asyncssh

    for wanted in ([port] if port else []) + [0]:
        try:
            return await conn.start_server(forwarder.handler_factory, "127.0.0.1", wanted)
        except asyncssh.ChannelListenError as exc:
            last = exc
    raise SshError(
        f"the SSH server refused to listen on the remote's loopback ({last})",
        hint="its sshd_config must allow it (AllowTcpForwarding yes or remote); or use --mode relay",
    )


async def keep_up(
    connect: Callable[[], Awaitable[asyncssh.SSHClientConnection]],
    forwarder: Forwarder,
    port: int | None,
    on_port: Callable[[asyncssh.SSHClientConnection, int], Awaitable[None]],
    say: Callable[[str, str], None],
) -> None:
    """Hold the tunnel until cancelled: dial, listen on the remote's ``port`` (``on_port`` is
    called with the port taken, after each (re)connection and before it is used), and when
    the SSH connection drops, dial again with backoff. ``say(state, text)`` tells what happens;
    state is "up", "connecting" or "failed"."""
    import asyncssh

    backoff = Backoff()
    conn: asyncssh.SSHClientConnection | None = None
    try:
        while True:
            try:
                conn = await connect()
                listener = await open_listener(conn, forwarder, port)
                port = listener.get_port()
                await on_port(conn, port)
            except (SshError, OSError, asyncssh.Error) as exc:
                if conn is not None:
                    conn.close()
                    conn = None
                delay = backoff.next_delay()
                say("failed", f"SSH connection failed ({getattr(exc, 'message', exc)}); retrying in {delay:.1f} s")
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            say("up", f"tunnel up on the remote's 127.0.0.1:{port}")
            await conn.wait_closed()
            conn = None
            say("connecting", "SSH connection lost; reconnecting")
    finally:
        if conn is not None:
            conn.close()
