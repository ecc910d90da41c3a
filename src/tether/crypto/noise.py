"""A small sans-I/O Noise Protocol Framework (revision 34), only as much as tether needs.

Three protocols (ARCHITECTURE §4.3):

* ``Noise_IK_25519_AESGCM_SHA256`` — known devices and tokens; the client already holds the
  host's static key from pairing.
* ``Noise_IKpsk2_25519_AESGCM_SHA256`` — pairing; the psk is the one-time pairing secret.
* ``Noise_X_25519_AESGCM_SHA256`` — one-way: the relay mailbox's sealed messages
  (:mod:`tether.crypto.seal`), written while the receiver is offline.

The layering follows the spec one object per section: :class:`CipherState` (§5.1),
:class:`SymmetricState` (§5.2) and :class:`HandshakeState` (§5.3). Nothing here does I/O: the
caller moves the bytes. Every failure a peer can cause raises :class:`NoiseError`, and the object
that failed is unusable afterwards, because a half-applied message leaves its hash and keys
out of step with the peer's.

The implementation is checked against the cacophony and snow test vectors
(``tests/crypto/vectors/``).
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tether.errors import TetherError

__all__ = [
    "DHLEN",
    "HASHLEN",
    "MAX_MESSAGE",
    "PATTERNS",
    "TAGLEN",
    "CipherState",
    "HandshakeState",
    "NoiseError",
    "SymmetricState",
    "protocol_name",
]

DHLEN = 32  # X25519 public keys and shared secrets
HASHLEN = 32  # SHA-256
TAGLEN = 16  # AES-GCM authentication tag
MAX_MESSAGE = 65535  # spec §3: every Noise message, handshake or transport, fits in 65535 bytes
MAX_NONCE = 2**64 - 1  # spec §5.1: reserved, so encrypting with it is an error
PSKLEN = 32
# AESGCM nonce: 32 zero bits then the counter, big-endian (spec §12.3).
_NONCE = struct.Struct(">4xQ")

# Message patterns as token lists (spec §7.4, §7.5 and §9). All start from the pre-message "<- s":
# the initiator knows the responder's static key before the handshake.
PATTERNS: dict[str, tuple[tuple[str, ...], ...]] = {
    "IK": (
        ("e", "es", "s", "ss"),  # -> initiator
        ("e", "ee", "se"),  # <- responder
    ),
    "IKpsk2": (
        ("e", "es", "s", "ss"),
        ("e", "ee", "se", "psk"),  # psk2: the psk token ends the second message
    ),
    # One-way (spec §7.4): IK's first message alone. Only the initiator ever sends, so the
    # responder→initiator cipher that split() also returns must stay unused.
    "X": (("e", "es", "s", "ss"),),
}


class NoiseError(TetherError):
    """A Noise message failed to parse or authenticate, or a state was used out of turn."""

    code = "noise"


def protocol_name(pattern: str) -> str:
    """The full Noise protocol name for one of :data:`PATTERNS`."""
    if pattern not in PATTERNS:
        raise NoiseError(f"unsupported Noise pattern {pattern!r} (tether uses {', '.join(PATTERNS)})")
    return f"Noise_{pattern}_25519_AESGCM_SHA256"


# --- primitives (spec §4) ---------------------------------------------------------------------


def _public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        # `cryptography` refuses low-order points (an all-zero shared secret): a peer sending one
        # is trying to force a known key, so treat it like any other bad message.
        raise NoiseError("the peer sent an invalid X25519 public key") from None


def _hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")


def _hkdf(chaining_key: bytes, ikm: bytes, outputs: int) -> list[bytes]:
    """Noise's HKDF (spec §4.3): two or three 32-byte outputs chained from one HMAC key."""
    temp_key = _hmac(chaining_key, ikm)
    out: list[bytes] = []
    previous = b""
    for i in range(1, outputs + 1):
        previous = _hmac(temp_key, previous + bytes([i]))
        out.append(previous)
    return out


# --- CipherState (spec §5.1) ------------------------------------------------------------------


