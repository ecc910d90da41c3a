"""Text encodings of binary values used in links, ids and files."""

from __future__ import annotations

import base64
import binascii


def b64u_encode(data: bytes) -> str:
    """URL-safe base64 without padding (for links and JSON)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str) -> bytes:
    """Inverse of :func:`b64u_encode`; raises ``ValueError`` on anything else."""
    if not isinstance(text, str) or not text.isascii():
        raise ValueError("not base64url text")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url text") from None


def b32_encode(data: bytes) -> str:
    """Lower-case base32 without padding (for ids people may read aloud)."""
    return base64.b32encode(data).rstrip(b"=").decode("ascii").lower()
