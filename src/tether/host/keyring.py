"""The host's keys, with rotation of its end-to-end (Noise) static key.

The identity key (Ed25519) names the host — its id derives from it — so it does not rotate. The
X25519 static key that clients pin from pairing does: ``rotate`` makes a new one and keeps the old
ones for a grace period, so a client that was offline during the rotation can still connect once,
and learns the new key over that authenticated channel (``host.key`` notification).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tether.crypto.encoding import b64u_decode, b64u_encode
from tether.crypto.keys import Identity, raw_private
from tether.errors import ConfigError
from tether.home import read_json, write_private_json

DEFAULT_GRACE = 7 * 86400.0


@dataclass(frozen=True, repr=False)
class Retired:
    static: X25519PrivateKey
    until: float


class HostKeyring:
    def __init__(self, keys_path: Path) -> None:
        self.keys_path = keys_path
        self.retired_path = keys_path.with_name("retired_keys.json")
        self.identity = Identity.load_or_create(keys_path)
        self.retired = self._load_retired()

    def statics(self, now: float | None = None) -> list[X25519PrivateKey]:
        """The current static key first, then retired ones still in their grace period."""
        now = time.time() if now is None else now
        return [self.identity.static, *(r.static for r in self.retired if r.until > now)]

    def rotate(self, grace: float = DEFAULT_GRACE) -> Identity:
        """A new static key; the old one stays usable for ``grace`` seconds."""
        now = time.time()
        old = self.identity
        self.identity = Identity(old.signing, X25519PrivateKey.generate())
        self.retired = [Retired(old.static, now + grace), *(r for r in self.retired if r.until > now)]
        # Retired keys are written first: a crash between the two writes keeps the old key usable.
        self._save_retired()
        self.identity.save(self.keys_path)
        return self.identity

    def _load_retired(self) -> list[Retired]:
        if not self.retired_path.exists():
            return []
        try:
            entries = read_json(self.retired_path, private=True)["retired"]
            return [
                Retired(X25519PrivateKey.from_private_bytes(b64u_decode(e["x25519"])), float(e["until"]))
                for e in entries
            ]
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{self.retired_path} is damaged", hint="remove it (old keys stop working)") from None

    def _save_retired(self) -> None:
        write_private_json(
            self.retired_path,
            {"version": 1, "retired": [{"x25519": b64u_encode(raw_private(r.static)), "until": r.until}
                                       for r in self.retired]},
        )
