"""Closed admission for hosts: a relay's enrollment key, and a host's proof that it holds it.

A public relay that admits any host is an open proxy: anyone can register a host and have
devices reach it through the relay. ``tether relay --enroll-key FILE`` closes that: the relay
then admits a host only when its AUTH carries ``HMAC-SHA256(key, ENROLL_CONTEXT ‖ nonce ‖
identity key)`` (``protocol/frames.py``). The proof is bound to the relay's fresh nonce and to the
host's identity, so a captured one cannot be replayed on another connection or by another key,
and it reveals nothing of the key. Devices never need it: the host's allowlist admits them.

The key file is one line, ``tether-enroll-v1:`` and 32 random bytes in base64url, created 0600.
It is a shared secret: every host of the relay holds a copy. To shut out a host, make a new key
and give it to the others.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from pathlib import Path

from tether.errors import ConfigError
from tether.home import read_private, write_private
from tether.protocol.frames import enroll_message

__all__ = ["create_enroll_key", "enroll_proof", "load_enroll_key", "verify_enroll_proof"]

KEY_PREFIX = "tether-enroll-v1:"
KEY_BYTES = 32
_HINT = "make one with `tether relay --enroll-key FILE --create-enroll-key` and copy FILE to each host"


def create_enroll_key(path: Path) -> bytes:
    """Write a new random enrollment key to ``path`` (0600); never overwrites an existing file."""
    if path.exists():
        raise ConfigError(f"{path} already exists; it was not overwritten", hint="drop --create-enroll-key to use it")
    key = secrets.token_bytes(KEY_BYTES)
    text = KEY_PREFIX + base64.urlsafe_b64encode(key).rstrip(b"=").decode("ascii") + "\n"
    try:
        write_private(path, text.encode("ascii"))
    except OSError as exc:
        raise ConfigError(f"cannot write the enrollment key {path}: {exc.strerror or exc}") from None
    return key


def load_enroll_key(path: Path) -> bytes:
    """Read an enrollment key file; ConfigError naming the file when it is missing or malformed.

    The error never quotes the file's content: it is a secret. A file another user could have
    written or read is refused (:func:`~tether.home.read_private`).
    """
    try:
        text = read_private(path).decode("ascii").strip()
    except FileNotFoundError:
        raise ConfigError(f"the enrollment key file {path} does not exist", hint=_HINT) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the enrollment key file {path} ({exc.__class__.__name__})", hint=_HINT
        ) from None
    body = text.removeprefix(KEY_PREFIX)
    key = b""
    if body != text and body.isascii():
        try:
            key = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            key = b""
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{path} is not a tether enrollment key (expected one line {KEY_PREFIX}...)", hint=_HINT)
    return key


def enroll_proof(key: bytes, nonce: bytes, identity_public: bytes) -> bytes:
    """A host's answer to the relay's CHALLENGE, proving it holds ``key``."""
    return hmac.new(key, enroll_message(nonce, identity_public), hashlib.sha256).digest()


def verify_enroll_proof(key: bytes, proof: bytes, nonce: bytes, identity_public: bytes) -> bool:
    """True when ``proof`` is this host's proof for this nonce (compared in constant time)."""
    return hmac.compare_digest(proof, enroll_proof(key, nonce, identity_public))
