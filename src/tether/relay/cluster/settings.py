"""A cluster node's settings as given on the command line (``--cluster``, ``--node-id``,
``--advertise-url``), checked; nothing here needs the redis library."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from tether.errors import UsageError
from tether.relay.mailbox import MailboxLimits


@dataclass(frozen=True)
class ClusterSettings:
    """``tether relay --cluster URL --node-id ID --advertise-url URL``."""

    seeds: list[str]
    node_id: str
    advertise_url: str
    #: the cluster's mailbox in Redis, within these bounds (None: ``--no-mailbox``)
    mailbox: MailboxLimits | None = None


def parse_seeds(urls: list[str]) -> list[str]:
    """The ``--cluster`` URLs (each may hold several, comma-separated), checked: ``redis://`` or
    ``rediss://`` with a host and port."""
    seeds = [part.strip() for url in urls for part in url.split(",") if part.strip()]
    if not seeds:
        raise UsageError("--cluster needs a Redis URL", hint="e.g. --cluster redis://127.0.0.1:6379/0")
    for seed in seeds:
        parts = urlsplit(seed)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("redis", "rediss") or not parts.hostname or port is None:
            raise UsageError(f"bad --cluster URL {shown(seed)!r}",
                             hint="use redis://[user:pass@]HOST:PORT[/db] (rediss:// for TLS)")
    return seeds


def shown(seed: str) -> str:
    """A Redis URL as it may be shown: without its user and password."""
    return seed.split("@")[-1]
