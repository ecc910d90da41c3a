"""``SecureChannel``: one end-to-end encrypted channel between a client and a host, sans-I/O.

It wraps one Noise handshake (:mod:`tether.crypto.noise`), the transport ciphers that follow and
the fragmentation of application messages (ARCHITECTURE §4.3). The host daemon is the responder,
clients are initiators. Everything it outputs is a *frame*: exactly one Noise message, carried by
the relay as one opaque payload and delivered in order. The caller feeds frames in with
:meth:`SecureChannel.receive`, gets events back, and drains frames to send with
:meth:`SecureChannel.data_to_send`.

Lifecycle (names are the values of :attr:`SecureChannel.state`)::

    handshaking --handshake_done--> open
    handshaking --fail / close----> closed
    open        --fail / close----> closed

Anything else raises :class:`ChannelError`; so does every call once the channel is closed.

Transport plaintext layout, per frame::

    flag (1 byte: 0 = last fragment of a message, 1 = more fragments follow) || chunk

What the events prove: a responder's :class:`HandshakeComplete` names the initiator's static key,
but the first handshake message can be replayed and, with a psk, does not yet prove the
initiator knew it. Only the first :class:`Message` from the initiator proves both. So nothing
with a side effect rides in message 1 (its payload is always empty), and a host must wait for a
``Message`` before acting on a channel — in particular before accepting a pairing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tether.crypto.noise import MAX_MESSAGE, TAGLEN, CipherState, HandshakeState, NoiseError
from tether.errors import TetherError

__all__ = [
    "DEFAULT_MAX_MESSAGE",
    "MAX_CHUNK",
    "PROLOGUE",
    "ChannelError",
    "ChannelState",
    "Event",
    "HandshakeComplete",
    "Message",
    "SecureChannel",
]

# Bound into the handshake hash: a peer speaking another protocol (or version) fails the handshake.
PROLOGUE = b"tether/1"

FLAG_FINAL = 0
FLAG_MORE = 1
_FINAL = bytes([FLAG_FINAL])
_MORE = bytes([FLAG_MORE])
# The largest chunk such that flag + chunk + AEAD tag is one maximal Noise message.
MAX_CHUNK = MAX_MESSAGE - TAGLEN - 1
DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024

ChannelState = Literal["handshaking", "open", "closed"]
Role = Literal["initiator", "responder"]

# The state machine, as a table: (state, transition) -> next state.
_TRANSITIONS: dict[tuple[ChannelState, str], ChannelState] = {
    ("handshaking", "handshake_done"): "open",
    ("handshaking", "fail"): "closed",
    ("handshaking", "close"): "closed",
    ("open", "fail"): "closed",
    ("open", "close"): "closed",
}

_CLOSED_MESSAGE = "the secure channel is closed"
_TRANSPORT_FAILURE = (
    "a frame failed to decrypt: the frame was tampered with, replayed, dropped or reordered; "
    "the channel is closed"
)


class ChannelError(TetherError):
    """The end-to-end channel refused a call or a frame; the message says why."""

    code = "channel"


@dataclass(frozen=True)
class HandshakeComplete:
    """The handshake finished; ``remote_static`` is the peer's X25519 static public key."""

    remote_static: bytes
    handshake_hash: bytes

    def __repr__(self) -> str:
        return "HandshakeComplete(...)"  # keys stay out of logs


@dataclass(frozen=True)
class Message:
    """One whole application message, reassembled from its fragments."""

    data: bytes

    def __repr__(self) -> str:
        return f"Message(<{len(self.data)} bytes>)"


Event = HandshakeComplete | Message


