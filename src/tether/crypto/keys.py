"""Identity keys of hosts, devices and tokens (ARCHITECTURE §3).

Each party has an Ed25519 *identity* key (it signs the relay's admission challenge) and an
X25519 *static* key (it authenticates end-to-end Noise handshakes). Ids are derived from the
identity public key, so nobody can claim an id without its private key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError
from nacl.exceptions import TypeError as NaclTypeError
from nacl.exceptions import ValueError as NaclValueError

from tether.crypto.encoding import b32_encode, b64u_decode, b64u_encode
from tether.errors import ConfigError
from tether.home import read_json, write_private_json

KEY_LEN = 32
SIGNATURE_LEN = 64
# 100 bits of the hash: ids are names, not secrets, but must not collide by chance.
ID_CHARS = 20


def derive_id(identity_public: bytes) -> str:
    """The id of a host, device or token: base32 of a SHA-256 prefix of its identity key."""
    if len(identity_public) != KEY_LEN:
        raise ValueError("identity key must be 32 bytes")
    return b32_encode(hashlib.sha256(b"tether-id\x00" + identity_public).digest())[:ID_CHARS]


def raw_private(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def raw_public(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def verify_signature(identity_public: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is ``identity_public``'s Ed25519 signature of ``message``.

    libsodium, not OpenSSL: a relay verifies one per connection, and libsodium takes half the
    time (docs/decisions.md). It is stricter, never looser: it also refuses a small-order key or a
    non-canonical signature, which no honest signer makes."""
    if len(signature) != SIGNATURE_LEN:
        return False  # libsodium takes a signed message: the signature's length is its bound
    try:
        return bool(crypto_sign_open(signature + message, identity_public) == message)
    except (BadSignatureError, NaclValueError, NaclTypeError):
        return False


@dataclass(frozen=True, repr=False)
class Identity:
    """A party's two private keys. ``repr`` never shows key material."""

    signing: Ed25519PrivateKey
    static: X25519PrivateKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """Derive both keys from one 32-byte secret (used by access tokens)."""
        if len(seed) < KEY_LEN:
            raise ValueError("seed must be at least 32 bytes")
        sign = hashlib.sha256(b"tether-identity-ed25519\x00" + seed).digest()
        stat = hashlib.sha256(b"tether-identity-x25519\x00" + seed).digest()
        return cls(Ed25519PrivateKey.from_private_bytes(sign), X25519PrivateKey.from_private_bytes(stat))

    @property
    def identity_public(self) -> bytes:
        return raw_public(self.signing)

    @property
    def static_public(self) -> bytes:
        return raw_public(self.static)

    @property
    def id(self) -> str:
        return derive_id(self.identity_public)

    def sign(self, message: bytes) -> bytes:
        return self.signing.sign(message)

    def __repr__(self) -> str:
        return f"Identity(id={self.id!r})"

    def save(self, path: Path) -> None:
        """Write both private keys to ``path`` (0600)."""
        write_private_json(
            path,
            {
                "version": 1,
                "ed25519": b64u_encode(raw_private(self.signing)),
                "x25519": b64u_encode(raw_private(self.static)),
            },
        )

    @classmethod
    def load(cls, path: Path) -> Identity:
        """The keys in ``path``; :class:`~tether.home.UnsafeHome` if another user could have
        written or read the file (a key planted there would become this party's identity)."""
        data = read_json(path, private=True)
        try:
            signing = Ed25519PrivateKey.from_private_bytes(b64u_decode(data["ed25519"]))
            static = X25519PrivateKey.from_private_bytes(b64u_decode(data["x25519"]))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                f"{path} does not hold valid tether keys", hint="restore it from a backup"
            ) from None
        return cls(signing, static)

    @classmethod
    def load_or_create(cls, path: Path) -> Identity:
        if path.exists():
            return cls.load(path)
        identity = cls.generate()
        identity.save(path)
        return identity
