"""An end-to-end encrypted message transport over one relay channel.

The relay carries each Noise message as an opaque frame; this class runs the handshake,
then encrypts every application message (fragmenting large ones) and decrypts what arrives.
Any tampered, replayed, dropped or reordered frame makes :class:`SecureChannel` fail, and the
channel is then closed: there is no recovery inside a channel, the client resumes on a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tether.crypto.channel import ChannelError, HandshakeComplete, SecureChannel
from tether.errors import TetherError
from tether.protocol.frames import CloseCode
from tether.protocol.messages import MAX_MESSAGE_BYTES
from tether.protocol.transport import Channel, ChannelClosed, TransportClosed

HANDSHAKE_TIMEOUT = 10.0
HANDSHAKE_FAILED = "end-to-end handshake failed: the keys did not match"


class HandshakeFailed(TetherError):
    """The other side did not prove the key we expected (retrying cannot help)."""

    code = "handshake"


class E2ETransport:
    def __init__(self, channel: Channel, secure: SecureChannel) -> None:
        self.channel = channel
        self.secure = secure
        self.remote_static: bytes | None = None
        self.used_retired = False
        self._send_lock = asyncio.Lock()

    @classmethod
    async def initiate(
        cls,
        channel: Channel,
        *,
        static: X25519PrivateKey,
        remote_static: bytes,
        psk: bytes | None = None,
        timeout: float = HANDSHAKE_TIMEOUT,
    ) -> E2ETransport:
        """Run the initiator side of IK (or IKpsk2 when pairing) and return the open transport."""
        secure = SecureChannel.initiator(
            static=static, remote_static=remote_static, psk=psk, max_message=MAX_MESSAGE_BYTES
        )
        transport = cls(channel, secure)
        transport.secure.start()
        await transport._flush()
        try:
            await asyncio.wait_for(transport._until_handshake(), timeout)
        except ChannelClosed as exc:
            if exc.close_code != CloseCode.PROTOCOL_ERROR:
                raise
            # The host could not read our first message: it does not hold the key we expect.
            raise HandshakeFailed(
                "the host did not prove it holds the key you paired with (it rejected the handshake)",
                hint="if the host's keys changed, pair again; otherwise the relay may not be honest",
            ) from None
        return transport

    @classmethod
    async def accept(
        cls,
        channel: Channel,
        *,
        static: X25519PrivateKey,
        psk: bytes | None = None,
        timeout: float = HANDSHAKE_TIMEOUT,
        retired: Sequence[X25519PrivateKey] = (),
    ) -> E2ETransport:
        """Run the responder side; ``remote_static`` is set once this returns.

        ``retired`` are earlier static keys still accepted (after a rotation): the first message
        is tried against each, and ``used_retired`` tells the caller the client needs the new key."""
        if retired:
            first = await asyncio.wait_for(channel.recv(), timeout)
            for key in (static, *retired):
                secure = SecureChannel.responder(static=key, psk=psk, max_message=MAX_MESSAGE_BYTES)
                try:
                    events = secure.receive(first)
                except ChannelError:
                    continue
                transport = cls(channel, secure)
                transport.used_retired = key is not static
                for event in events:
                    if isinstance(event, HandshakeComplete):
                        transport.remote_static = event.remote_static
                await transport._flush()
                return transport
            with contextlib.suppress(TetherError):
                await channel.close(code=CloseCode.PROTOCOL_ERROR, reason=HANDSHAKE_FAILED)
            raise HandshakeFailed("the client's handshake matched none of this host's keys")
        transport = cls(channel, SecureChannel.responder(static=static, psk=psk, max_message=MAX_MESSAGE_BYTES))
        await asyncio.wait_for(transport._until_handshake(), timeout)
        return transport

    # A ChannelClosed from the relay link passes through recv and the handshake: its close code
    # tells the caller whether reconnecting can help (peer gone) or not (revoked, not allowed).

    async def _until_handshake(self) -> None:
        while self.remote_static is None:
            frame = await self.channel.recv()
            try:
                events = self.secure.receive(frame)  # a handshake frame: HandshakeComplete only
            except ChannelError as exc:
                raise await self._refuse(exc) from None
            for event in events:
                if isinstance(event, HandshakeComplete):
                    self.remote_static = event.remote_static
            await self._flush()

    async def _refuse(self, exc: ChannelError) -> TetherError:
        """Close the channel on a frame that failed its check; the error for the caller."""
        handshaking = self.remote_static is None
        reason = (
            HANDSHAKE_FAILED
            if handshaking
            else "end-to-end check failed: a frame was tampered with, replayed, dropped or reordered"
        )
        with contextlib.suppress(TetherError):
            await self.channel.close(code=CloseCode.PROTOCOL_ERROR, reason=reason)
        if handshaking:
            return HandshakeFailed(exc.message, hint=exc.hint)
        return TransportClosed(exc.message, hint=exc.hint, code=exc.code)

    async def _flush(self) -> None:
        async with self._send_lock:
            for frame in self.secure.data_to_send():
                await self.channel.send(frame)

    async def send(self, data: bytes) -> None:
        # Encrypt and send under one lock: Noise nonces are counters, so frames must leave
        # in the order they were sealed. (acquire/release rather than ``async with``: two
        # coroutines fewer per message.)
        lock = self._send_lock
        await lock.acquire()
        try:
            try:
                self.secure.send(data)
            except ChannelError as exc:
                raise TransportClosed(exc.message) from None
            for frame in self.secure.data_to_send():
                await self.channel.send(frame)
        finally:
            lock.release()

    async def recv(self) -> bytes:
        if self.remote_static is None:
            await self._until_handshake()
        while True:
            # Once open, a frame completes a message or nothing: no events, and nothing to send.
            frame = await self.channel.recv()
            try:
                data = self.secure.receive_message(frame)
            except ChannelError as exc:
                raise await self._refuse(exc) from None
            if data is not None:
                return data

    async def close(self) -> None:
        with contextlib.suppress(TetherError):
            await self.channel.close(reason="closed by peer")