class SecureChannel:
    """One end of a Noise IK (or IKpsk2, for pairing) channel. Build with :meth:`initiator` or
    :meth:`responder`; never holds a socket."""

    def __init__(
        self,
        role: Role,
        handshake: HandshakeState,
        *,
        psk: bool,
        max_message: int,
    ) -> None:
        if max_message < 1:
            raise ChannelError("max_message must be a positive number of bytes")
        self._role: Role = role
        self._state: ChannelState = "handshaking"
        self._handshake: HandshakeState | None = handshake
        self._uses_psk = psk
        self._max_message = max_message
        self._started = False
        self._send_cipher: CipherState | None = None
        self._recv_cipher: CipherState | None = None
        self._remote_static: bytes | None = None
        self._outgoing: list[bytes] = []
        # The fragments of the message being reassembled (joined once, at its last) and their size.
        self._partial: list[memoryview] = []
        self._partial_size = 0

    @classmethod
    def initiator(
        cls,
        *,
        static: X25519PrivateKey,
        remote_static: bytes,
        psk: bytes | None = None,
        max_message: int = DEFAULT_MAX_MESSAGE,
    ) -> SecureChannel:
        """A client's end: it knows the host's static key (``remote_static``) from pairing, or
        from the pairing link along with ``psk`` while pairing."""
        pattern = "IK" if psk is None else "IKpsk2"
        try:
            handshake = HandshakeState.initiator(
                pattern, s=static, rs=remote_static, psk=psk, prologue=PROLOGUE
            )
        except NoiseError as exc:
            raise ChannelError(f"cannot start a secure channel: {exc.message}") from None
        return cls("initiator", handshake, psk=psk is not None, max_message=max_message)

    @classmethod
    def responder(
        cls,
        *,
        static: X25519PrivateKey,
        psk: bytes | None = None,
        max_message: int = DEFAULT_MAX_MESSAGE,
    ) -> SecureChannel:
        """A host's end: it learns the client's static key from the first handshake message."""
        pattern = "IK" if psk is None else "IKpsk2"
        try:
            handshake = HandshakeState.responder(pattern, s=static, psk=psk, prologue=PROLOGUE)
        except NoiseError as exc:
            raise ChannelError(f"cannot accept a secure channel: {exc.message}") from None
        return cls("responder", handshake, psk=psk is not None, max_message=max_message)

    def __repr__(self) -> str:
        return f"SecureChannel(role={self._role!r}, state={self._state!r})"

    # -- state --

    @property
    def state(self) -> ChannelState:
        return self._state

    @property
    def role(self) -> Role:
        return self._role

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static public key (for the responder, known once the handshake is done)."""
        return self._remote_static

    def _transition(self, name: str) -> None:
        self._state = _TRANSITIONS[(self._state, name)]
        if self._state == "closed":
            # Drop every secret and pending byte: nothing may use this channel again.
            self._handshake = None
            self._send_cipher = self._recv_cipher = None
            self._outgoing.clear()
            self._partial = []
            self._partial_size = 0

    def _require(self, state: ChannelState, action: str) -> None:
        if self._state == "closed":
            raise ChannelError(_CLOSED_MESSAGE, hint="open a new channel")
        if self._state != state:
            raise ChannelError(f"cannot {action} while the channel is {self._state}")

    def _fail(self, message: str, hint: str | None = None) -> ChannelError:
        self._transition("fail")
        return ChannelError(message, hint=hint)

    # -- calls --

    def start(self) -> None:
        """Initiator only: queue handshake message 1. Its payload is empty on purpose — the
        message can be replayed by anyone who saw it, so it must carry nothing that acts."""
        self._require("handshaking", "start the handshake")
        if self._role != "initiator":
            raise ChannelError("only the initiator starts the handshake; the responder waits for it")
        if self._started:
            raise ChannelError("the handshake was already started")
        assert self._handshake is not None
        try:
            self._outgoing.append(self._handshake.write_message(b""))
        except NoiseError as exc:
            raise self._fail(f"could not start the handshake: {exc.message}") from None
        self._started = True

    def close(self) -> None:
        """Close the channel (e.g. the relay closed it); idempotent."""
        if self._state != "closed":
            self._transition("close")

    def receive(self, frame: bytes) -> list[Event]:
        """Feed one frame from the peer; returns the events it completed (often none)."""
        if self._state == "handshaking":
            return [self._receive_handshake(frame)]
        data = self.receive_message(frame)
        return [] if data is None else [Message(data)]

    def receive_message(self, frame: bytes) -> bytes | None:
        """:meth:`receive` for an open channel, without the event objects: the whole message this
        frame completes, or None while more fragments are due. The same checks and failures."""
        if self._state != "open":
            self._require("open", "receive")
        assert self._recv_cipher is not None
        try:
            plaintext = self._recv_cipher.decrypt_with_ad(b"", frame)
        except NoiseError:
            raise self._fail(_TRANSPORT_FAILURE) from None
        # The frame authenticated, so a bad layout means a broken peer, not an attacker.
        if not plaintext or plaintext[0] not in (FLAG_FINAL, FLAG_MORE):
            raise self._fail("the peer sent a malformed fragment; the channel is closed")
        size = self._partial_size + len(plaintext) - 1
        if size > self._max_message:
            raise self._fail(
                f"the peer sent a message larger than {self._max_message} bytes; the channel is closed"
            )
        if plaintext[0] == FLAG_FINAL and not self._partial:
            return plaintext[1:]  # a message in one frame: a single copy
        self._partial.append(memoryview(plaintext)[1:])
        self._partial_size = size
        if plaintext[0] == FLAG_MORE:
            return None
        data = b"".join(self._partial)
        self._partial, self._partial_size = [], 0
        return data

    def send(self, data: bytes) -> None:
        """Queue one application message, fragmented into as many frames as it needs."""
        if self._state != "open":
            self._require("open", "send")
        size = len(data)
        if size > self._max_message:
            raise ChannelError(f"the message is {size} bytes; this channel carries at most {self._max_message}")
        assert self._send_cipher is not None
        encrypt = self._send_cipher.encrypt_with_ad
        try:
            if size <= MAX_CHUNK:  # one final fragment (an empty message too): the common case
                self._outgoing.append(encrypt(b"", _FINAL + data))
                return
            view = memoryview(data)
            last = (size - 1) // MAX_CHUNK * MAX_CHUNK  # where the final fragment starts
            frames = [encrypt(b"", _MORE + view[start : start + MAX_CHUNK]) for start in range(0, last, MAX_CHUNK)]
            frames.append(encrypt(b"", _FINAL + view[last:]))
        except NoiseError as exc:
            # Only nonce exhaustion gets here; frames already encrypted used nonces the peer
            # will never see, so the channel cannot continue.
            raise self._fail(f"cannot send: {exc.message}; the channel is closed") from None
        self._outgoing.extend(frames)

    def data_to_send(self) -> list[bytes]:
        """Drain the frames waiting to go to the peer, in order."""
        if self._state == "closed":
            raise ChannelError(_CLOSED_MESSAGE, hint="open a new channel")
        frames, self._outgoing = self._outgoing, []
        return frames

    # -- internals --

    def _receive_handshake(self, frame: bytes) -> HandshakeComplete:
        assert self._handshake is not None
        if self._role == "initiator" and not self._started:
            raise ChannelError("start() the handshake before receiving frames")
        try:
            self._handshake.read_message(frame)  # payloads are always empty; ignore them
            if self._role == "responder":
                self._outgoing.append(self._handshake.write_message(b""))
        except NoiseError:
            raise self._handshake_failure() from None
        # IK has two messages: after reading (initiator) or answering (responder) it is done.
        assert self._handshake.complete
        self._send_cipher, self._recv_cipher = self._handshake.split()
        remote_static = self._handshake.remote_static
        handshake_hash = self._handshake.handshake_hash
        assert remote_static is not None
        self._remote_static = remote_static
        self._handshake = None
        self._transition("handshake_done")
        return HandshakeComplete(remote_static=remote_static, handshake_hash=handshake_hash)

    def _handshake_failure(self) -> ChannelError:
        if self._role == "initiator":
            if self._uses_psk:
                return self._fail(
                    "the host did not prove it holds the key you paired with, or the pairing "
                    "secret did not match; the channel is closed",
                    hint="check the pairing link is current and was meant for this host",
                )
            return self._fail(
                "the host did not prove it holds the key you paired with; the channel is closed",
                hint="if the host's keys were reset, pair this device again",
            )
        return self._fail(
            "the client's handshake did not match this host's key (or was corrupted); the channel is closed"
        )
