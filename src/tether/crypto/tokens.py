"""Access tokens for scripts and CI (ARCHITECTURE §5): one string that is both a key and an address.

A token is ``tth_`` followed by lower-case base32 (RFC 4648 alphabet, no padding) of::

    version   1 byte   (1)
    seed     32 bytes  the secret; the token's Ed25519 and X25519 keys derive from it
    host_id  20 bytes  the host's id (ASCII)
    static   32 bytes  the host's X25519 static key (the client's Noise IK needs it)
    expires   4 bytes  unix seconds, big-endian (lets a client say "expired" before dialing)
    relay     n bytes  the relay's URL (UTF-8, 1-512 bytes)
    crc32     4 bytes  CRC-32 of everything before it, big-endian

The fixed prefix makes a leaked token easy to find by a secret scanner (``tth_[a-z2-7]{150,}``).
CRC-32 rather than a truncated hash: it detects *every* error burst of up to 32 bits, and one
mistyped base32 character changes at most 5 bits, two swapped neighbours at most 10, so those
typos are always caught before any network use (a hash would miss one in 2³² of them).

The host never sees the seed: it stores the token's public keys, scopes, workspace, expiry and
name. Nothing here ever puts the token text or the seed into a ``repr``, a message or a log.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import math
import re
import secrets
import struct
import zlib
from dataclasses import dataclass, field

from tether.crypto.keys import ID_CHARS, KEY_LEN, Identity
from tether.errors import UsageError

PREFIX = "tth_"
VERSION = 1
SEED_LEN = 32  # 256 bits
MAX_RELAY_URL = 512
_FIXED = 1 + SEED_LEN + ID_CHARS + KEY_LEN + 4
_CRC = 4
MIN_BYTES = _FIXED + 1 + _CRC
MAX_BYTES = _FIXED + MAX_RELAY_URL + _CRC
MAX_CHARS = len(PREFIX) + (MAX_BYTES * 8 + 4) // 5
_B32 = re.compile(r"[a-z2-7]*")
_HOST_ID = re.compile(rf"[a-z2-7]{{{ID_CHARS}}}")
# A base32 string without padding never has 1, 3 or 6 characters past a multiple of 8.
_VALID_REMAINDERS = frozenset({0, 2, 4, 5, 7})

HINT = "copy the whole token again from where `tether tokens create` printed it"


def _not_a_token(why: str) -> UsageError:
    return UsageError(f"this is not a tether access token: {why}", hint=HINT)


@dataclass(frozen=True, repr=False)
class AccessToken:
    """A parsed token. ``repr`` and ``str`` show only the token's id and its host."""

    relay_url: str
    host_id: str
    host_static: bytes = field(repr=False)
    expires_at: int
    seed: bytes = field(repr=False)

    @classmethod
    def generate(cls, *, relay_url: str, host_id: str, host_static: bytes, expires_at: float) -> AccessToken:
        return cls(relay_url, host_id, host_static, math.ceil(expires_at), secrets.token_bytes(SEED_LEN))

    def identity(self) -> Identity:
        """The token's own keys: Ed25519 for the relay, X25519 for the Noise handshake."""
        return Identity.from_seed(self.seed)

    @property
    def id(self) -> str:
        return self.identity().id

    @property
    def expired(self) -> bool:
        return datetime.datetime.now(datetime.UTC).timestamp() >= self.expires_at

    def expiry_text(self) -> str:
        return format_expiry(self.expires_at)

    def format(self) -> str:
        """The token string (shown once, to the person who creates it)."""
        url = self.relay_url.encode("utf-8")
        payload = (
            bytes([VERSION]) + self.seed + self.host_id.encode("ascii") + self.host_static
            + struct.pack(">I", self.expires_at) + url
        )
        payload += struct.pack(">I", zlib.crc32(payload))
        return PREFIX + base64.b32encode(payload).decode("ascii").rstrip("=").lower()

    def __repr__(self) -> str:
        return f"AccessToken(id={self.id!r}, host_id={self.host_id!r})"

    __str__ = __repr__


def format_expiry(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def looks_like_token(text: str) -> bool:
    return text.strip().startswith(PREFIX)


def parse_token(text: str) -> AccessToken:
    """Parse a token; :class:`UsageError` saying what is wrong (never echoing the text)."""
    if not isinstance(text, str):
        raise _not_a_token("it is not text")
    text = text.strip()
    if not text.startswith(PREFIX):
        raise _not_a_token(f"it should start with {PREFIX}")
    body = text[len(PREFIX):].lower()
    if len(text) > MAX_CHARS or not body.isascii() or not _B32.fullmatch(body):
        raise _not_a_token("it contains characters a token never has (only a-z and 2-7 follow tth_)")
    if len(body) % 8 not in _VALID_REMAINDERS:
        raise UsageError("this token has the wrong length: it is mistyped or cut short", hint=HINT)
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):
        raise UsageError("this token has the wrong length: it is mistyped or cut short", hint=HINT) from None
    if not MIN_BYTES <= len(raw) <= MAX_BYTES:
        raise UsageError("this token has the wrong length: it is mistyped or cut short", hint=HINT)
    payload, (crc,) = raw[:-_CRC], struct.unpack(">I", raw[-_CRC:])
    # The last character's spare bits are not covered by the checksum: insist on the one
    # canonical spelling, so a typo there is caught too.
    canonical = base64.b32encode(raw).decode("ascii").rstrip("=").lower()
    if zlib.crc32(payload) != crc or canonical != body:
        raise UsageError("the token is mistyped or damaged (its checksum does not match)", hint=HINT)
    if payload[0] != VERSION:
        raise UsageError(
            f"this token has format version {payload[0]}, which this tether does not know",
            hint="upgrade tether on this machine",
        )
    seed = payload[1 : 1 + SEED_LEN]
    at = 1 + SEED_LEN
    host_id = payload[at : at + ID_CHARS].decode("ascii", errors="replace")
    at += ID_CHARS
    host_static = payload[at : at + KEY_LEN]
    at += KEY_LEN
    (expires_at,) = struct.unpack(">I", payload[at : at + 4])
    try:
        relay_url = payload[at + 4 :].decode("utf-8")
    except UnicodeDecodeError:
        relay_url = ""
    if not _HOST_ID.fullmatch(host_id) or not relay_url.isprintable() or "://" not in relay_url:
        raise _not_a_token("its contents are malformed")
    return AccessToken(relay_url, host_id, host_static, expires_at, seed)
