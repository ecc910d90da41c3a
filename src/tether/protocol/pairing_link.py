"""The pairing link (ARCHITECTURE §5)::

    https://RELAY/#pair=<host id>.<host static key>.<offer id>.<secret>

Everything after ``#`` stays on the device that opens the link: browsers never send a URL
fragment to the server, so the relay never sees the secret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from tether.crypto.encoding import b64u_decode, b64u_encode
from tether.errors import UsageError

_ID = re.compile(r"^[a-z2-7]{20}$")
_OFFER = re.compile(r"^[A-Za-z0-9_-]{8,64}$")

_BAD = "this is not a tether pairing link"
_HINT = "copy the whole link printed by `tether pair` (it ends in #pair=...)"


@dataclass(frozen=True, repr=False)
class PairingLink:
    relay_url: str
    host_id: str
    host_static: bytes
    offer_id: str
    secret: bytes

    def __repr__(self) -> str:
        # The secret must never reach a log or a traceback.
        return f"PairingLink(relay_url={self.relay_url!r}, host_id={self.host_id!r}, offer_id={self.offer_id!r})"

    def format(self) -> str:
        base = self.relay_url.rstrip("/") + "/"
        fragment = ".".join(
            (self.host_id, b64u_encode(self.host_static), self.offer_id, b64u_encode(self.secret))
        )
        return f"{base}#pair={fragment}"


def parse_link(text: str) -> PairingLink:
    """Parse a pairing link; :class:`UsageError` with a clear message on anything else."""
    text = text.strip()
    if len(text) > 2048:
        raise UsageError(f"{_BAD} (too long)", hint=_HINT)
    try:
        parts = urlsplit(text)
    except ValueError:
        raise UsageError(_BAD, hint=_HINT) from None
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise UsageError(f"{_BAD}: it must start with https:// or http://", hint=_HINT)
    if not parts.fragment.startswith("pair="):
        raise UsageError(f"{_BAD}: the #pair=... part is missing", hint=_HINT)
    fields = parts.fragment[len("pair=") :].split(".")
    if len(fields) != 4:
        raise UsageError(f"{_BAD}: the #pair=... part is incomplete", hint=_HINT)
    host_id, static_text, offer_id, secret_text = fields
    try:
        host_static = b64u_decode(static_text)
        secret = b64u_decode(secret_text)
    except ValueError:
        raise UsageError(f"{_BAD}: it is damaged", hint=_HINT) from None
    if not _ID.match(host_id) or not _OFFER.match(offer_id) or len(host_static) != 32 or len(secret) != 32:
        raise UsageError(f"{_BAD}: it is damaged", hint=_HINT)
    relay_url = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return PairingLink(relay_url, host_id, host_static, offer_id, secret)
