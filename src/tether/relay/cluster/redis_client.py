"""The cluster's one connection setting: ``--cluster`` URLs → a redis-py asyncio client, a single
server or Redis Cluster (asked of the server, so one seed is enough for either)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisError

from tether.errors import ConfigError, UsageError

Client = Redis | RedisCluster
# a reply within this, or the server counts as unreachable (the relay then refuses cross-node
# channels and says so, and /healthz reports it)
TIMEOUT = 2.0


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
            shown = seed.split("@")[-1]  # never the password
            raise UsageError(f"bad --cluster URL {shown!r}",
                             hint="use redis://[user:pass@]HOST:PORT[/db] (rediss:// for TLS)")
    return seeds


async def connect(seeds: list[str]) -> Client:
    """A client for the cluster's Redis: Redis Cluster when the server says it is one."""
    options: dict[str, Any] = {"socket_timeout": TIMEOUT, "socket_connect_timeout": TIMEOUT}
    first = Redis.from_url(seeds[0], **options)
    try:
        info = await first.info("cluster")
    except RedisError as exc:
        await first.aclose()
        shown = seeds[0].split("@")[-1]
        raise ConfigError(f"cannot reach Redis at {shown}: {exc}",
                          hint="start redis-server, or pass the right --cluster URL") from None
    if not info.get("cluster_enabled"):
        if len(seeds) > 1:
            await first.aclose()
            raise UsageError("several --cluster URLs name the seeds of a Redis Cluster, but "
                             f"{seeds[0].split('@')[-1]} is a single server", hint="pass one URL")
        return first
    await first.aclose()
    nodes = [ClusterNode(urlsplit(s).hostname or "", urlsplit(s).port or 6379) for s in seeds]
    parts = urlsplit(seeds[0])
    return RedisCluster(startup_nodes=nodes, username=parts.username, password=parts.password,
                        ssl=parts.scheme == "rediss", **options)