class CipherState:
    """A key and a counter nonce. Without a key it passes data through, as the spec says.

    The nonce is a counter, so a dropped, replayed or reordered message fails authentication;
    after any failure the state refuses further use rather than resynchronise.
    """

    def __init__(self, key: bytes | None = None, *, nonce: int = 0) -> None:
        # ``nonce`` plays the spec's SetNonce(); only tests have a reason to pass it.
        if key is not None and len(key) != 32:
            raise NoiseError("a Noise cipher key is 32 bytes")
        if not 0 <= nonce <= MAX_NONCE:
            raise NoiseError("a Noise nonce is a 64-bit counter")
        self._aead = AESGCM(key) if key is not None else None
        self._n = nonce
        self._broken = False

    def __repr__(self) -> str:
        return f"CipherState(has_key={self.has_key}, n={self._n})"

    @property
    def has_key(self) -> bool:
        return self._aead is not None

    @property
    def n(self) -> int:
        """The nonce the next message will use."""
        return self._n

    def _nonce(self) -> bytes:
        if self._broken:
            raise NoiseError("this Noise cipher state failed earlier and cannot be used again")
        if self._n >= MAX_NONCE:
            raise NoiseError("the Noise nonce is exhausted; a new handshake is needed")
        return _NONCE.pack(self._n)

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._aead is None:
            return plaintext
        if len(plaintext) + TAGLEN > MAX_MESSAGE:
            raise NoiseError(f"a Noise message is at most {MAX_MESSAGE} bytes")
        ciphertext = self._aead.encrypt(self._nonce(), plaintext, ad)
        self._n += 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self._aead is None:
            return ciphertext
        nonce = self._nonce()
        if len(ciphertext) > MAX_MESSAGE:
            self._broken = True
            raise NoiseError(f"a Noise message is at most {MAX_MESSAGE} bytes")
        try:
            plaintext = self._aead.decrypt(nonce, ciphertext, ad)
        except InvalidTag:
            self._broken = True
            raise NoiseError("a Noise message failed authentication") from None
        self._n += 1
        return plaintext


# --- SymmetricState (spec §5.2) ---------------------------------------------------------------


