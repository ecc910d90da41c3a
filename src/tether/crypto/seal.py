"""Sealed messages for the relay mailbox: readable only by the receiver, who may be offline.

A host seals a snapshot for each of its devices and a device seals a queued prompt for its host;
the relay stores the sealed bytes and hands them over later. A sealed message is exactly one
``Noise_X_25519_AESGCM_SHA256`` handshake message (:mod:`tether.crypto.noise`) from the sender's
static key to the receiver's static key, with the caller's ``context`` as the prologue::

    e (32, clear) || sender's static key (32 + 16 tag) || plaintext (n + 16 tag)

What opening one proves (spec §7.7, X's payload properties): the holder of the returned static key
sealed it for this receiver and this context. It does not prove *when*: the relay can replay or
drop it, so the caller dedups on an id or seq inside the plaintext. And unlike a live channel, it
has no forward secrecy against the receiver's static key — whoever later steals that key opens
every message sealed to it (hence key rotation), and can also seal messages that open as coming
from any sender.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tether.crypto.noise import DHLEN, MAX_MESSAGE, TAGLEN, HandshakeState, NoiseError
from tether.errors import TetherError

__all__ = ["MAX_SEALED", "MAX_SEALED_PLAINTEXT", "MIN_SEALED", "SealError", "open_sealed", "seal"]

PATTERN = "X"
# e, the encrypted static key and the plaintext's tag: 96 bytes around the plaintext.
MIN_SEALED = DHLEN + (DHLEN + TAGLEN) + TAGLEN
MAX_SEALED = MAX_MESSAGE  # one Noise message
MAX_SEALED_PLAINTEXT = MAX_SEALED - MIN_SEALED


class SealError(TetherError):
    """A message could not be sealed, or a sealed message could not be opened."""

    code = "seal"


def seal(static: X25519PrivateKey, remote_static: bytes, context: bytes, plaintext: bytes) -> bytes:
    """Seal ``plaintext`` from ``static`` to the receiver's 32-byte static public key.

    ``context`` must be what the receiver will pass to :func:`open_sealed`, e.g.
    ``b"tether-mailbox/1\\0S" + host_id``: binding the direction and host means a message cannot be
    moved to another mailbox and still open.
    """
    if len(plaintext) > MAX_SEALED_PLAINTEXT:
        raise SealError(
            f"the plaintext is {len(plaintext)} bytes; a sealed message carries at most {MAX_SEALED_PLAINTEXT}"
        )
    try:
        handshake = HandshakeState.initiator(PATTERN, s=static, rs=remote_static, prologue=context)
        return handshake.write_message(plaintext)
    except NoiseError as err:
        raise SealError(f"cannot seal: {err.message}") from None


def open_sealed(statics: Sequence[X25519PrivateKey], context: bytes, sealed: bytes) -> tuple[bytes, bytes]:
    """``(sender's static public key, plaintext)`` of a message sealed to one of ``statics``.

    ``statics`` are the receiver's current key and the ones it retired: after a rotation the
    mailbox may still hold messages sealed to an old key.
    """
    if len(sealed) < MIN_SEALED:
        raise SealError(f"the sealed message is {len(sealed)} bytes; the smallest is {MIN_SEALED}")
    if len(sealed) > MAX_SEALED:
        raise SealError(f"the sealed message is {len(sealed)} bytes; the largest is {MAX_SEALED}")
    for static in statics:
        handshake = HandshakeState.responder(PATTERN, s=static, prologue=context)
        try:
            plaintext = handshake.read_message(sealed)
        except NoiseError:
            continue
        sender = handshake.remote_static
        assert sender is not None  # read_message of an X message always learns it
        return sender, plaintext
    raise SealError(
        "the sealed message did not open with this receiver's keys: it was altered, "
        "sealed to another key, or sealed for another host or direction"
    )
