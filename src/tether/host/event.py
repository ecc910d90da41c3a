"""One event of the host's event log (:mod:`tether.host.eventlog` stores them; the session
projection applies them), in its own module so that the projection does not import the log."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from tether.crypto.encoding import b32_encode


def new_id(prefix: str) -> str:
    """A fresh id for what events name (a turn, an item, an approval): ``prefix_`` and 8 characters."""
    return f"{prefix}_{b32_encode(secrets.token_bytes(6))[:8]}"


@dataclass(frozen=True)
class Event:
    seq: int
    session: str | None
    type: str
    ts: float
    data: dict[str, Any]
    cid: str | None = None
    # Characters of ``data`` as stored (JSON): what holding or sending this event costs.
    size: int = field(default=0, compare=False)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "seq": self.seq,
            "session": self.session,
            "type": self.type,
            "ts": self.ts,
            "data": self.data,
        }
        if self.cid is not None:
            wire["cid"] = self.cid
        return wire