class SymmetricState:
    """The chaining key ``ck``, the handshake hash ``h`` and the current cipher."""

    def __init__(self, name: bytes) -> None:
        self.h = name.ljust(HASHLEN, b"\x00") if len(name) <= HASHLEN else _hash(name)
        self.ck = self.h
        self.cipher = CipherState()

    def __repr__(self) -> str:
        return "SymmetricState(...)"

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = _hkdf(self.ck, ikm, 2)
        self.cipher = CipherState(temp_k)

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self.ck, temp_h, temp_k = _hkdf(self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.cipher = CipherState(temp_k)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """The initiator→responder and responder→initiator transport ciphers."""
        k1, k2 = _hkdf(self.ck, b"", 2)
        return CipherState(k1), CipherState(k2)


# --- HandshakeState (spec §5.3) ---------------------------------------------------------------


class HandshakeState:
    """One IK, IKpsk2 or X handshake, from either side. Build it with :meth:`initiator` or
    :meth:`responder`, then alternate :meth:`write_message` / :meth:`read_message` until
    :attr:`complete`, then :meth:`split` into transport ciphers."""

    def __init__(
        self,
        pattern: str,
        *,
        initiator: bool,
        s: X25519PrivateKey,
        rs: bytes | None,
        psk: bytes | None,
        prologue: bytes,
        e: X25519PrivateKey | None,
    ) -> None:
        self._name = protocol_name(pattern)
        self._messages = PATTERNS[pattern]
        self._psk_mode = "psk" in pattern
        if self._psk_mode and (psk is None or len(psk) != PSKLEN):
            raise NoiseError(f"{self._name} needs a {PSKLEN}-byte psk")
        if not self._psk_mode and psk is not None:
            raise NoiseError(f"{self._name} takes no psk")
        if initiator and (rs is None or len(rs) != DHLEN):
            raise NoiseError(f"the initiator needs the responder's {DHLEN}-byte static key")

        self._initiator = initiator
        self._s = s
        self._e = e
        self._rs = rs
        self._re: bytes | None = None
        self._psk = psk
        self._index = 0  # the next message pattern to write or read
        self._failed = False
        self._split: tuple[CipherState, CipherState] | None = None
        self._split_taken = False

        self._sym = SymmetricState(self._name.encode("ascii"))
        self._sym.mix_hash(prologue)
        # Pre-message "<- s": both sides hash the responder's static key.
        self._sym.mix_hash(rs if rs is not None else _public_bytes(s))

    @classmethod
    def initiator(
        cls,
        pattern: str,
        *,
        s: X25519PrivateKey,
        rs: bytes,
        psk: bytes | None = None,
        prologue: bytes = b"",
        e: X25519PrivateKey | None = None,
    ) -> HandshakeState:
        """The side that knows ``rs``, the responder's static public key, in advance."""
        return cls(pattern, initiator=True, s=s, rs=rs, psk=psk, prologue=prologue, e=e)

    @classmethod
    def responder(
        cls,
        pattern: str,
        *,
        s: X25519PrivateKey,
        psk: bytes | None = None,
        prologue: bytes = b"",
        e: X25519PrivateKey | None = None,
    ) -> HandshakeState:
        """The side that learns the initiator's static key from the first message."""
        return cls(pattern, initiator=False, s=s, rs=None, psk=psk, prologue=prologue, e=e)

    def __repr__(self) -> str:
        role = "initiator" if self._initiator else "responder"
        return f"HandshakeState({self._name!r}, {role}, message={self._index}, complete={self.complete})"

    # -- public state --

    @property
    def protocol_name(self) -> str:
        return self._name

    @property
    def complete(self) -> bool:
        return self._split is not None

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static public key: given to the initiator, learned by the responder."""
        return self._rs

    @property
    def handshake_hash(self) -> bytes:
        """``h`` after the last message: a unique id of this session (for channel binding)."""
        if not self.complete:
            raise NoiseError("the handshake hash is only final once the handshake is complete")
        return self._sym.h

    def split(self) -> tuple[CipherState, CipherState]:
        """``(send, receive)`` transport ciphers for this side; handed out once."""
        if self._split is None:
            raise NoiseError("the handshake is not complete yet")
        if self._split_taken:
            raise NoiseError("the transport ciphers were already handed out")
        self._split_taken = True
        c1, c2 = self._split
        return (c1, c2) if self._initiator else (c2, c1)

    # -- messages --

    def _check_turn(self, writing: bool) -> None:
        if self._failed:
            raise NoiseError("this handshake failed earlier and cannot continue")
        if self.complete:
            raise NoiseError("the handshake is already complete")
        # The initiator writes the even-numbered messages, the responder the odd ones.
        my_turn = (self._index % 2 == 0) == self._initiator
        if my_turn != writing:
            raise NoiseError("it is the peer's turn to send a handshake message")

    def _overhead(self, tokens: tuple[str, ...]) -> int:
        """Bytes a message adds around its payload; known before anything is mixed."""
        has_key = self._sym.cipher.has_key
        size = 0
        for token in tokens:
            if token == "e":
                size += DHLEN
                has_key = has_key or self._psk_mode
            elif token == "s":
                size += DHLEN + (TAGLEN if has_key else 0)
            else:  # a DH or psk token: from here on the cipher has a key
                has_key = True
        return size + (TAGLEN if has_key else 0)

    def _finish_message(self) -> None:
        self._index += 1
        if self._index == len(self._messages):
            self._split = self._sym.split()

    def write_message(self, payload: bytes = b"") -> bytes:
        self._check_turn(writing=True)
        tokens = self._messages[self._index]
        if len(payload) + self._overhead(tokens) > MAX_MESSAGE:
            raise NoiseError(f"a Noise message is at most {MAX_MESSAGE} bytes")
        try:
            out = bytearray()
            for token in tokens:
                if token == "e":
                    if self._e is None:
                        self._e = X25519PrivateKey.generate()
                    e_pub = _public_bytes(self._e)
                    out += e_pub
                    self._sym.mix_hash(e_pub)
                    if self._psk_mode:  # spec §9.2: with a psk, "e" also keys the cipher
                        self._sym.mix_key(e_pub)
                elif token == "s":
                    out += self._sym.encrypt_and_hash(_public_bytes(self._s))
                elif token == "psk":
                    assert self._psk is not None
                    self._sym.mix_key_and_hash(self._psk)
                else:
                    self._sym.mix_key(self._dh_token(token))
            out += self._sym.encrypt_and_hash(payload)
        except NoiseError:
            self._failed = True
            raise
        self._finish_message()
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        """Process the peer's handshake message and return its (authenticated) payload."""
        self._check_turn(writing=False)
        if len(message) > MAX_MESSAGE:
            self._failed = True
            raise NoiseError(f"a Noise message is at most {MAX_MESSAGE} bytes")
        tokens = self._messages[self._index]
        if len(message) < self._overhead(tokens):
            self._failed = True
            raise NoiseError("the handshake message is too short")
        try:
            rest = memoryview(message)
            for token in tokens:
                if token == "e":
                    self._re = bytes(rest[:DHLEN])
                    rest = rest[DHLEN:]
                    self._sym.mix_hash(self._re)
                    if self._psk_mode:
                        self._sym.mix_key(self._re)
                elif token == "s":
                    size = DHLEN + (TAGLEN if self._sym.cipher.has_key else 0)
                    self._rs = self._sym.decrypt_and_hash(bytes(rest[:size]))
                    rest = rest[size:]
                elif token == "psk":
                    assert self._psk is not None
                    self._sym.mix_key_and_hash(self._psk)
                else:
                    self._sym.mix_key(self._dh_token(token))
            payload = self._sym.decrypt_and_hash(bytes(rest))
        except NoiseError:
            self._failed = True
            raise
        self._finish_message()
        return payload

    def _dh_token(self, token: str) -> bytes:
        """The DH for ``ee``/``es``/``se``/``ss``: first letter the initiator's key, second the
        responder's, so each side picks its own private key and the peer's public one."""
        mine, theirs = (token[0], token[1]) if self._initiator else (token[1], token[0])
        private = self._e if mine == "e" else self._s
        public = self._re if theirs == "e" else self._rs
        if private is None or public is None:
            raise NoiseError(f"the {token!r} token needs a key this handshake does not have")
        return _dh(private, public)
