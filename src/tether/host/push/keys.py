"""The host's VAPID key (RFC 8292): it signs every push the host sends, and browsers subscribe
with its public half, so a push service delivers to a subscription only what this host signed.

One P-256 key per host, made on first use and kept 0600 beside the host's other keys.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid02

from tether.crypto.encoding import b64u_encode
from tether.home import read_private, write_private


def load_or_create(path: Path) -> Vapid02:
    """The key kept at ``path``; a new one written there (0600) when there is none."""
    try:
        return Vapid02.from_pem(read_private(path))
    except FileNotFoundError:
        pass
    key = Vapid02()
    key.generate_keys()
    write_private(path, key.private_pem())
    return key


def public_key(key: Vapid02) -> str:
    """The public key as browsers take it (``applicationServerKey``): base64url, uncompressed point."""
    raw = key.public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return b64u_encode(raw)
